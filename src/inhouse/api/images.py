"""Routes of /v1/images: generations (JSON), edits and variations (multipart), and the signed image files."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from inhouse.api.deps import ProjectDep, ServicesDep
from inhouse.api.metering import MeterDep
from inhouse.api.multipart import Form, MemorySink, Sink, read_form
from inhouse.errors import InvalidRequest, PermissionDenied
from inhouse.schemas.images import CreateImageRequest
from inhouse.services.blob_keys import image_key
from inhouse.services.images import MIME, ImageOptions, Plan, generation_options

router = APIRouter(tags=["images"])
PART_CAP = 50 * 1024 * 1024
REQUEST_CAP = 64 * 1024 * 1024  # all images of one edit together


async def _answer(plan: Plan, images: list[Any], request: Request, services: Any) -> JSONResponse:
    return JSONResponse(await services.images.answer(plan, images, str(request.base_url)))


def _options(form: Form, *, default_model: str) -> ImageOptions:
    return ImageOptions(
        model=form.get("model") or default_model, prompt=form.get("prompt") or "", n=form.integer("n"),
        size=form.get("size"), quality=form.get("quality"), style=form.get("style"),
        response_format=form.get("response_format"), output_format=form.get("output_format"),
        output_compression=form.integer("output_compression"), background=form.get("background"),
        seed=form.integer("seed"))


@router.post("/images/generations")
async def create_image(body: CreateImageRequest, request: Request, project: ProjectDep, services: ServicesDep,
                       meter: MeterDep) -> JSONResponse:
    with services.images.admit():
        options = generation_options(body)
        plan, images = await services.images.generate(options)
        await meter.done(options.model, images=len(images))
        return await _answer(plan, images, request, services)


@contextlib.asynccontextmanager
async def _received_images(request: Request, services: Any, allowed: tuple[str, ...]) -> AsyncIterator[tuple[
        Form, dict[str, list[MemorySink]]]]:
    """The form and its image parts, read whole into memory under the process-wide upload byte budget; the
    bytes count against it until the request is done with them."""
    limits = services.settings.limits
    budget = services.images.upload_budget
    sinks: dict[str, list[MemorySink]] = {}
    tally = [0]
    charged = 0

    def charge(n: int) -> None:
        nonlocal charged
        budget.take(n)
        charged += n

    async def on_file(field: str, filename: str | None, form: Form) -> Sink | None:
        name = "image" if field == "image[]" else field
        if name not in allowed:
            return None
        sink = MemorySink(PART_CAP, name, tally, REQUEST_CAP, charge)
        sinks.setdefault(name, []).append(sink)
        return sink

    try:
        form = await read_form(request, on_file, max_field_bytes=limits.max_form_field_bytes,
                               max_parts=limits.max_form_parts)
        yield form, sinks
    finally:
        budget.give(charged)


@router.post("/images/edits")
async def create_image_edit(request: Request, project: ProjectDep, services: ServicesDep,
                            meter: MeterDep) -> JSONResponse:
    # Admitted once the body is in, before anything is decoded: a slot taken before the read would let a
    # client that stalls its upload hold it as long as it likes.
    async with _received_images(request, services, ("image", "mask")) as (form, sinks):
        with services.images.admit():
            masks = sinks.get("mask", [])
            if len(masks) > 1:
                raise InvalidRequest("Only one mask may be sent.", param="mask")
            options = _options(form, default_model="dall-e-2")
            plan, images = await services.images.edit(options, [s.value() for s in sinks.get("image", [])],
                                                      masks[0].value() if masks else None)
            await meter.done(options.model, images=len(images))
            return await _answer(plan, images, request, services)


@router.post("/images/variations")
async def create_image_variation(request: Request, project: ProjectDep, services: ServicesDep,
                                 meter: MeterDep) -> JSONResponse:
    async with _received_images(request, services, ("image",)) as (form, sinks):
        with services.images.admit():  # after the read, as for edits
            images = sinks.get("image", [])
            if len(images) != 1:
                raise InvalidRequest("Send exactly one 'image'.", param="image")
            options = _options(form, default_model="dall-e-2")
            plan, out = await services.images.variation(options, images[0].value())
            await meter.done(options.model, images=len(out))
            return await _answer(plan, out, request, services)


@router.get("/images/files/{name}", response_model=None)
async def image_file(name: str, services: ServicesDep, expires: int = 0, sig: str = "") -> Response:
    """No API key: the signature is the credential, and it expires."""
    stem, _, ext = name.partition(".")
    svc = services.images
    if ext not in MIME or not stem.startswith("img_") or not (stem[4:].isascii() and stem[4:].isalnum()) or \
            not svc.check_signature(stem, expires, sig):
        raise PermissionDenied("This image URL is not valid or has expired.", code="url_expired")
    size = await services.blobs.size(image_key(stem))
    if size is None:
        raise PermissionDenied("This image URL is not valid or has expired.", code="url_expired")
    return StreamingResponse(services.blobs.read(image_key(stem)), media_type=MIME[ext],
                             headers={"content-length": str(size), "cache-control": "private, max-age=3600"})
