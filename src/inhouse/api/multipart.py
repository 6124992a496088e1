"""A streaming multipart/form-data reader: file parts go straight to a sink, never whole into memory."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import ClientDisconnect, Request

from inhouse.errors import InvalidRequest


class Sink(Protocol):
    async def write(self, data: bytes) -> None: ...
    async def abort(self) -> None: ...


# ASCII digits only (str.isdigit() takes "²" and "١"), and few enough that int() is cheap and cannot refuse.
_INTEGER = re.compile(r"-?[0-9]{1,18}")


@dataclass
class Form:
    fields: dict[str, list[str]] = field(default_factory=dict)

    def get(self, name: str) -> str | None:
        values = self.fields.get(name)
        return values[-1] if values else None

    def integer(self, name: str) -> int | None:
        """The field as an integer, None when absent; anything but an optional '-' and ASCII digits is a 400."""
        value = self.get(name)
        if value is None:
            return None
        text = value.strip()
        if not _INTEGER.fullmatch(text):
            raise InvalidRequest(f"{name} must be an integer.", param=name)
        return int(text)


# on_file(field name, filename, fields seen so far) -> where its bytes go, or None to refuse the part.
FileHandler = Callable[[str, str | None, Form], Awaitable[Sink | None]]


class _Events:
    def __init__(self) -> None:
        self.items: list[tuple[str, Any]] = []
        self.header_field = bytearray()
        self.header_value = bytearray()
        self.headers: dict[bytes, bytes] = {}
        self.ended = False

    def callbacks(self) -> dict[str, Any]:
        def on_part_begin() -> None:
            self.headers = {}

        def on_header_field(data: bytes, start: int, end: int) -> None:
            self.header_field += data[start:end]

        def on_header_value(data: bytes, start: int, end: int) -> None:
            self.header_value += data[start:end]

        def on_header_end() -> None:
            self.headers[bytes(self.header_field).lower()] = bytes(self.header_value)
            self.header_field.clear()
            self.header_value.clear()

        def on_headers_finished() -> None:
            self.items.append(("headers", self.headers))

        def on_part_data(data: bytes, start: int, end: int) -> None:
            self.items.append(("data", data[start:end]))

        def on_part_end() -> None:
            self.items.append(("end", None))

        def on_end() -> None:
            self.ended = True

        return {
            "on_part_begin": on_part_begin,
            "on_header_field": on_header_field,
            "on_header_value": on_header_value,
            "on_header_end": on_header_end,
            "on_headers_finished": on_headers_finished,
            "on_part_data": on_part_data,
            "on_part_end": on_part_end,
            "on_end": on_end,
        }


async def read_form(
    request: Request, on_file: FileHandler, *, max_field_bytes: int, max_parts: int
) -> Form:
    ctype, params = parse_options_header(request.headers.get("content-type", ""))
    boundary = params.get(b"boundary")
    if ctype != b"multipart/form-data" or not boundary:
        raise InvalidRequest("The request body must be multipart/form-data with a boundary.", param=None)
    events = _Events()
    try:
        parser = MultipartParser(boundary, events.callbacks())  # type: ignore[arg-type]
    except FormParserError as exc:  # a boundary longer than the parser takes
        raise InvalidRequest(f"Malformed multipart body: {exc}") from None
    form = Form()
    opened: list[Sink] = []
    sink: Sink | None = None
    text: bytearray | None = None
    name = ""
    parts = 0

    async def handle() -> None:
        nonlocal sink, text, name, parts
        items, events.items = events.items, []
        for kind, value in items:
            if kind == "headers":
                parts += 1
                if parts > max_parts:
                    raise InvalidRequest(f"Too many multipart parts (more than {max_parts}).")
                _, disp = parse_options_header(value.get(b"content-disposition", b""))
                raw_name = disp.get(b"name")
                if raw_name is None:
                    raise InvalidRequest("A multipart part has no name.")
                name = raw_name.decode("utf-8", "replace")
                raw_filename = disp.get(b"filename")
                if raw_filename is not None:
                    filename = raw_filename.decode("utf-8", "replace")
                    sink = await on_file(name, filename, form)
                    if sink is None:
                        raise InvalidRequest(f"Unexpected file field '{name}'.", param=name)
                    opened.append(sink)
                    text = None
                else:
                    sink, text = None, bytearray()
            elif kind == "data":
                if sink is not None:
                    await sink.write(value)
                elif text is not None:
                    text += value
                    if len(text) > max_field_bytes:
                        raise InvalidRequest(f"Field '{name}' is longer than {max_field_bytes} bytes.", param=name)
            elif kind == "end":
                if text is not None:
                    try:
                        form.fields.setdefault(name, []).append(text.decode("utf-8"))
                    except UnicodeDecodeError:
                        raise InvalidRequest(f"Field '{name}' is not valid UTF-8.", param=name) from None
                sink, text = None, None

    try:
        async for chunk in request.stream():
            if chunk:
                parser.write(chunk)
                await handle()
        parser.finalize()
        await handle()
        if not events.ended:
            raise InvalidRequest("The multipart body ended before its closing boundary.")
    except FormParserError as exc:
        await _abort(opened)
        raise InvalidRequest(f"Malformed multipart body: {exc}") from None
    except ClientDisconnect:
        await _abort(opened)
        raise
    except BaseException:
        await _abort(opened)
        raise
    return form


async def _abort(sinks: list[Sink]) -> None:
    for s in sinks:
        await s.abort()


class MemorySink:
    """Collects a small file part in memory, refusing past `cap` bytes (the caller's own limit applies after)."""

    def __init__(self, cap: int, param: str, tally: list[int] | None = None, total_cap: int | None = None,
                 charge: Callable[[int], None] | None = None) -> None:
        self.cap, self.param = cap, param
        self.tally, self.total_cap = tally, total_cap
        self.charge = charge  # told of every byte before it is kept; may refuse it by raising
        self.parts: list[bytes] = []
        self.size = 0

    async def write(self, data: bytes) -> None:
        if self.charge is not None:
            self.charge(len(data))
        self.size += len(data)
        if self.tally is not None:
            self.tally[0] += len(data)
        if self.size > self.cap or (self.total_cap is not None and self.tally and self.tally[0] > self.total_cap):
            raise InvalidRequest(f"Uploaded '{self.param}' is too large.", param=self.param,
                                 code="invalid_image_format")
        self.parts.append(bytes(data))

    async def abort(self) -> None:
        self.parts = []

    def value(self) -> bytes:
        return b"".join(self.parts)
