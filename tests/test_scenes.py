"""The default image model's tooling and wiring, without running the model: the held-out split, the detectors
on the renderer's own truth, the assembly of a pipeline from its parts, per-model image settings, and the
relation planner's words against the model's vocabulary."""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

from inhouse.config import Images as ImageSettings
from inhouse.config import ModelEntry, Settings
from inhouse.engines.executors import ModelExecutors
from inhouse.engines.images.assembly import pipeline_dir
from inhouse.engines.images.layout import PLACES, plan
from inhouse.services.images import GEN_SIZES, ImageOptions, ImagesService
from inhouse.services.models import ModelsService
from scenes.detect import ShapeClassifier
from scenes.evaluate import score
from scenes.render import render_scenes, to_pil
from scenes.scene import held_out, held_out_scenes, sample_scene
from scenes.vocab import CELLS, RELATIONS


def test_training_never_sees_a_held_out_combination() -> None:
    rng = random.Random(0)
    train = [sample_scene(rng) for _ in range(3000)]
    assert not any(held_out(s.key) for s in train)
    evaluation = held_out_scenes(200)
    assert all(held_out(s.key) for s in evaluation)
    assert {s.key for s in evaluation}.isdisjoint(s.key for s in train)
    assert sum(s.relation is not None for s in evaluation) in range(80, 121)


def test_detectors_score_the_truth_as_right() -> None:
    scenes = held_out_scenes(80, seed=5)
    classify = ShapeClassifier()
    results = [score(s, im, classify) for s, im in zip(scenes, to_pil(render_scenes(scenes, 256)), strict=True)]
    for key in ("colour", "shape", "position"):
        assert sum(r[key] for r in results) >= 79, key  # at most one miss (two tiny shapes touching, say)


def _tree(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return root


def test_pipeline_assembly_links_parts_in_once(tmp_path: Path) -> None:
    shipped = _tree(tmp_path / "shipped", {"model_index.json": "{}", "unet/config.json": "{}",
                                           "text_encoder/config.json": '{"ours": 1}'})
    encoder = _tree(tmp_path / "encoder", {"config.json": '{"theirs": 1}', "model.safetensors": "w"})
    entry = ModelEntry(id="scenes", kind="image", path=str(shipped), components={"text_encoder": str(encoder)})
    built = pipeline_dir(entry, tmp_path / "models")
    assert built.parent == tmp_path / "models" and built.name.startswith("scenes-")
    assert (built / "text_encoder" / "model.safetensors").read_text() == "w"
    assert (built / "text_encoder" / "config.json").read_text() == '{"ours": 1}'  # the shipped config wins
    assert pipeline_dir(entry, tmp_path / "models") == built
    (encoder / "model.safetensors").write_text("new weights")
    os.utime(encoder / "model.safetensors", ns=(1, 1))
    assert pipeline_dir(entry, tmp_path / "models") != built
    plain = ModelEntry(id="sd", kind="image", path=str(shipped))
    assert pipeline_dir(plain, tmp_path / "models") == shipped


def _service(entries: list[ModelEntry]) -> ImagesService:
    return ImagesService(ModelsService(None, entries), None, None, ImageSettings(), 1 << 24,  # type: ignore[arg-type]
                         b"k", ModelExecutors())


def test_per_model_steps_guidance_and_native_side() -> None:
    scenes = next(e for e in Settings().all_models() if e.kind == "image")
    svc = _service([scenes])
    plan: Any = svc.plan(ImageOptions(model="dall-e-3", prompt="a star", size="1024x1024", quality="hd"),
                         sizes=GEN_SIZES, default_size="1024x1024")
    assert (plan.width, plan.render.width, plan.render.steps) == (1024, 128, 24)
    assert plan.render.guidance == 5.0
    natural = svc.plan(ImageOptions(model="dall-e-3", prompt="a star", style="natural"), sizes=GEN_SIZES,
                       default_size="1024x1024")
    assert natural.render.guidance < 5.0
    sd = ModelEntry(id="sd", kind="image", path="/nowhere", aliases=["dall-e-2", "dall-e-3"])
    plain = _service([sd]).plan(ImageOptions(model="dall-e-2", prompt="x", size="1024x1024"), sizes=GEN_SIZES,
                                default_size="1024x1024")
    assert (plain.render.width, plain.render.steps, plain.render.guidance) == (768, 25, 9.0)
    natural_sd = _service([sd]).plan(ImageOptions(model="dall-e-3", prompt="x", style="natural"), sizes=GEN_SIZES,
                                     default_size="1024x1024")
    assert natural_sd.render.guidance == ImageSettings().guidance_natural
    turbo = ModelEntry(id="turbo", kind="image", path="/nowhere", aliases=["dall-e-2"], guidance=0.0)
    unguided = _service([turbo]).plan(ImageOptions(model="dall-e-2", prompt="x"), sizes=GEN_SIZES,
                                      default_size="1024x1024")
    assert unguided.render.guidance == 0.0


def test_extra_models_take_the_aliases_over() -> None:
    sd = ModelEntry(id="my-sd", kind="image", path="/models/sd", aliases=["dall-e-2", "dall-e-3"])
    settings = Settings(extra_models=[sd])
    models = ModelsService(None, settings.all_models())  # type: ignore[arg-type]
    assert models.resolve_configured("dall-e-2", "image") == sd
    assert models.resolve_configured("text-embedding-3-small", "embedding") is not None
    assert models.resolve_configured("inhouse-scenes", "image") is not None


def test_the_layout_planner_speaks_the_models_words() -> None:
    """Every relation phrasing the model was trained on is planned the way the renderer draws it, into place
    phrases the model was trained on; only the scenes model plans."""
    places = {p for phrases in CELLS.values() for p in phrases}
    assert {p for pair in PLACES.values() for p in pair} <= places
    for relation, (phrases, axis, sign) in RELATIONS.items():
        for phrase in phrases:
            planned = plan(f"a red circle {phrase} a blue square on a green background")
            assert planned is not None, phrase
            assert (planned.axis, planned.first_low) == (axis, sign < 0), relation
            assert planned.first.startswith("a red circle ") and planned.second.startswith("a blue square ")
    assert [e.id for e in Settings().all_models() if e.plan_relations] == ["inhouse-scenes"]
