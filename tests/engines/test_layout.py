"""Relation prompts planned as two placed objects: the parsing, the seam, and the engine's wiring (same noise
for both halves, latents joined in the right order) on a tiny pipeline built here."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from inhouse.engines.images.layout import Layout, first_weight, plan
from inhouse.engines.images.pipelines import DiffusionEngine, Render
from tests.engines.tiny_sd import build_tiny_sd


@pytest.mark.parametrize(("prompt", "first", "second"), [
    ("a red circle above a blue square", "a red circle at the top", "a blue square at the bottom"),
    ("a red circle below a blue square", "a red circle at the bottom", "a blue square at the top"),
    ("a picture of a small star to the left of a box", "a picture of a small star on the left",
     "a box on the right"),
    ("A Red Circle RIGHT OF a blue square", "A Red Circle on the right", "a blue square on the left"),
    ("a dot on top of a cross", "a dot at the top", "a cross at the bottom"),
    ("a dot underneath a cross", "a dot at the bottom", "a cross at the top"),
    # the background goes to both halves, wherever it was said
    ("a red circle over a blue square on a green background", "a red circle at the top on a green background",
     "a blue square at the bottom on a green background"),
    ("a red circle against a grass green background under a blue square",
     "a red circle at the bottom against a grass green background",
     "a blue square at the top against a grass green background"),
    # dall-e-3's style words, appended after a comma, stay with both
    ("a star beneath a ball, vivid, dramatic", "a star at the bottom, vivid, dramatic",
     "a ball at the top, vivid, dramatic"),
])
def test_relation_prompts_become_two_placed_objects(prompt: str, first: str, second: str) -> None:
    planned = plan(prompt)
    assert planned is not None
    assert (planned.first, planned.second) == (first, second)


@pytest.mark.parametrize("prompt", [
    "a red circle on the left",
    "a red circle and a blue square",
    "above a blue square",  # nothing on one side
    "a blue square below",
    "a red circle, above a blue square",  # the relation is in the style words
    "a leftover overture",  # words that merely contain a relation
])
def test_other_prompts_are_not_planned(prompt: str) -> None:
    assert plan(prompt) is None


def test_the_seam_blends_only_the_middle() -> None:
    top = first_weight(Layout("a", "b", 1, True), 32, 16)
    assert tuple(top.shape) == (1, 1, 32, 1)
    column = top.flatten().tolist()
    assert column[:13] == [1.0] * 13 and column[-13:] == [0.0] * 13
    assert all(a >= b for a, b in itertools.pairwise(column))
    right = first_weight(Layout("a", "b", 0, False), 16, 32)
    assert tuple(right.shape) == (1, 1, 1, 32)
    assert right.flatten()[0] == 0.0 and right.flatten()[-1] == 1.0


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> DiffusionEngine:
    return DiffusionEngine(build_tiny_sd(tmp_path_factory.mktemp("sd") / "tiny"), 1, plan_relations=True)


def pixels(images: list[object]) -> list[np.ndarray]:
    return [np.asarray(im, dtype=np.int16) for im in images]


@pytest.mark.parametrize("keep_first", [True, False])
def test_each_half_is_its_own_objects_picture(engine: DiffusionEngine, monkeypatch: pytest.MonkeyPatch,
                                              keep_first: bool) -> None:
    """With the seam pushed to an edge, the joined picture is exactly one object's own generation from the
    same seed: both halves start from the caller's noise and come back in the right order."""
    import torch

    prompt = "a red circle above a blue square"
    planned = plan(prompt)
    assert planned is not None
    monkeypatch.setattr("inhouse.engines.images.pipelines.first_weight",
                        lambda *a: torch.full((1, 1, 1, 1), 1.0 if keep_first else 0.0))
    joined = pixels(engine.generate(Render(prompt, 64, 64, 3, 5.0, 2, 11)))
    engine.plan_relations = False
    try:
        alone = pixels(engine.generate(Render(planned.first if keep_first else planned.second, 64, 64, 3, 5.0, 2,
                                              11)))
    finally:
        engine.plan_relations = True
    assert len(joined) == 2
    for a, b in zip(joined, alone, strict=True):
        assert a.shape == (64, 64, 3)
        assert np.abs(a - b).max() <= 2  # batched and single runs differ only by float rounding
    assert np.abs(joined[0] - joined[1]).max() > 0  # two images, two noises


def test_planned_generation_is_reproducible(engine: DiffusionEngine) -> None:
    render = Render("a star left of a square", 64, 32, 3, 5.0, 1, 5)
    first, again = pixels(engine.generate(render)), pixels(engine.generate(render))
    assert first[0].shape == (32, 64, 3)
    assert np.array_equal(first[0], again[0])
