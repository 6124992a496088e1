"""Pure-ASGI middleware: a request id on every answer, and body caps enforced while the body streams."""

from __future__ import annotations

from collections.abc import Callable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from inhouse.api.errors import envelope, request_id_of


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


class BodyLimit:
    """Refuses a body over its cap: at once when Content-Length says so, else once the count passes it."""

    def __init__(self, app: ASGIApp, cap_for: Callable[[Scope], int]) -> None:
        self.app = app
        self.cap_for = cap_for

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        cap = self.cap_for(scope)
        length = _header(scope, b"content-length")
        if length is not None and length.isdigit() and int(length) > cap:
            response = envelope(413, f"Request body is larger than the {cap} byte limit.",
                                code="request_too_large", request_id=request_id_of(scope))
            await response(scope, receive, send)
            return
        seen = 0
        refused = False
        started = False

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if refused:
                return  # the 413 already went out; the app's own answer is dropped
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        async def counted() -> Message:
            nonlocal seen, refused
            if refused:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > cap:
                    # Answer here rather than raise: body parsers upstream would turn an exception
                    # into their own 400. The app then sees a disconnect and stops reading.
                    if not started:
                        response = envelope(413, f"Request body is larger than the {cap} byte limit.",
                                            code="request_too_large", request_id=request_id_of(scope))
                        await response(scope, receive, send)
                    refused = True
                    return {"type": "http.disconnect"}
            return message

        await self.app(scope, counted, guarded_send)


def _header(scope: Scope, name: bytes) -> str | None:
    for k, v in scope.get("headers", []):
        if k.lower() == name:
            return str(v.decode("latin-1"))
    return None


def content_type(scope: Scope) -> str:
    return (_header(scope, b"content-type") or "").lower()
