"""Pure-ASGI middleware: a request id on every answer, a cap on requests in progress, body caps and deadlines."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from inhouse import observability
from inhouse.api.errors import envelope, request_id_of

_REFUSED = observability.REFUSED.labels("http")


class RequestContext:
    """Gives each request an id and stamps `x-request-id` on its answer."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = request_id_of(scope)

        async def stamped(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                if not any(k.lower() == b"x-request-id" for k, _ in headers):
                    headers.append((b"x-request-id", rid.encode()))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, stamped)


class InFlight:
    """Caps requests in progress; the next gets 503 with Retry-After. Idle connections never count.

    A request is in progress until its answer is sent; a client that stops reading it (the server's send
    blocks on a full socket) for `send_timeout` is cut off, so it cannot keep a slot, here or in a model."""

    def __init__(self, app: ASGIApp, limit: int, send_timeout: float) -> None:
        self.app = app
        self.limit = limit
        self.send_timeout = send_timeout
        self.active = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self.active >= self.limit:
            _REFUSED.inc()
            response = envelope(503, "The server is handling as many requests as it can; retry shortly.",
                                type="server_error", code="server_busy", request_id=request_id_of(scope),
                                headers={"retry-after": "1", "retry-after-ms": "1000"})
            await response(scope, receive, send)
            return
        async def bounded_send(message: Message) -> None:
            async with asyncio.timeout(self.send_timeout):
                await send(message)

        self.active += 1
        try:
            await self.app(scope, receive, bounded_send)
        finally:
            self.active -= 1


class BodyLimit:
    """Refuses a body over its cap (413) or one that stalls (408), and closes the connection either way.

    The cap comes from the route (`cap_for`), never from what the client says the body is. The stall
    deadline counts only time spent waiting for the client, not time the app spends on what it got, and ends
    with the body: an answer that streams for longer is not cut (send_timeout guards a client that stops
    reading)."""

    def __init__(self, app: ASGIApp, cap_for: Callable[[Scope], int], stall_seconds: float) -> None:
        self.app = app
        self.cap_for = cap_for
        self.stall_seconds = stall_seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        cap = self.cap_for(scope)
        length = _header(scope, b"content-length")
        if length is not None and length.isdigit() and length.isascii() and int(length) > cap:
            await _refusal(413, f"Request body is larger than the {cap} byte limit.", "request_too_large",
                           scope)(scope, receive, send)
            return
        seen = 0
        refused = False
        started = False
        complete = False  # the whole body is in: later receives wait for a disconnect, without a deadline

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if refused:
                return  # the 413/408 already went out; the app's own answer is dropped
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        async def refuse(status: int, message: str, code: str) -> Message:
            nonlocal refused
            # Answer here rather than raise: body parsers upstream would turn an exception into
            # their own 400. The app then sees a disconnect and stops reading.
            if not started:
                await _refusal(status, message, code, scope)(scope, receive, send)
            refused = True
            return {"type": "http.disconnect"}

        async def counted() -> Message:
            nonlocal seen, complete
            if refused:
                return {"type": "http.disconnect"}
            if complete:  # a streamed answer listening for the client to leave: as long as the answer takes
                return await receive()
            try:
                async with asyncio.timeout(self.stall_seconds):
                    message = await receive()
            except TimeoutError:
                return await refuse(408, f"The request body stalled for {self.stall_seconds:g} s.",
                                    "request_timeout")
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > cap:
                    return await refuse(413, f"Request body is larger than the {cap} byte limit.",
                                        "request_too_large")
                complete = not message.get("more_body", False)
            return message

        await self.app(scope, counted, guarded_send)


def _refusal(status: int, message: str, code: str, scope: Scope) -> Any:
    # Connection: close, so the server stops reading a body nobody will use.
    return envelope(status, message, code=code, request_id=request_id_of(scope), headers={"connection": "close"})


def _header(scope: Scope, name: bytes) -> str | None:
    for k, v in scope.get("headers", []):
        if k.lower() == name:
            return str(v.decode("latin-1"))
    return None
