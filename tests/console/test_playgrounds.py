"""The playgrounds: an embeddings similarity matrix that matches the API's vectors, and images: generate, then
paint a mask with the brush (pointer and keyboard) and get an edit that changed only the painted area."""

from __future__ import annotations

import base64
import io
from typing import Any

import numpy as np
import pytest
from PIL import Image

from tests.conftest import make_client
from tests.console.conftest import open_console, shoot
from tests.harness import ServerHandle

expect = pytest.importorskip("playwright.sync_api", reason="needs Playwright: pip install playwright").expect

SENTENCES = ["a red circle", "a crimson disc", "the invoice is due", "pay before the end of the month"]


def test_embeddings_similarity_matrix(page: Any, console_server: ServerHandle) -> None:
    open_console(page, console_server, route="/playground/embeddings")
    page.get_by_label("Sentences, one per line").fill("\n".join(SENTENCES))
    assert page.get_by_label("Model").input_value() == "text-embedding-3-small"
    page.get_by_role("button", name="Compare").click()
    cells = page.locator("#similarity tbody td")
    expect(cells).to_have_count(len(SENTENCES) ** 2)
    shown = np.array([float(v) for v in cells.evaluate_all("cs => cs.map(c => c.dataset.sim)")]).reshape(4, 4)
    vectors = np.array([d.embedding for d in make_client(console_server.base_url).embeddings.create(
        model="text-embedding-3-small", input=SENTENCES, encoding_format="float").data])
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    assert np.allclose(shown, unit @ unit.T, atol=1e-4)
    assert np.allclose(np.diag(shown), 1.0, atol=1e-4)
    shoot(page, "embeddings")


# Keeps each FormData the page sends (the browser's own request log leaves out bodies with files in them).
KEEP_FORMS = """() => {
  const send = XMLHttpRequest.prototype.send;
  window.sentForms = [];
  XMLHttpRequest.prototype.send = function (body) {
    if (body instanceof FormData) window.sentForms.push(body);
    return send.call(this, body);
  };
}"""
LAST_FORM = """async () => {
  const out = {};
  for (const [name, value] of window.sentForms.at(-1).entries()) {
    const bytes = typeof value === 'string' ? new TextEncoder().encode(value)
      : new Uint8Array(await value.arrayBuffer());
    out[name] = btoa(Array.from(bytes, (b) => String.fromCharCode(b)).join(''));
  }
  return out;
}"""


def last_form(page: Any) -> dict[str, bytes]:
    """The fields of the last multipart request the page sent, by name."""
    return {k: base64.b64decode(v) for k, v in page.evaluate(LAST_FORM).items()}


def test_generate_then_edit_with_a_painted_mask(page: Any, console_server: ServerHandle) -> None:
    open_console(page, console_server, route="/playground/images")
    page.get_by_label("Prompt", exact=True).fill("a red circle")
    page.get_by_role("button", name="Generate").click()
    generated = page.locator("#generated img")
    generated.wait_for()
    source = Image.open(io.BytesIO(base64.b64decode(generated.get_attribute("src").split(",", 1)[1])))
    assert source.size == (256, 256)
    page.get_by_role("button", name="Edit this image").click()

    # Paint with the pointer: a stroke across the middle of the picture...
    canvas = page.locator("#mask-canvas")
    expect(canvas).to_be_focused()
    box = canvas.bounding_box()
    scale = box["width"] / 256
    page.mouse.move(box["x"] + 100 * scale, box["y"] + 128 * scale)
    page.mouse.down()
    page.mouse.move(box["x"] + 160 * scale, box["y"] + 128 * scale, steps=8)
    page.mouse.up()
    # ...and with the keyboard: the brush starts in the middle; 4 steps of 16 px up, then Space.
    for _ in range(4):
        page.keyboard.press("ArrowUp")
    page.keyboard.press("Space")
    page.get_by_label("What to paint in the masked area").fill("a yellow star")
    shoot(page, "images-mask")

    page.evaluate(KEEP_FORMS)
    page.get_by_role("button", name="Edit", exact=True).click()
    edited = page.locator("#edited img")
    edited.wait_for()
    parts = last_form(page)
    assert parts["response_format"] == b"b64_json" and parts["size"] == b"256x256"
    image = np.asarray(Image.open(io.BytesIO(parts["image"])).convert("RGB"))
    mask = Image.open(io.BytesIO(parts["mask"]))
    assert mask.format == "PNG" and mask.mode == "RGBA" and mask.size == (256, 256)
    alpha = np.asarray(mask)[..., 3]
    # OpenAI's rule: fully transparent where painted, opaque everywhere else.
    assert alpha[128, 100] == alpha[128, 130] == alpha[128, 160] == 0
    assert alpha[64, 128] == 0  # the keyboard's dab
    assert alpha[0, 0] == alpha[255, 255] == alpha[128, 10] == alpha[200, 128] == 255
    assert set(np.unique(alpha[(alpha > 0) & (alpha < 255)]).tolist()) <= set(range(1, 255))  # only stroke edges
    assert np.array_equal(image, np.asarray(source.convert("RGB")))  # the picture goes up unchanged

    result = np.asarray(Image.open(io.BytesIO(base64.b64decode(edited.get_attribute("src").split(",", 1)[1])))
                        .convert("RGB"))
    kept = alpha > 0
    assert np.array_equal(result[kept], image[kept])  # the server kept every pixel outside the painted area
    assert (result[alpha == 0] != image[alpha == 0]).any()  # and painted inside it
    shoot(page, "images")
