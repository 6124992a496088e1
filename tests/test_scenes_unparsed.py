"""The evaluation of two-object captions the relation planner does not parse ("A beside B", "A and B"): the
captions really are unparsed, and the scorer calls the renderer's own truth right."""

from __future__ import annotations

from inhouse.engines.images.layout import plan
from scenes.detect import ShapeClassifier
from scenes.evaluate import score_unparsed, unparsed_scenes
from scenes.render import render_scenes, to_pil


def test_unparsed_captions_name_two_objects_and_no_relation_the_planner_knows() -> None:
    scenes = unparsed_scenes(40)
    assert len(scenes) == 40
    assert sum(" beside " in s.caption for s in scenes) == 20 and sum(" and " in s.caption for s in scenes) == 20
    assert all(plan(s.caption) is None for s in scenes)
    assert all(s.objects[0].colour != s.objects[1].colour for s in scenes)


def test_unparsed_scorer_calls_the_truth_right() -> None:
    scenes = unparsed_scenes(40, seed=5)
    classify = ShapeClassifier()
    results = [score_unparsed(s, im, classify) for s, im in zip(scenes, to_pil(render_scenes(scenes, 128)),
                                                               strict=True)]
    for key in ("two_found", "colour", "shape", "main_colour", "main_shape"):
        assert sum(r[key] for r in results) >= 39, key  # at most one miss


def test_unparsed_scorer_calls_a_blank_image_wrong() -> None:
    scene = unparsed_scenes(1)[0]
    blank = to_pil(render_scenes([scene], 128))[0].copy()
    blank.paste((252, 252, 252), (0, 0, 128, 128))
    assert score_unparsed(scene, blank, ShapeClassifier()) == {
        "two_found": False, "colour": False, "shape": False, "main_colour": False, "main_shape": False}
