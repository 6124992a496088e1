"""Uploaded images decoded safely: the declared format's decoder alone, byte and pixel caps checked before
any pixel is decoded, truncated or mislabelled files refused with a 400 naming the field."""

from __future__ import annotations

import io
from typing import Any

from inhouse.errors import InvalidRequest

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
MB = 1024 * 1024


def decode(data: bytes, *, param: str, formats: tuple[str, ...], max_bytes: int, max_pixels: int,
           square: bool = False) -> Any:
    from PIL import Image

    label = "a PNG" if formats == ("PNG",) else "a PNG, JPEG or WEBP image"
    limit = f"{max_bytes // MB} MB"
    if len(data) >= max_bytes:
        raise InvalidRequest(f"Uploaded image must be {label} and less than {limit}.", param=param,
                             code="invalid_image_format")
    if formats == ("PNG",) and not data.startswith(PNG_SIGNATURE):
        raise InvalidRequest(f"Uploaded image must be {label} and less than {limit}.", param=param,
                             code="invalid_image_format")
    try:
        img = Image.open(io.BytesIO(data), formats=list(formats))
    except Exception:  # Pillow raises many types for what it cannot identify
        raise InvalidRequest(f"Uploaded image must be {label} and less than {limit}.", param=param,
                             code="invalid_image_format") from None
    w, h = img.size
    if w * h > max_pixels or w < 1 or h < 1:  # checked from the header, before decoding (bombs stop here)
        raise InvalidRequest(f"Uploaded image is {w}x{h} pixels; at most {max_pixels} pixels are accepted.",
                             param=param, code="image_too_large")
    if square and w != h:
        raise InvalidRequest(f"Uploaded image must be square, got {w}x{h}.", param=param, code="invalid_image_size")
    try:
        img.load()
    except Exception:
        raise InvalidRequest("Uploaded image is truncated or corrupt.", param=param,
                             code="invalid_image_format") from None
    return img


def has_alpha(img: Any) -> bool:
    return img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info)


def edit_region(img: Any) -> Any:
    """OpenAI's rule: fully transparent pixels (alpha = 0) mark where to edit. A boolean array, True = edit."""
    import numpy as np

    if not has_alpha(img):
        return np.zeros((img.size[1], img.size[0]), dtype=bool)
    alpha = np.asarray(img.convert("RGBA").getchannel("A"))
    return alpha == 0
