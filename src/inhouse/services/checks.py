"""Streaming content checks for uploaded files: JSONL of objects, and real images."""

from __future__ import annotations

import io
import json
from typing import Protocol

from inhouse.errors import InvalidRequest

_BOM = b"\xef\xbb\xbf"


class ContentCheck(Protocol):
    def feed(self, data: bytes) -> None: ...
    def close(self) -> None: ...


class JsonlCheck:
    """Each non-blank line must be a JSON object; names the first bad line. Memory bounded by one line."""

    def __init__(self, max_line_bytes: int) -> None:
        self._max = max_line_bytes
        self._buf = bytearray()
        self._line = 0
        self._objects = 0
        self._started = False

    def _fail(self, why: str) -> None:
        raise InvalidRequest(f"Invalid file format. Line {self._line}: {why}", param="file", code="invalid_file_format")

    def _check_line(self, raw: bytes) -> None:
        self._line += 1
        if not raw.strip():
            return
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            self._fail("is not valid UTF-8.")
        try:
            value = json.loads(text)
        except (ValueError, RecursionError) as exc:
            self._fail(f"is not valid JSON ({str(exc)[:120]}).")
        if not isinstance(value, dict):
            self._fail("is not a JSON object.")
        self._objects += 1

    def feed(self, data: bytes) -> None:
        if not self._started and data:
            self._started = True
            if data.startswith(_BOM):
                data = data[len(_BOM) :]
        self._buf += data
        start = 0
        while True:
            nl = self._buf.find(b"\n", start)
            if nl < 0:
                break
            self._check_line(bytes(self._buf[start:nl]))
            start = nl + 1
        del self._buf[:start]
        if len(self._buf) > self._max:
            self._line += 1
            self._fail(f"is longer than {self._max} bytes.")

    def close(self) -> None:
        if self._buf:
            self._check_line(bytes(self._buf))
            self._buf.clear()
        if self._objects == 0:
            raise InvalidRequest("Invalid file format. The file contains no JSON lines.", param="file",
                                 code="invalid_file_format")


class ImageCheck:
    """A vision file must decode as PNG, JPEG, WEBP or GIF within the pixel cap."""

    def __init__(self, max_bytes: int, max_pixels: int) -> None:
        self._max_bytes = max_bytes
        self._max_pixels = max_pixels
        self._buf = bytearray()

    def feed(self, data: bytes) -> None:
        self._buf += data
        if len(self._buf) > self._max_bytes:
            raise InvalidRequest(f"Vision images must be at most {self._max_bytes} bytes.", param="file")

    def close(self) -> None:
        from PIL import Image

        bad = InvalidRequest("The file is not a valid PNG, JPEG, WEBP or GIF image.", param="file",
                             code="invalid_image_format")
        try:
            with Image.open(io.BytesIO(self._buf), formats=["PNG", "JPEG", "WEBP", "GIF"]) as img:
                w, h = img.size
                if w * h > self._max_pixels:
                    raise InvalidRequest(f"Image has {w}x{h} pixels, over the cap of {self._max_pixels}.",
                                         param="file", code="invalid_image_format")
                img.verify()
        except InvalidRequest:
            raise
        except Exception as exc:  # Pillow raises many types for corrupt input
            raise bad from exc
