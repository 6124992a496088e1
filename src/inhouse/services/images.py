"""Images: generations, edits (OpenAI's mask rule, unmasked pixels returned exactly) and variations, with
each model family's limits, quality and style mapped to real pipeline settings, and signed URL answers."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import io
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from inhouse.config import Images as ImageSettings
from inhouse.config import ModelEntry
from inhouse.engines.images.pipelines import Render
from inhouse.errors import InvalidRequest, NotFound
from inhouse.ids import now, random_token
from inhouse.schemas.images import CreateImageRequest
from inhouse.services.admission import Admission, ByteBudget
from inhouse.services.blob_keys import image_key
from inhouse.services.image_inputs import MB, decode, edit_region, has_alpha
from inhouse.services.models import ModelsService
from inhouse.services.ports import ImageModel, LoadedModels, ModelPools
from inhouse.storage.base import BlobStore

GEN_SIZES = {
    "dall-e-2": ("256x256", "512x512", "1024x1024"),
    "dall-e-3": ("1024x1024", "1792x1024", "1024x1792"),
    "gpt-image": ("1024x1024", "1536x1024", "1024x1536", "auto"),
}
EDIT_SIZES = {
    "dall-e-2": ("256x256", "512x512", "1024x1024"),
    "gpt-image": ("256x256", "512x512", "1024x1024", "1536x1024", "1024x1536", "auto"),
}
PROMPT_MAX = {"dall-e-2": 1000, "dall-e-3": 4000, "gpt-image": 32000}
STYLE_WORDS = {"vivid": "vivid, dramatic, hyper-real, richly detailed", "natural": "natural, realistic, understated"}
GPT_SIZES = ("1024x1024", "1024x1536", "1536x1024")  # the sizes a gpt-image answer names
MIME = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp"}


def family(model: str) -> str:
    if model == "dall-e-3":
        return "dall-e-3"
    if model.startswith(("gpt-image", "chatgpt-image")):
        return "gpt-image"
    return "dall-e-2"  # dall-e-2 and local pipeline ids follow dall-e-2's rules


@dataclass
class ImageOptions:
    model: str
    prompt: str
    n: int | None = None
    size: str | None = None
    quality: str | None = None
    style: str | None = None
    response_format: str | None = None
    output_format: str | None = None
    output_compression: int | None = None
    background: str | None = None
    moderation: str | None = None
    seed: int | None = None  # extension: reproducible images


@dataclass(frozen=True)
class Plan:
    family: str
    entry: ModelEntry
    width: int
    height: int
    render: Render
    revised_prompt: str | None
    b64: bool
    output_format: str
    compression: int
    quality_label: str | None


class ImagesService:
    def __init__(self, models: ModelsService, engines: LoadedModels[ImageModel], blobs: BlobStore,
                 settings: ImageSettings, max_pixels: int, secret: bytes,
                 executors: ModelPools) -> None:
        self.models = models
        self.engines = engines
        self.blobs = blobs
        self.settings = settings
        self.max_pixels = max_pixels
        self.secret = secret
        self.executors = executors
        # Bounded: a full house answers 429 before any upload is decoded (taken once the body is in).
        self.admit = Admission(lambda: self.settings.max_queued,
                               "Too many image requests are in progress; retry shortly.", 2.0, kind="images")
        # Bounded too: the image bytes that edits and variations hold in memory, received or in use.
        self.upload_budget = ByteBudget(lambda: self.settings.max_buffered_upload_bytes,
                                        "Too many image bytes are being received; retry shortly.", 2.0,
                                        kind="image_upload_bytes")

    # -- planning -------------------------------------------------------------------------------------
    def _entry(self, model: str) -> ModelEntry:
        entry = self.models.resolve_configured(model, "image")
        if entry is None:
            if not any(e.kind == "image" for e in self.models.entries):
                raise NotFound(
                    f"The model `{model}` does not exist: no image model is configured. Add one to INHOUSE_MODELS "
                    'as {"id": "my-sd", "kind": "image", "path": "/path/to/diffusers/pipeline", '
                    '"aliases": ["dall-e-2", "dall-e-3"]}.', param="model", code="model_not_found")
            raise NotFound(f"The model `{model}` does not exist or you do not have access to it.", param="model",
                           code="model_not_found")
        return entry

    def plan(self, o: ImageOptions, *, sizes: dict[str, tuple[str, ...]], default_size: str,
             require_prompt: bool = True) -> Plan:
        fam = family(o.model)
        entry = self._entry(o.model)
        if require_prompt and not o.prompt:
            raise InvalidRequest("Missing required parameter: 'prompt'.", param="prompt")
        if o.seed is not None and not -(2**63) <= o.seed < 2**63:  # int64, as chat's seed; torch takes no more
            raise InvalidRequest("seed must be an integer from -9223372036854775808 to 9223372036854775807.",
                                 param="seed")
        if len(o.prompt) > PROMPT_MAX[fam]:
            raise InvalidRequest(f"prompt is longer than {PROMPT_MAX[fam]} characters, the limit for {fam}.",
                                 param="prompt", code="string_above_max_length")
        if o.moderation is not None:
            # OpenAI filters GPT image prompts and results ("auto" by default, "low" less strictly); no
            # moderation model runs here, so any explicit value is refused rather than accepted and ignored.
            raise InvalidRequest("This server runs no content moderation, so `moderation` cannot be honoured: "
                                 "leave it out.", param="moderation", code="unsupported_parameter")
        n = 1 if o.n is None else o.n
        if not 1 <= n <= 10:
            raise InvalidRequest("n must be between 1 and 10.", param="n")
        if fam == "dall-e-3" and n != 1:
            raise InvalidRequest("dall-e-3 supports only n=1.", param="n")
        allowed = sizes.get(fam, sizes["dall-e-2"])
        size = o.size or default_size
        if size not in allowed:
            raise InvalidRequest(f"'{size}' is not one of {list(allowed)} - 'size'", param="size")
        width, height = (1024, 1024) if size == "auto" else (int(x) for x in size.split("x"))
        steps, quality_label = self._quality(fam, o.quality, entry.steps)
        # A model's own guidance (0 is a real value: no guidance) replaces vivid; natural keeps its ratio to it.
        s = self.settings
        vivid, natural = ((s.guidance_vivid, s.guidance_natural) if entry.guidance is None
                          else (entry.guidance, entry.guidance * s.guidance_natural / s.guidance_vivid))
        prompt, guidance, revised = o.prompt, vivid, None
        if o.style is not None:
            if fam != "dall-e-3":
                raise InvalidRequest("style is only supported for dall-e-3.", param="style")
            if o.style not in STYLE_WORDS:
                raise InvalidRequest(f"'{o.style}' is not one of ['vivid', 'natural'] - 'style'", param="style")
        if fam == "dall-e-3":
            style = o.style or "vivid"
            guidance = vivid if style == "vivid" else natural
            prompt = f"{o.prompt}, {STYLE_WORDS[style]}"
            revised = prompt
        b64, output_format, compression = self._output(fam, o)
        render = Render(prompt, *self._native(width, height, entry.max_side), steps, guidance, n, o.seed)
        return Plan(fam, entry, width, height, render, revised, b64, output_format, compression, quality_label)

    def _quality(self, fam: str, quality: str | None, model_steps: int | None) -> tuple[int, str | None]:
        s = self.settings
        q = quality or "auto"
        # A model's own step count (one trained for few steps) replaces standard; hd/high double it, low halves it.
        std, hd, low = ((s.steps_standard, s.steps_hd, s.steps_low) if model_steps is None
                        else (model_steps, 2 * model_steps, max(1, model_steps // 2)))
        table = {
            "dall-e-2": {"auto": std, "standard": std},
            "dall-e-3": {"auto": std, "standard": std, "hd": hd},
            "gpt-image": {"auto": std, "low": low, "medium": std, "high": hd},
        }[fam]
        if q not in table:
            raise InvalidRequest(f"'{q}' is not a supported quality for {fam}: {list(table)}.", param="quality")
        label = None
        if fam == "gpt-image":
            label = "medium" if q == "auto" else q
        return table[q], label

    def _output(self, fam: str, o: ImageOptions) -> tuple[bool, str, int]:
        if fam == "gpt-image":
            if o.response_format is not None:
                raise InvalidRequest("response_format is not supported for GPT image models; they answer b64_json.",
                                     param="response_format")
            fmt = o.output_format or "png"
            if fmt not in MIME:
                raise InvalidRequest(f"'{fmt}' is not one of ['png', 'jpeg', 'webp'] - 'output_format'",
                                     param="output_format")
            comp = 100 if o.output_compression is None else o.output_compression
            if not 0 <= comp <= 100:
                raise InvalidRequest("output_compression must be between 0 and 100.", param="output_compression")
            if o.background not in (None, "auto", "opaque", "transparent"):
                raise InvalidRequest(f"'{o.background}' is not one of ['transparent', 'opaque', 'auto'] - "
                                     "'background'", param="background")
            if o.background == "transparent":
                raise InvalidRequest("background=transparent is not supported by this image pipeline.",
                                     param="background")
            return True, fmt, comp
        for name in ("output_format", "output_compression", "background"):
            if getattr(o, name) is not None:
                raise InvalidRequest(f"{name} is only supported for GPT image models.", param=name)
        rf = o.response_format or "url"
        if rf not in ("url", "b64_json"):
            raise InvalidRequest(f"'{rf}' is not one of ['url', 'b64_json'] - 'response_format'",
                                 param="response_format")
        return rf == "b64_json", "png", 100

    def _native(self, width: int, height: int, max_side: int | None) -> tuple[int, int]:
        scale = min(1.0, (self.settings.max_generate_side if max_side is None else max_side) / max(width, height))
        return max(8, round(width * scale / 8) * 8), max(8, round(height * scale / 8) * 8)

    # -- running --------------------------------------------------------------------------------------
    async def _engine(self, plan: Plan) -> ImageModel:
        return await self.engines.get(plan.entry)

    async def _run(self, plan: Plan, fn: Callable[[ImageModel], list[Any]]) -> list[Any]:
        engine = await self._engine(plan)
        engine.busy += 1
        try:
            return await self.executors.run("images", fn, engine)
        finally:
            engine.busy -= 1
            engine.last_used = time.monotonic()

    def _fit(self, images: list[Any], plan: Plan) -> list[Any]:
        from PIL import Image

        return [im if im.size == (plan.width, plan.height)
                else im.resize((plan.width, plan.height), Image.Resampling.LANCZOS) for im in images]

    async def generate(self, o: ImageOptions) -> tuple[Plan, list[Any]]:
        default = "auto" if family(o.model) == "gpt-image" else "1024x1024"
        plan = self.plan(o, sizes=GEN_SIZES, default_size=default)
        return plan, await self._run(plan, lambda e: self._fit(e.generate(plan.render), plan))

    def decode_edit_inputs(self, o: ImageOptions, images: list[bytes], mask: bytes | None) -> tuple[Any, Any]:
        fam = family(o.model)
        if not images:
            raise InvalidRequest("Missing required parameter: 'image'.", param="image")
        formats: tuple[str, ...]
        if fam == "dall-e-2":
            if len(images) != 1:
                raise InvalidRequest("dall-e-2 edits take exactly one image.", param="image")
            formats, max_bytes, square = ("PNG",), 4 * MB, True
        else:
            if len(images) > 16:
                raise InvalidRequest("At most 16 images may be edited together.", param="image")
            formats, max_bytes, square = ("PNG", "JPEG", "WEBP"), 50 * MB, False
        decoded = [decode(b, param="image", formats=formats, max_bytes=max_bytes, max_pixels=self.max_pixels,
                          square=square) for b in images]
        first = decoded[0]
        if mask is not None:
            m = decode(mask, param="mask", formats=("PNG",), max_bytes=4 * MB, max_pixels=self.max_pixels)
            if m.size != first.size:
                raise InvalidRequest(f"The mask ({m.size[0]}x{m.size[1]}) must have the same dimensions as the "
                                     f"image ({first.size[0]}x{first.size[1]}).", param="mask",
                                     code="invalid_mask_size")
            if not has_alpha(m):
                raise InvalidRequest(f"Invalid mask image - format must be in ['RGBA', 'LA'], got {m.mode}.",
                                     param="mask", code="invalid_image_format")
            region = edit_region(m)
        else:
            if not has_alpha(first) and first.mode != "L":
                raise InvalidRequest(f"Invalid input image - format must be in ['RGBA', 'LA', 'L'], got "
                                     f"{first.mode}.", param="image", code="invalid_image_format")
            region = edit_region(first)
        return first, region

    async def edit(self, o: ImageOptions, images: list[bytes], mask: bytes | None) -> tuple[Plan, list[Any]]:
        import numpy as np
        from PIL import Image

        fam = family(o.model)
        if fam == "dall-e-3":
            raise InvalidRequest("dall-e-3 does not support edits; use dall-e-2 or a GPT image model.",
                                 param="model")
        plan = self.plan(o, sizes=EDIT_SIZES, default_size="1024x1024")
        first, region = await self.executors.run("images", self.decode_edit_inputs, o, images, mask)
        size = (plan.width, plan.height)
        native = (plan.render.width, plan.render.height)

        def paint(engine: ImageModel) -> list[Any]:
            # All pixel work runs here, on the worker thread, never on the event loop.
            original = first.convert("RGB")
            if original.size != size:
                original = original.resize(size, Image.Resampling.LANCZOS)
            region_img = Image.fromarray((region * 255).astype(np.uint8), mode="L")
            if region_img.size != size:
                region_img = region_img.resize(size, Image.Resampling.NEAREST)
            src = original.resize(native, Image.Resampling.LANCZOS) if native != size else original
            msk = region_img.resize(native, Image.Resampling.NEAREST) if native != size else region_img
            painted = self._fit(engine.inpaint(plan.render, src, msk), plan)
            # Paste the original back: outside the edited area every pixel comes back exactly as it was.
            keep = np.asarray(region_img) == 0
            base = np.asarray(original)
            out = []
            for im in painted:
                arr = np.asarray(im.convert("RGB")).copy()
                arr[keep] = base[keep]
                out.append(Image.fromarray(arr, mode="RGB"))
            return out

        return plan, await self._run(plan, paint)

    async def variation(self, o: ImageOptions, image: bytes) -> tuple[Plan, list[Any]]:
        from PIL import Image

        if family(o.model) != "dall-e-2":
            raise InvalidRequest("Variations are only supported for dall-e-2.", param="model")
        plan = self.plan(o, sizes=GEN_SIZES, default_size="1024x1024", require_prompt=False)
        img = await self.executors.run("images", decode, image, param="image", formats=("PNG",), max_bytes=4 * MB,
                                       max_pixels=self.max_pixels, square=True)
        strength = self.settings.variation_strength

        def vary(engine: ImageModel) -> list[Any]:
            src = img.convert("RGB").resize((plan.render.width, plan.render.height), Image.Resampling.LANCZOS)
            return self._fit(engine.vary(plan.render, src, strength), plan)

        return plan, await self._run(plan, vary)

    # -- answers --------------------------------------------------------------------------------------
    @staticmethod
    def encode(img: Any, fmt: str, compression: int) -> bytes:
        buf = io.BytesIO()
        if fmt == "png":
            img.save(buf, format="PNG")
        else:
            img.convert("RGB").save(buf, format=fmt.upper(), quality=max(1, compression))
        return buf.getvalue()

    def sign(self, name: str, expires: int) -> str:
        return hmac.new(self.secret, f"{name}:{expires}".encode(), hashlib.sha256).hexdigest()

    async def store(self, data: bytes, fmt: str, base_url: str) -> str:
        """Keep the image and answer an unguessable URL that needs no key and stops working after the TTL."""
        name = f"img_{random_token(32)}"
        writer = self.blobs.writer(image_key(name))
        await writer.write(data)
        await writer.commit()
        expires = now() + self.settings.url_ttl_seconds
        origin = (self.settings.external_base_url or base_url).rstrip("/")
        return f"{origin}/v1/images/files/{name}.{fmt}?expires={expires}&sig={self.sign(name, expires)}"

    async def answer(self, plan: Plan, images: list[Any], base_url: str) -> dict[str, Any]:
        """The ImagesResponse body: each image inline (b64_json) or behind a signed URL under `base_url`."""
        data = []
        for img in images:
            # PNG/JPEG encoding of a large image takes tens of milliseconds: off the event loop.
            encoded = await asyncio.to_thread(self.encode, img, plan.output_format, plan.compression)
            item: dict[str, Any] = {"b64_json": b64(encoded)} if plan.b64 else {
                "url": await self.store(encoded, plan.output_format, base_url)}
            if plan.revised_prompt is not None:
                item["revised_prompt"] = plan.revised_prompt
            data.append(item)
        body: dict[str, Any] = {"created": now(), "data": data}
        if plan.family == "gpt-image":
            body.update(output_format=plan.output_format, background="opaque", quality=plan.quality_label)
            size = f"{plan.width}x{plan.height}"
            if size in GPT_SIZES:
                body["size"] = size
        return body

    def check_signature(self, name: str, expires: int, sig: str) -> bool:
        # compare_digest raises TypeError on non-ASCII str; no such sig can be ours anyway.
        return sig.isascii() and hmac.compare_digest(self.sign(name, expires), sig) and expires > now()


def generation_options(body: CreateImageRequest) -> ImageOptions:
    """A generation request's options, as the route and a batch line read them."""
    return ImageOptions(model=body.model or "dall-e-2", prompt=body.prompt, n=body.n, size=body.size,
                        quality=body.quality, style=body.style, response_format=body.response_format,
                        output_format=body.output_format, output_compression=body.output_compression,
                        background=body.background, moderation=body.moderation, seed=body.seed)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")
