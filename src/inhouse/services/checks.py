"""Streaming content checks for uploaded files: JSONL of objects, and real images. The checks are plain
blocking code; OffLoop runs one on a worker thread, a batch of chunks per hop."""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import Iterator
from typing import Any, Protocol

from inhouse.errors import InvalidRequest

_BOM = b"\xef\xbb\xbf"
HOP_BYTES = 1024 * 1024  # data handed to a worker thread per hop: big enough to amortise the hop


class ContentCheck(Protocol):
    def feed(self, data: bytes) -> None: ...
    def close(self) -> None: ...


class OffLoop:
    """Runs a ContentCheck on a worker thread, ~1 MiB of chunks per hop: parsing JSON and decoding images
    must not stall the event loop, and a hop per 64 KiB chunk would cost more than the check itself. A bad
    chunk is reported by the feed that hands its batch over, or by close()."""

    def __init__(self, check: ContentCheck, hop_bytes: int = HOP_BYTES) -> None:
        self._check = check
        self._hop = hop_bytes
        self._pending: list[bytes] = []
        self._size = 0

    async def feed(self, data: bytes) -> None:
        self._pending.append(data)
        self._size += len(data)
        if self._size >= self._hop:
            await self._flush()

    async def close(self) -> None:
        await self._flush()
        await asyncio.to_thread(self._check.close)

    async def _flush(self) -> None:
        batch, self._pending, self._size = self._pending, [], 0
        if batch:
            await asyncio.to_thread(self._feed_all, batch)

    def _feed_all(self, batch: list[bytes]) -> None:
        for data in batch:
            self._check.feed(data)


class LineTooLong(Exception):
    pass


class LineSplitter:
    """Splits a byte stream into lines in linear time: each byte is scanned for a newline once, and only the
    unfinished line is kept, in a bytearray that grows at its end. A line over `max_line` bytes raises
    LineTooLong as soon as that many bytes of it have arrived, so memory is bounded by one line."""

    def __init__(self, max_line: int) -> None:
        self._max = max_line
        self._part = bytearray()

    def feed(self, data: bytes) -> Iterator[bytes]:
        """The lines `data` completes, without their newline; the rest is kept for the next feed."""
        start = 0
        while (nl := data.find(b"\n", start)) >= 0:
            if len(self._part) + nl - start > self._max:
                raise LineTooLong
            if self._part:
                self._part += memoryview(data)[start:nl]
                line = bytes(self._part)
                self._part = bytearray()
            else:
                line = data[start:nl]
            yield line
            start = nl + 1
        if len(self._part) + len(data) - start > self._max:
            raise LineTooLong
        self._part += memoryview(data)[start:]

    def close(self) -> Iterator[bytes]:
        """The last line, when the stream does not end with a newline."""
        if self._part:
            line, self._part = bytes(self._part), bytearray()
            yield line


class _Object:
    """What json_object_hook returns for every JSON object: checking a line needs no dicts built."""


_OBJECT = _Object()


def _object_hook(pairs: Any) -> _Object:
    # A Python function (not the C-built dict) on purpose: the interpreter can hand the GIL to the event
    # loop's thread between calls, where json's C parser would otherwise hold it for a whole 15 MB line.
    return _OBJECT


def json_dict(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """object_pairs_hook building the usual dicts, from Python for the same reason as _object_hook."""
    return dict(pairs)


class JsonlCheck:
    """Each non-blank line must be a JSON object; names the first bad line. Memory bounded by one line.
    Blocking (it parses JSON): feed it through OffLoop from async code."""

    def __init__(self, max_line_bytes: int) -> None:
        self._max = max_line_bytes
        self._lines = LineSplitter(max_line_bytes)
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
            value = json.loads(text, object_pairs_hook=_object_hook)
        except (ValueError, RecursionError) as exc:
            self._fail(f"is not valid JSON ({str(exc)[:120]}).")
        if value is not _OBJECT:
            self._fail("is not a JSON object.")
        self._objects += 1

    def _check_lines(self, lines: Iterator[bytes]) -> None:
        try:
            for raw in lines:
                self._check_line(raw)
        except LineTooLong:
            self._line += 1
            self._fail(f"is longer than {self._max} bytes.")

    def feed(self, data: bytes) -> None:
        if not self._started and data:
            self._started = True
            if data.startswith(_BOM):
                data = data[len(_BOM) :]
        self._check_lines(self._lines.feed(data))

    def close(self) -> None:
        self._check_lines(self._lines.close())
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
