"""Images request models (the answers are plain dicts: ImagesResponse)."""

from __future__ import annotations

from pydantic import StrictInt, StrictStr

from inhouse.schemas.common import Request


class CreateImageRequest(Request):
    prompt: StrictStr
    model: StrictStr | None = None
    n: StrictInt | None = None
    size: StrictStr | None = None
    quality: StrictStr | None = None
    style: StrictStr | None = None
    response_format: StrictStr | None = None
    output_format: StrictStr | None = None
    output_compression: StrictInt | None = None
    background: StrictStr | None = None
    moderation: StrictStr | None = None
    user: StrictStr | None = None
    seed: StrictInt | None = None  # extension: reproducible images
