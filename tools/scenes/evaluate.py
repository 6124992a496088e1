"""Score a pipeline on held-out captions (combinations never drawn in training): generate through Inhouse's own
image engine, find the objects with the detectors, and check colour, shape and position of the main object.

    python -m scenes.evaluate --pipeline DIR [--count 200] [--json scores.json] [--grid grid.png]
    python -m scenes.evaluate --pipeline DIR --unparsed --count 40 [--json scores.json]

Main object: the first one named. Single-object captions: the largest object found; its cell of a 3x3 grid must
be the named one. Two-object captions: for colour and shape, the object found nearest to where the truth puts
the main object; for the relation, the object whose colour is nearest the named colour is taken as the main one,
and it must lie on the named side of the other, along the named axis more than across it.

--unparsed: two objects named without a relation the planner knows ("A beside B", "A and B", alternately), so
the network draws them alone. No position is named, so none is scored: two_found when at least two objects are
found, colour when the two largest have the two named colours, shape when each of them also has its object's
shape; main_colour and main_shape ask the same of the first-named object only. Scores also per joining word."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from statistics import median_high
from typing import Any

from scenes.detect import Blob, ShapeClassifier, blobs
from scenes.models import IMAGE_SIZE
from scenes.render import render_scenes, to_pil
from scenes.sample import grid
from scenes.scene import Scene, held_out_scenes
from scenes.vocab import RELATIONS


def cell_of(b: Blob) -> tuple[int, int]:
    def third(v: float) -> int:
        return 0 if v < 0.37 else 2 if v > 0.63 else 1

    return third(b.x), third(b.y)


def score(scene: Scene, image: Any, classify: ShapeClassifier) -> dict[str, bool]:
    _, found = blobs(image)
    main = scene.objects[0]
    if not found:
        return {"colour": False, "shape": False, "position": False}
    if scene.relation is None:
        target = found[0]
        position = bool(cell_of(target) == scene.cell)
    else:
        target = min(found[:2], key=lambda b: (b.x - main.x) ** 2 + (b.y - main.y) ** 2)
        position = False
        if len(found) >= 2:
            first, second = sorted(found[:2], key=lambda b: b.colour_distance(main.colour))
            _, axis, sign = RELATIONS[scene.relation]
            along = (first.x - second.x, first.y - second.y)[axis] * sign
            across = abs((first.x - second.x, first.y - second.y)[1 - axis])
            position = bool(along > 0 and along > across)
    return {"colour": target.colour == main.colour, "shape": classify([target.mask])[0] == main.shape,
            "position": position}


UNPARSED_WORDS = ("beside", "and")


def unparsed_scenes(count: int, seed: int = 2026) -> list[Scene]:
    """Held-out two-object scenes (two colours) captioned "A beside B" or "A and B", alternately: the same
    objects and background as a relation caption, in words the layout planner does not parse."""
    out = held_out_scenes(count, seed=seed, relation_share=1.0)
    for i, s in enumerate(out):
        assert s.relation is not None
        phrase = next(p for p in sorted(RELATIONS[s.relation][0], key=len, reverse=True) if f" {p} " in s.caption)
        s.caption = s.caption.replace(f" {phrase} ", f" {UNPARSED_WORDS[i % 2]} ", 1)
    return out


def score_unparsed(scene: Scene, image: Any, classify: ShapeClassifier) -> dict[str, bool]:
    _, found = blobs(image)
    named = scene.objects[:2]
    two = found[:2]
    # each named object's region: the one of the two largest whose colour is its colour
    regions = [next((b for b in two if b.colour == o.colour), None) for o in named]
    shapes = [classify([r.mask])[0] == o.shape if r is not None else False
              for o, r in zip(named, regions, strict=True)]
    return {"two_found": len(two) == 2, "colour": all(r is not None for r in regions), "shape": all(shapes),
            "main_colour": regions[0] is not None, "main_shape": shapes[0]}


def evaluate(pipeline: Path, scenes: list[Scene], steps: int, guidance: float, threads: int = 0,
             plan_relations: bool = True, unparsed: bool = False) -> dict[str, Any]:
    from inhouse.engines.images.pipelines import DiffusionEngine, Render

    engine = DiffusionEngine(pipeline, threads, plan_relations)
    classify = ShapeClassifier()
    rows, images, seconds = [], [], []
    for i, s in enumerate(scenes):
        t0 = time.perf_counter()
        image = engine.generate(Render(s.caption, IMAGE_SIZE, IMAGE_SIZE, steps, guidance, 1, 1000 + i))[0]
        seconds.append(time.perf_counter() - t0)
        images.append(image)
        if unparsed:
            word = next(w for w in UNPARSED_WORDS if f" {w} " in s.caption)
            rows.append({"caption": s.caption, "kind": word, **score_unparsed(s, image, classify)})
        else:
            rows.append({"caption": s.caption, "kind": "relation" if s.relation else "single",
                         **score(s, image, classify)})
    summary: dict[str, Any] = {"count": len(rows), "steps": steps, "guidance": guidance,
                               "plan_relations": plan_relations,
                               "seconds_per_image_median": median_high(seconds)}
    kinds = UNPARSED_WORDS if unparsed else ("single", "relation")
    for kind in kinds:
        times = [t for t, r in zip(seconds, rows, strict=True) if r["kind"] == kind]
        if times:
            summary[f"seconds_median_{kind}"] = median_high(times)
    for k in [k for k in rows[0] if k not in ("caption", "kind")]:
        summary[k] = sum(r[k] for r in rows) / len(rows)
        for kind in kinds:
            part = [r[k] for r in rows if r["kind"] == kind]
            if part:
                summary[f"{k}_{kind}"] = sum(part) / len(part)
    return {"summary": summary, "rows": rows, "images": images}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--pipeline", required=True, type=Path)
    p.add_argument("--count", type=int, default=200)
    p.add_argument("--steps", type=int, default=12)
    p.add_argument("--guidance", type=float, default=5.0)
    p.add_argument("--held-words", action="store_true", help="phrase captions with synonyms kept out of training")
    p.add_argument("--no-plan", action="store_true", help="the model alone: relation prompts not split in halves")
    p.add_argument("--unparsed", action="store_true",
                   help='two objects phrased "A beside B" / "A and B", which the planner does not parse')
    p.add_argument("--json", type=Path)
    p.add_argument("--grid", type=Path)
    a = p.parse_args(argv)
    scenes = unparsed_scenes(a.count) if a.unparsed else held_out_scenes(a.count, held_words=a.held_words)
    result = evaluate(a.pipeline, scenes, a.steps, a.guidance, plan_relations=not a.no_plan, unparsed=a.unparsed)
    print(json.dumps(result["summary"], indent=1))
    if a.json:
        a.json.write_text(json.dumps({"summary": result["summary"], "rows": result["rows"]}, indent=1) + "\n")
    if a.grid:
        n = min(24, len(scenes))
        grid(list(zip(result["images"][:n], to_pil(render_scenes(scenes[:n], IMAGE_SIZE)), strict=True))).save(a.grid)


if __name__ == "__main__":
    main()
