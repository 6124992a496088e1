"""The HTTP server: uvicorn's httptools protocol with the connection limits uvicorn itself lacks.

uvicorn caps neither header size nor count (httptools buffers a header of any length), has no deadline for
a request's headers, and counts idle connections against `limit_concurrency`, so a few hundred idle sockets
turn every request into a 503. This protocol adds, per connection:

- a header deadline armed when the connection opens and at the first byte of each request, cancelled when
  the headers are complete (slowloris, and sockets that never send a byte);
- a cap on the bytes of request line plus headers, checked *before* the parser sees them, and on their count;
- a cap on requests per keep-alive connection (uvicorn's keep-alive timeout covers the idle time between);
- a connection cap that closes the longest-idle connection to admit a new one, so idle sockets never hold a
  slot a real request needs.

Requests in progress are capped by the app (`api.middleware.InFlight`), body stalls by `api.middleware.BodyLimit`.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from inhouse.config import Http, Settings

log = logging.getLogger("inhouse.server")

_HEAD_END = b"\r\n\r\n"


class _TooManyHeaders(Exception):
    pass


def _reply(status: int, reason: str, message: str) -> bytes:
    """A complete HTTP/1.1 answer in the OpenAI error envelope that also closes the connection."""
    body = json.dumps({"error": {"message": message, "type": "invalid_request_error", "param": None,
                                 "code": None}}).encode()
    return (f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\nconnection: close\r\n\r\n").encode() + body


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """HttpToolsProtocol plus the limits in `Http`; `limits` is set on the subclass `protocol_for` makes."""

    limits: Http

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_deadline: asyncio.TimerHandle | None = None
        self._reading_head = True  # between requests, or inside a request line + headers
        self._head_bytes = 0
        self._head_tail = b""  # last 3 bytes seen, so a CRLFCRLF split across reads is found
        self._header_count = 0
        self._served = 0
        self._idle_since = self.loop.time()

    # -- connection ---------------------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.limits.max_connections:
            self._make_room()
        self._arm_head_deadline()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_deadline()
        super().connection_lost(exc)

    def _busy(self) -> bool:
        return self.cycle is not None and not self.cycle.response_complete

    def _make_room(self) -> None:
        """Close the connection that has waited longest without a request in progress (maybe this one)."""
        idle = [p for p in self.connections
                if isinstance(p, GuardedHttpToolsProtocol) and not p._busy() and not p.transport.is_closing()]
        if idle:
            victim = min(idle, key=lambda p: p._idle_since)
            victim.transport.close()

    # -- header phase -------------------------------------------------------------------------------------
    def _arm_head_deadline(self) -> None:
        if self._head_deadline is None:
            self._head_deadline = self.loop.call_later(self.limits.header_timeout_seconds, self._head_timed_out)

    def _cancel_head_deadline(self) -> None:
        if self._head_deadline is not None:
            self._head_deadline.cancel()
            self._head_deadline = None

    def _head_timed_out(self) -> None:
        self._head_deadline = None
        if self.transport.is_closing():
            return
        if not self._busy():
            self.transport.write(_reply(408, "Request Timeout", "The request headers did not arrive in time."))
        self.transport.close()

    def _refuse(self, status: int, reason: str, message: str) -> None:
        self._cancel_head_deadline()
        if not self.transport.is_closing():
            if not self._busy():
                self.transport.write(_reply(status, reason, message))
            self.transport.close()

    def _head_fits(self, data: bytes) -> bool:
        """Count head bytes up to the end of the headers; False once they pass the cap."""
        window = self._head_tail + data
        end = window.find(_HEAD_END)
        if end >= 0:
            self._head_bytes += end + len(_HEAD_END) - len(self._head_tail)
        else:
            self._head_bytes += len(data)
            self._head_tail = window[-3:]
        return self._head_bytes <= self.limits.max_header_bytes

    def data_received(self, data: bytes) -> None:
        if self._reading_head and not self._head_fits(data):
            self._refuse(431, "Request Header Fields Too Large",
                         f"The request line and headers are larger than {self.limits.max_header_bytes} bytes.")
            return
        super().data_received(data)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._arm_head_deadline()
        self._header_count = 0

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_count += 1
        if self._header_count > self.limits.max_headers:
            # httptools turns a callback's exception into a parse error; answer 431 first so the
            # client learns why, then the parse error closes nothing twice.
            self._refuse(431, "Request Header Fields Too Large",
                         f"More than {self.limits.max_headers} header fields.")
            raise _TooManyHeaders
        super().on_header(name, value)

    def send_400_response(self, msg: str) -> None:
        # uvicorn's own 400 for a malformed request is plain text; ours is the OpenAI envelope.
        self._refuse(400, "Bad Request", msg)

    def on_headers_complete(self) -> None:
        self._cancel_head_deadline()
        self._reading_head = False
        self._head_bytes, self._head_tail = 0, b""
        super().on_headers_complete()
        self._served += 1
        if self._served >= self.limits.keep_alive_requests and self.cycle is not None:
            self.cycle.keep_alive = False

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._reading_head = True

    def on_response_complete(self) -> None:
        self._idle_since = self.loop.time()
        super().on_response_complete()


def protocol_for(limits: Http) -> type[GuardedHttpToolsProtocol]:
    return type("InhouseHttpProtocol", (GuardedHttpToolsProtocol,), {"limits": limits})


def uvicorn_config(app: Any, settings: Settings, **extra: Any) -> Any:
    """The one uvicorn configuration, shared by `inhouse serve` and the test harness."""
    import uvicorn

    http = settings.http
    options: dict[str, Any] = {
        "host": settings.host,
        "port": settings.port,
        "http": protocol_for(http),
        "timeout_keep_alive": http.keep_alive_seconds,
        "limit_concurrency": None,  # requests are capped by InFlight; uvicorn's cap counts idle sockets too
        "backlog": 2048,
        "server_header": False,
        "log_level": settings.log_level,
        "access_log": settings.access_log,
        "lifespan": "on",
    }
    options.update(extra)
    return uvicorn.Config(app, **options)
