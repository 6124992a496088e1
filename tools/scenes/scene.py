"""Random scenes and their captions; a stable split keeps whole combinations out of training for evaluation."""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, field

from scenes.vocab import (
    BACKGROUND_PHRASES,
    CELL_CENTRES,
    CELLS,
    COLOUR_NAMES,
    COLOURS,
    DEFAULT_BACKGROUND,
    PREFIXES,
    RELATIONS,
    SHAPE_NAMES,
    SHAPES,
    SIZE_WORDS,
    SIZES,
)

HELD_OUT_PERCENT = 12


@dataclass
class Obj:
    shape: str
    colour: str
    rgb: tuple[int, int, int]
    x: float  # centre, fractions of the side, y grows downwards
    y: float
    radius: float
    size: str = ""


@dataclass
class Scene:
    objects: list[Obj]
    background: tuple[int, int, int]
    background_name: str | None
    cell: tuple[int, int] | None = None  # single objects placed in a named cell
    relation: str | None = None  # two objects: objects[0] <relation> objects[1]
    caption: str = ""
    key: str = field(default="")


def combination_key(scene: Scene) -> str:
    a = scene.objects[0]
    if scene.relation is None:
        return f"1|{a.colour}|{a.shape}|{scene.cell}"
    b = scene.objects[1]
    return f"2|{a.colour}|{a.shape}|{scene.relation}|{b.colour}|{b.shape}"


def held_out(key: str) -> bool:
    """Stable across runs and machines (no Python hash randomisation)."""
    return int(hashlib.sha256(key.encode()).hexdigest()[:8], 16) % 100 < HELD_OUT_PERCENT


def _jitter(rng: random.Random, rgb: tuple[int, int, int], amount: int = 12) -> tuple[int, int, int]:
    return tuple(max(0, min(255, c + rng.randint(-amount, amount))) for c in rgb)  # type: ignore[return-value]


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def _noun_phrase(rng: random.Random, o: Obj, held_words: bool) -> str:
    colour_words = COLOURS[o.colour][2] if held_words and COLOURS[o.colour][2] and rng.random() < 0.5 \
        else COLOURS[o.colour][1]
    shape_words = SHAPES[o.shape][1] if held_words and rng.random() < 0.5 else SHAPES[o.shape][0]
    words = [rng.choice(SIZE_WORDS[o.size]), rng.choice(colour_words), rng.choice(shape_words)]
    text = " ".join(w for w in words if w)
    return f"{_article(text)} {text}"


def _place_single(rng: random.Random, o: Obj, cell: tuple[int, int] | None) -> None:
    if cell is None:
        o.x, o.y = rng.uniform(0.35, 0.65), rng.uniform(0.35, 0.65)
    else:
        o.x = CELL_CENTRES[cell[0]] + rng.uniform(-0.05, 0.05)
        o.y = CELL_CENTRES[cell[1]] + rng.uniform(-0.05, 0.05)
    lo, hi = o.radius + 0.02, 0.98 - o.radius
    o.x, o.y = min(max(o.x, lo), hi), min(max(o.y, lo), hi)


def sample_scene(rng: random.Random, *, split: str = "train", held_words: bool = False,
                 relation_share: float = 0.4, unplaced_share: float = 0.15) -> Scene:
    """split: "train" rejects held-out combinations, "eval" draws only held-out ones (always placed)."""
    while True:
        scene = _draw(rng, relation_share, 0.0 if split == "eval" else unplaced_share)
        scene.key = combination_key(scene)
        if held_out(scene.key) == (split == "eval"):
            break
    scene.caption = caption(rng, scene, held_words)
    return scene


def _draw(rng: random.Random, relation_share: float, unplaced_share: float) -> Scene:
    two = rng.random() < relation_share
    objs = []
    for _ in range(2 if two else 1):
        colour = rng.choice(COLOUR_NAMES)
        size = "" if two else rng.choice(("small", "", "", "large"))
        lo, hi = (0.11, 0.15) if two else SIZES[size]
        objs.append(Obj(rng.choice(SHAPE_NAMES), colour, _jitter(rng, COLOURS[colour][0]), 0.5, 0.5,
                        rng.uniform(lo, hi), size))
    used = {o.colour for o in objs}
    bg_name: str | None = None
    if "white" in used or rng.random() < 0.3:
        bg_name = rng.choice([c for c in COLOUR_NAMES if c not in used and c != "white"] +
                             ([] if "white" in used else ["white"]))
    background = DEFAULT_BACKGROUND if bg_name in (None, "white") else _jitter(rng, COLOURS[bg_name][0], 8)
    scene = Scene(objs, background, bg_name)
    if two:
        scene.relation = rng.choice(tuple(RELATIONS))
        _, axis, sign = RELATIONS[scene.relation]
        a, b = objs
        first, second = (0.28, 0.72) if sign < 0 else (0.72, 0.28)
        along = (first + rng.uniform(-0.05, 0.05), second + rng.uniform(-0.05, 0.05))
        across = (0.5 + rng.uniform(-0.12, 0.12), 0.5 + rng.uniform(-0.12, 0.12))
        if axis == 0:
            a.x, b.x, a.y, b.y = along[0], along[1], across[0], across[1]
        else:
            a.y, b.y, a.x, b.x = along[0], along[1], across[0], across[1]
    else:
        scene.cell = None if rng.random() < unplaced_share else rng.choice(tuple(CELLS))
        _place_single(rng, objs[0], scene.cell)
    return scene


def caption(rng: random.Random, scene: Scene, held_words: bool = False) -> str:
    a = _noun_phrase(rng, scene.objects[0], held_words)
    if scene.relation is not None:
        text = f"{a} {rng.choice(RELATIONS[scene.relation][0])} {_noun_phrase(rng, scene.objects[1], held_words)}"
    elif scene.cell is not None:
        text = f"{a} {rng.choice(CELLS[scene.cell])}"
    else:
        text = a
    if scene.background_name is not None:
        word = rng.choice(COLOURS[scene.background_name][1])
        text += " " + rng.choice(BACKGROUND_PHRASES).format(f"{_article(word)} {word}")
    return rng.choice(PREFIXES) + text


def held_out_scenes(count: int, seed: int = 2026, held_words: bool = False, relation_share: float = 0.5) -> list[Scene]:
    """Two-object scenes use two different colours, so the relation check can tell the objects apart."""
    rng = random.Random(seed)
    out: list[Scene] = []
    while len(out) < count:
        s = sample_scene(rng, split="eval", held_words=held_words, relation_share=relation_share)
        if s.relation is None or s.objects[0].colour != s.objects[1].colour:
            out.append(s)
    return out
