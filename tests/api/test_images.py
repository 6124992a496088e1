"""Images through the SDK on a tiny Stable Diffusion pipeline built in the test: sizes and limits per model,
quality and style, url and b64_json, the mask rule with exact preservation, variations, unsafe inputs, 429."""

from __future__ import annotations

import base64
import io
import threading
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import numpy as np
import openai
import pytest
from PIL import Image

from inhouse.config import ModelEntry, default_models
from tests.conftest import make_client
from tests.engines.tiny_sd import build_tiny_sd
from tests.harness import ServerHandle, start_server


@pytest.fixture(scope="session")
def tiny_sd(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_sd(tmp_path_factory.mktemp("sd") / "tiny-sd")


def sd_settings(settings_factory: Any, path: Path) -> Any:
    settings = settings_factory(models=[ModelEntry(id="tiny-sd", kind="image", path=str(path),
                                                   aliases=["dall-e-2", "dall-e-3", "gpt-image-1"])])
    s = settings.images
    s.steps_low, s.steps_standard, s.steps_hd, s.max_generate_side = 1, 2, 3, 256
    return settings


@pytest.fixture
def sd_server(settings_factory: Any, tiny_sd: Path) -> Iterator[ServerHandle]:
    with start_server(sd_settings(settings_factory, tiny_sd)) as server:
        yield server


@pytest.fixture
def img(sd_server: ServerHandle) -> openai.OpenAI:
    return make_client(sd_server.base_url)


def png(size: tuple[int, int] = (256, 256), mode: str = "RGBA", hole: tuple[int, int, int, int] | None = None,
        color: Any = (200, 30, 30, 255)) -> bytes:
    im = Image.new(mode, size, color if mode != "RGB" else color[:3])
    arr = np.asarray(im).copy()
    arr[..., 0] = np.arange(size[0], dtype=np.uint8)[None, :]  # a gradient, so a changed pixel shows
    im = Image.fromarray(arr, mode=mode)
    if hole is not None:
        im.paste((0, 0, 0, 0), hole)
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


def decode(b64: str | None) -> Image.Image:
    assert b64 is not None
    return Image.open(io.BytesIO(base64.b64decode(b64)))


def test_generate_b64_and_url(sd_server: ServerHandle, img: openai.OpenAI) -> None:
    r = img.images.generate(prompt="a red circle", size="256x256", n=2, response_format="b64_json")
    assert len(r.data) == 2 and r.created > 0
    for d in r.data:
        assert decode(d.b64_json).size == (256, 256) and d.url is None and d.revised_prompt is None
    u = img.images.generate(prompt="a red circle", size="512x512")  # dall-e-2 default: a URL
    url = u.data[0].url
    assert url is not None and "/v1/images/files/img_" in url
    fetched = httpx2.get(url)  # no API key needed
    assert fetched.status_code == 200 and fetched.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(fetched.content)).size == (512, 512)
    tampered = httpx2.get(url.replace("sig=", "sig=0"))
    assert tampered.status_code == 403
    sd_server.services.images.settings.url_ttl_seconds = -10
    expired = img.images.generate(prompt="x", size="256x256").data[0].url
    assert expired is not None and httpx2.get(expired).status_code == 403


def test_sizes_n_and_prompts_per_model(img: openai.OpenAI) -> None:
    bad: list[tuple[dict[str, Any], str]] = [
        ({"model": "dall-e-2", "size": "1792x1024"}, "size"),
        ({"model": "dall-e-2", "size": "300x300"}, "size"),
        ({"model": "dall-e-3", "size": "256x256"}, "size"),
        ({"model": "dall-e-3", "n": 2}, "n"),
        ({"model": "dall-e-2", "n": 11}, "n"),
        ({"model": "dall-e-2", "n": 0}, "n"),
        ({"model": "dall-e-2", "prompt": "x" * 1001}, "prompt"),
        ({"model": "dall-e-3", "prompt": "x" * 4001}, "prompt"),
        ({"model": "dall-e-2", "quality": "hd"}, "quality"),
        ({"model": "dall-e-2", "style": "vivid"}, "style"),
        ({"model": "dall-e-3", "style": "moody"}, "style"),
        ({"model": "gpt-image-1", "response_format": "url"}, "response_format"),
        ({"model": "gpt-image-1", "background": "transparent"}, "background"),
        ({"model": "dall-e-2", "output_format": "webp"}, "output_format"),
        ({"model": "gpt-image-1", "quality": "hd"}, "quality"),
    ]
    for override, param in bad:
        args = {"prompt": "a red circle", **override}
        with pytest.raises(openai.BadRequestError) as exc:
            img.images.generate(**args)
        assert exc.value.param == param, override
    ok = img.images.generate(model="dall-e-3", prompt="x" * 4000, size="1792x1024", response_format="b64_json")
    assert decode(ok.data[0].b64_json).size == (1792, 1024)  # never silently changed
    with pytest.raises(openai.NotFoundError) as missing:
        img.images.generate(model="dall-e-9", prompt="x")
    assert missing.value.code == "model_not_found"


def test_dall_e_3_style_and_quality_change_the_output(img: openai.OpenAI) -> None:
    def one(**kw: Any) -> Any:
        return img.images.generate(model="dall-e-3", prompt="a blue square", response_format="b64_json",
                                   extra_body={"seed": 5}, **kw).data[0]

    vivid, natural, hd = one(), one(style="natural"), one(quality="hd")
    assert vivid.revised_prompt and vivid.revised_prompt.startswith("a blue square, vivid")
    assert natural.revised_prompt and "natural" in natural.revised_prompt
    a, b, c = (np.asarray(decode(x.b64_json)) for x in (vivid, natural, hd))
    assert not np.array_equal(a, b) and not np.array_equal(a, c)
    again = np.asarray(decode(one().b64_json))
    assert np.array_equal(a, again)  # the seed extension makes it reproducible


def test_gpt_image_names(img: openai.OpenAI) -> None:
    r = img.images.generate(model="gpt-image-1", prompt="a star", quality="low", output_format="jpeg",
                            output_compression=50)
    assert r.output_format == "jpeg" and r.quality == "low" and r.size == "1024x1024" and r.background == "opaque"
    assert decode(r.data[0].b64_json).format == "JPEG"


def test_webp_output_and_background(img: openai.OpenAI) -> None:
    for background in ("opaque", "auto"):
        r = img.images.generate(model="gpt-image-1", prompt="a star", size="1024x1024", quality="low",
                                output_format="webp", background=background, extra_body={"seed": 1})
        assert (r.output_format, r.background, r.size, r.quality) == ("webp", "opaque", "1024x1024", "low")
        out = decode(r.data[0].b64_json)
        assert out.format == "WEBP" and out.size == (1024, 1024)
        assert "A" not in out.getbands()  # opaque: no alpha channel
    full = img.images.generate(model="gpt-image-1", prompt="a star", quality="low", output_format="webp",
                                   extra_body={"seed": 1})
    small = img.images.generate(model="gpt-image-1", prompt="a star", quality="low", output_format="webp",
                                output_compression=10, extra_body={"seed": 1})
    sizes = [len(base64.b64decode(x.data[0].b64_json or "")) for x in (full, small)]
    assert sizes[1] < sizes[0]  # output_compression reaches the webp encoder
    with pytest.raises(openai.BadRequestError) as exc:
        img.images.generate(model="gpt-image-1", prompt="a star", background="clear")  # type: ignore[arg-type]
    assert exc.value.param == "background"


def test_edit_changes_only_transparent_pixels(img: openai.OpenAI) -> None:
    source = png(hole=(64, 64, 128, 128))
    r = img.images.edit(image=("in.png", source), prompt="a green star", size="256x256", n=2,
                        response_format="b64_json")
    original = np.asarray(Image.open(io.BytesIO(source)).convert("RGB"))
    hole = np.zeros((256, 256), dtype=bool)
    hole[64:128, 64:128] = True
    for d in r.data:
        out = np.asarray(decode(d.b64_json).convert("RGB"))
        assert np.array_equal(out[~hole], original[~hole])  # exactly as they were
        assert not np.array_equal(out[hole], original[hole])  # and the hole was painted
    # With a separate mask, the mask's transparency decides, not the image's.
    mask = png(mode="RGBA", hole=(0, 0, 32, 32))
    opaque = png(mode="RGB")
    m = img.images.edit(image=("in.png", opaque), mask=("m.png", mask), prompt="x", size="256x256",
                        response_format="b64_json")
    out = np.asarray(decode(m.data[0].b64_json).convert("RGB"))
    base = np.asarray(Image.open(io.BytesIO(opaque)).convert("RGB"))
    assert np.array_equal(out[32:, :], base[32:, :]) and np.array_equal(out[:, 32:], base[:, 32:])


def test_edit_rules(sd_server: ServerHandle, img: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as exc:
        img.images.edit(image=("in.png", png(mode="RGB")), prompt="x", size="256x256")
    assert "got RGB" in exc.value.message and exc.value.param == "image"
    with pytest.raises(openai.BadRequestError) as exc:
        img.images.edit(image=("in.png", png()), mask=("m.png", png(size=(128, 128))), prompt="x")
    assert exc.value.param == "mask"
    with pytest.raises(openai.BadRequestError) as exc:
        img.images.edit(image=("in.png", png(size=(256, 128))), prompt="x")
    assert exc.value.param == "image"  # dall-e-2 wants a square
    with pytest.raises(openai.BadRequestError):
        img.images.edit(image=[("a.png", png()), ("b.png", png())], prompt="x")  # dall-e-2: one image
    many = img.images.edit(model="gpt-image-1", image=[("a.png", png(hole=(0, 0, 8, 8))), ("b.png", png())],
                           prompt="x", size="256x256")  # sent as image[] parts
    assert len(many.data) == 1 and many.data[0].b64_json
    # Repeated plain `image` parts work too.
    files = [("image", ("a.png", png(hole=(0, 0, 8, 8)), "image/png")), ("image", ("b.png", png(), "image/png"))]
    r = httpx2.post(f"{sd_server.base_url}/images/edits", files=files,
                    data={"model": "gpt-image-1", "prompt": "x", "size": "256x256"}, timeout=60)
    assert r.status_code == 200, r.text
    with pytest.raises(openai.BadRequestError):
        img.images.edit(model="dall-e-3", image=("a.png", png()), prompt="x")


def test_variations(img: openai.OpenAI) -> None:
    r = img.images.create_variation(image=("v.png", png(mode="RGB")), n=2, size="256x256",
                                    response_format="b64_json")
    assert len(r.data) == 2 and decode(r.data[0].b64_json).size == (256, 256)
    with pytest.raises(openai.BadRequestError):
        img.images.create_variation(image=("v.png", png(size=(256, 200))))
    with pytest.raises(openai.BadRequestError):
        img.images.create_variation(image=("v.png", png()), model="dall-e-3")


def _bomb() -> bytes:
    """A valid PNG header claiming 100000x100000 pixels over a tiny body."""
    import struct

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 6, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 1000)) + \
        chunk(b"IEND", b"")


@pytest.mark.parametrize(
    ("payload", "param"),
    [
        (b"not an image at all", "image"),
        (png()[:60], "image"),  # truncated
        (None, "image"),  # a JPEG named .png
        (_bomb(), "image"),
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * (4 * 1024 * 1024), "image"),  # 4 MB and more
    ],
    ids=["garbage", "truncated", "jpeg-as-png", "bomb", "too-big"],
)
def test_unsafe_inputs_are_400_quickly(img: openai.OpenAI, payload: bytes | None, param: str) -> None:
    if payload is None:
        buf = io.BytesIO()
        Image.new("RGB", (64, 64)).save(buf, format="JPEG")
        payload = buf.getvalue()
    t = time.monotonic()
    with pytest.raises(openai.BadRequestError) as exc:
        img.images.edit(image=("x.png", payload), prompt="x", size="256x256")
    assert exc.value.param == param
    assert time.monotonic() - t < 1.0
    with pytest.raises(openai.BadRequestError) as exc:
        img.images.edit(image=("x.png", png()), mask=("m.png", payload), prompt="x", size="256x256")
    assert exc.value.param == "mask"


def test_full_house_answers_429(settings_factory: Any, tiny_sd: Path) -> None:
    settings = sd_settings(settings_factory, tiny_sd)
    settings.images.max_queued = 1
    with start_server(settings) as server:
        client = make_client(server.base_url)
        client.images.generate(prompt="warm", size="256x256", response_format="b64_json")
        engine = server.services.images.engines._engines["tiny-sd"]
        gate = threading.Event()
        slow = engine.generate
        engine.generate = lambda r: (gate.wait(30), slow(r))[1]  # type: ignore[method-assign]
        first = threading.Thread(target=lambda: client.images.generate(prompt="a", size="256x256"))
        first.start()
        time.sleep(0.3)
        with pytest.raises(openai.RateLimitError) as exc:
            client.images.edit(image=("x.png", png()), prompt="b", size="256x256")
        assert exc.value.response.headers["retry-after"] == "2"
        assert exc.value.response.headers["retry-after-ms"] == "2000"
        gate.set()
        first.join(30)


def test_no_image_model_says_how_to_configure(settings_factory: Any) -> None:
    models = [m for m in default_models() if m.kind != "image"]
    with start_server(settings_factory(models=models)) as server, pytest.raises(openai.NotFoundError) as exc:
        make_client(server.base_url).images.generate(prompt="a red circle")
    assert "INHOUSE_MODELS" in exc.value.message


def test_signed_urls_need_no_key_when_keys_are_required(sd_server: ServerHandle) -> None:

    token = sd_server.call(sd_server.services.keys.create("artists")).token
    sd_server.services.keys._required_cache = None
    keyed = make_client(sd_server.base_url, api_key=token)
    url = keyed.images.generate(prompt="a star", size="256x256").data[0].url
    assert url is not None
    assert httpx2.get(url).status_code == 200  # the signature is the credential
    assert httpx2.post(f"{sd_server.base_url}/images/generations", json={"prompt": "x"}).status_code == 401


def test_inpainting_checkpoint_serves_all_three(settings_factory: Any, tmp_path: Path) -> None:
    path = build_tiny_sd(tmp_path / "tiny-sd-inpaint", inpainting=True)
    with start_server(sd_settings(settings_factory, path)) as server:
        client = make_client(server.base_url)
        gen = client.images.generate(prompt="a red circle", size="256x256", response_format="b64_json")
        assert decode(gen.data[0].b64_json).size == (256, 256)
        source = png(hole=(0, 0, 64, 64))
        edit = client.images.edit(image=("in.png", source), prompt="x", size="256x256", response_format="b64_json")
        out = np.asarray(decode(edit.data[0].b64_json).convert("RGB"))
        original = np.asarray(Image.open(io.BytesIO(source)).convert("RGB"))
        assert np.array_equal(out[64:, :], original[64:, :]) and np.array_equal(out[:, 64:], original[:, 64:])
        var = client.images.create_variation(image=("v.png", png(mode="RGB")), size="256x256",
                                             response_format="b64_json")
        assert decode(var.data[0].b64_json).size == (256, 256)
