"""Idempotency-Key on POSTs, as ASGI middleware: hash the body as it streams, keep the first answer."""

from __future__ import annotations

import hashlib

from python_multipart.multipart import parse_options_header
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from inhouse.api.auth import CALLER_KEY
from inhouse.api.errors import error_response, request_id_of
from inhouse.errors import InhouseError
from inhouse.services.idempotency import IdempotencyService, Replay
from inhouse.services.keys import Caller

MAX_STORED_BODY = 1024 * 1024
# Answers that a retry could change are not kept: the retry runs again instead.
_NOT_KEPT = {401, 403, 408, 409, 413, 429, 499}  # 499: the client left; its retry must run
_MAX_KEY_LEN = 255


class BodyHasher:
    """SHA-256 of a request with its multipart boundary masked, since clients draw a new one per attempt."""

    def __init__(self, boundary: bytes | None) -> None:
        self._h = hashlib.sha256()
        self._b = boundary
        self._carry = b""
        self.complete = False

    def update(self, data: bytes) -> None:
        if not self._b:
            self._h.update(data)
            return
        pieces = (self._carry + data).split(self._b)
        for piece in pieces[:-1]:
            self._h.update(piece)
            self._h.update(b"\x00BOUNDARY\x00")
        tail = pieces[-1]
        keep = len(self._b) - 1
        if len(tail) > keep:
            self._h.update(tail[: len(tail) - keep])
            tail = tail[len(tail) - keep :]
        self._carry = tail

    def hexdigest(self) -> str:
        self._h.update(self._carry)
        self._carry = b""
        return self._h.hexdigest()


class Idempotency:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        headers = {k.lower(): v for k, v in scope.get("headers", [])}
        key_raw = headers.get(b"idempotency-key")
        if not key_raw:
            await self.app(scope, receive, send)
            return
        key = key_raw.decode("latin-1")[:_MAX_KEY_LEN]
        service: IdempotencyService = scope["app"].state.services.idempotency
        # Keys are per API key (Authenticate ran first): the same key from two API keys never collides.
        caller = scope.get(CALLER_KEY)
        if not isinstance(caller, Caller):
            await self.app(scope, receive, send)  # a public route: nothing to replay
            return
        owner = caller.key_id or f"open:{caller.project.id}"
        ctype, params = parse_options_header(headers.get(b"content-type", b""))
        hasher = BodyHasher(params.get(b"boundary") if ctype == b"multipart/form-data" else None)
        hasher.update(f"{scope['path']}?{scope.get('query_string', b'').decode('latin-1')}\n".encode())
        if headers.get(b"content-length", b"0") == b"0" and b"transfer-encoding" not in headers:
            hasher.complete = True  # no body (cancel): nothing to wait for

        async def hashing_receive() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                hasher.update(message.get("body", b""))
                if not message.get("more_body", False):
                    hasher.complete = True
            return message

        existing = await service.claim(owner, key)
        if existing is not None:
            while not hasher.complete:
                if (await hashing_receive())["type"] != "http.request":
                    return
            try:
                replay = service.replay_for(existing, hasher.hexdigest())
            except InhouseError as exc:
                await error_response(exc, request_id_of(scope))(scope, receive, send)
                return
            await _send_replay(replay, scope, send)
            return

        status: int | None = None
        ctype_out = "application/json"
        body = bytearray()
        keep = True
        settled = False

        async def settle() -> None:
            # Runs before the answer's last byte leaves: a client that retries the moment it has
            # the answer must find it stored (or the claim released), never still "in flight".
            nonlocal settled
            if settled:
                return
            settled = True
            if (
                keep
                and hasher.complete
                and status is not None
                and status < 500
                and status not in _NOT_KEPT
                and "event-stream" not in ctype_out
            ):
                await service.finish(owner, key, hasher.hexdigest(), Replay(status, ctype_out, bytes(body)))
            else:
                await service.abort(owner, key)

        async def capture(message: Message) -> None:
            nonlocal status, ctype_out, keep
            if message["type"] == "http.response.start":
                status = message["status"]
                for k, v in message.get("headers", []):
                    if k.lower() == b"content-type":
                        ctype_out = v.decode("latin-1")
            elif message["type"] == "http.response.body":
                if keep:
                    body.extend(message.get("body", b""))
                    if len(body) > MAX_STORED_BODY:
                        keep = False
                        body.clear()
                if not message.get("more_body", False):
                    await settle()
            await send(message)

        try:
            await self.app(scope, hashing_receive, capture)
        except BaseException:
            if not settled:
                settled = True
                await service.abort(owner, key)
            raise
        await settle()


async def _send_replay(replay: Replay, scope: Scope, send: Send) -> None:
    await send({
        "type": "http.response.start",
        "status": replay.status_code,
        "headers": [
            (b"content-type", replay.content_type.encode("latin-1")),
            (b"content-length", str(len(replay.body)).encode()),
            (b"x-request-id", request_id_of(scope).encode()),
            (b"idempotent-replayed", b"true"),
        ],
    })
    await send({"type": "http.response.body", "body": replay.body})
