"""The shipped image model (inhouse-scenes, trained by tools/scenes) through the API: fixed-seed prompts are
checked with the evaluation's own detectors, and an edit changes only the masked area."""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import openai
import pytest
from PIL import Image

from inhouse.config import Settings
from scenes.detect import ShapeClassifier, blobs
from scenes.evaluate import cell_of
from tests.conftest import make_client
from tests.harness import start_server

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[openai.OpenAI]:
    data = tmp_path_factory.mktemp("scenes") / "data"
    with start_server(Settings(data_dir=data, sweep_interval_seconds=3600.0)) as server:
        yield make_client(server.base_url, timeout=300)


def picture(item: openai.types.Image) -> Image.Image:
    assert item.b64_json is not None
    return Image.open(io.BytesIO(base64.b64decode(item.b64_json))).convert("RGB")


def generate(client: openai.OpenAI, prompt: str, seed: int, model: str = "dall-e-2",
             size: str = "256x256") -> Image.Image:
    answer = client.images.generate(model=model, prompt=prompt, size=size,  # type: ignore[arg-type]
                                    response_format="b64_json", extra_body={"seed": seed})
    image = picture(answer.data[0])
    assert image.size == tuple(int(v) for v in size.split("x"))
    return image


@pytest.mark.parametrize(("prompt", "colour", "shape", "cell"), [
    ("a red circle on the left", "red", "circle", (0, 1)),
    ("a blue square at the top", "blue", "square", (1, 0)),
    ("a large yellow star in the center", "yellow", "star", (1, 1)),
    ("a green triangle in the bottom right corner", "green", "triangle", (2, 2)),
    ("a purple diamond on the right on an orange background", "purple", "diamond", (2, 1)),
])
def test_generations_draw_what_the_prompt_says(client: openai.OpenAI, prompt: str, colour: str, shape: str,
                                               cell: tuple[int, int]) -> None:
    found = blobs(generate(client, prompt, seed=7))[1]
    assert found, "no object drawn"
    main = found[0]
    assert (main.colour, ShapeClassifier()([main.mask])[0], cell_of(main)) == (colour, shape, cell)


def test_background_and_dall_e_3_style_words(client: openai.OpenAI) -> None:
    background, found = blobs(generate(client, "a white circle on a black background", seed=3, model="dall-e-3",
                                       size="1024x1024"))
    assert max(background) < 80, background
    assert found and found[0].colour == "white"


@pytest.mark.parametrize(("prompt", "first", "second", "axis", "sign"), [
    ("a red circle above a blue square", "red", "blue", 1, -1),
    ("a yellow star to the left of a purple triangle", "yellow", "purple", 0, -1),
    ("a green box under an orange ball on a white background", "green", "orange", 1, 1),
    ("a scarlet dot right of a cobalt box", "red", "blue", 0, 1),
])
@pytest.mark.parametrize("seed", [1, 2])
def test_relations_put_each_object_on_its_side(client: openai.OpenAI, prompt: str, first: str, second: str,
                                               axis: int, sign: int, seed: int) -> None:
    found = blobs(generate(client, prompt, seed=seed))[1]
    by_colour = {b.colour: b for b in reversed(found)}  # the largest object of each colour
    assert first in by_colour and second in by_colour, [b.colour for b in found]
    a, b = by_colour[first], by_colour[second]
    assert ((a.x - b.x, a.y - b.y)[axis]) * sign > 0.25, (a.x, a.y, b.x, b.y)


def test_edit_changes_only_the_masked_area(client: openai.OpenAI, tmp_path: Path) -> None:
    source = generate(client, "a blue square on the right", seed=5)
    rgba = source.convert("RGBA")
    pixels = np.array(rgba)
    pixels[:128, :128, 3] = 0  # the transparent top-left quarter is what gets painted
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    answer = client.images.edit(image=("scene.png", buf.getvalue(), "image/png"), model="dall-e-2",
                                prompt="a red star in the top left corner", size="256x256",
                                response_format="b64_json", extra_body={"seed": 2})
    edited = np.asarray(picture(answer.data[0]), dtype=np.int16)
    before = np.asarray(source, dtype=np.int16)
    outside = np.ones((256, 256), dtype=bool)
    outside[:128, :128] = False
    assert np.array_equal(edited[outside], before[outside])
    assert np.abs(edited[:128, :128] - before[:128, :128]).max() > 100  # something was painted in the hole
    painted = [b for b in blobs(Image.fromarray(edited.astype(np.uint8)))[1] if b.x < 0.5 and b.y < 0.5]
    assert painted and painted[0].colour == "red"


def test_variations_stay_close_to_the_source(client: openai.OpenAI) -> None:
    source = generate(client, "an orange cross", seed=4)
    buf = io.BytesIO()
    source.save(buf, format="PNG")
    answer = client.images.create_variation(image=("scene.png", buf.getvalue(), "image/png"), model="dall-e-2",
                                            size="256x256", response_format="b64_json", extra_body={"seed": 1})
    varied = picture(answer.data[0])
    assert varied.size == (256, 256)
    assert np.asarray(varied).tobytes() != np.asarray(source).tobytes()
    before, after = blobs(source)[1][0], blobs(varied)[1][0]
    assert abs(before.x - after.x) < 0.15 and abs(before.y - after.y) < 0.15  # the object stays where it was
