"""Metering at the HTTP edge: per-key and per-project rate limits (429 before the body is read, x-ratelimit-*
headers on every answer of a limited key) and the `Meter` each model route counts its usage with."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from inhouse.api.auth import CALLER_KEY
from inhouse.api.deps import CallerDep
from inhouse.api.errors import error_response, request_id_of
from inhouse.services.keys import Caller
from inhouse.services.rate_limits import RateLimiter, RateLimitExceeded, limits_of
from inhouse.services.usage import Meter, UsageService

# The routes a request limit counts and usage is recorded for: the ones that run a model.
METERED = frozenset({"/v1/embeddings", "/v1/chat/completions", "/v1/completions", "/v1/images/generations",
                     "/v1/images/edits", "/v1/images/variations"})
_METERS = "inhouse.meters"


class RateLimit:
    """Pure ASGI, right after authentication: a limited key's request to a model route takes one request from its
    key's bucket and its project's (whichever have a request limit), or gets 429 before any byte of body is read.
    Every answer of a limited key (its own limits or its project's) carries OpenAI's x-ratelimit-* headers as they
    stand when the answer starts. Keys without limits, in projects without limits, pass straight through."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        caller = scope.get(CALLER_KEY) if scope["type"] == "http" else None
        if not isinstance(caller, Caller) or caller.key_id is None:
            await self.app(scope, receive, send)
            return
        services = scope["app"].state.services
        usage: UsageService = services.usage
        usage.touch(caller.key_id)
        requests, tokens = limits_of(caller, "requests"), limits_of(caller, "tokens")
        if not requests and not tokens:
            await self.app(scope, receive, send)
            return
        limiter: RateLimiter = services.rate_limits
        if requests and scope["method"] == "POST" and scope["path"] in METERED:
            try:
                limiter.take("requests", requests, 1)
            except RateLimitExceeded as exc:
                response = error_response(exc, request_id_of(scope))
                response.raw_headers += limiter.headers(requests, tokens)
                if _has_body(scope):
                    response.headers["connection"] = "close"  # the body is never read
                await response(scope, receive, send)
                return

        meters: list[Meter] = []

        async def stamped(message: Message) -> None:
            if message["type"] == "http.response.start":
                extra = limiter.headers(requests, tokens)
                if any(m.hopeless for m in meters):
                    extra.append((b"x-should-retry", b"false"))  # the SDK would otherwise retry a 429
                message["headers"] = [*message.get("headers", []), *extra]
            await send(message)

        scope[_METERS] = meters
        try:
            await self.app(scope, receive, stamped)
        finally:
            for meter in meters:
                meter.close()  # give back an estimate the route never settled (its work failed)


async def get_meter(request: Request, caller: CallerDep) -> Meter:
    usage: UsageService = request.app.state.services.usage
    path: str = request.scope["path"]
    # The endpoint recorded comes from the fixed set above (the route's own path, under /v1), never a raw path.
    meter = usage.meter(caller, path if path in METERED else "/v1" + request.scope["route"].path)
    meters = request.scope.get(_METERS)
    if meters is not None:
        meters.append(meter)
    return meter


MeterDep = Annotated[Meter, Depends(get_meter)]


def _has_body(scope: Scope) -> bool:
    headers = dict(scope.get("headers", []))
    return b"transfer-encoding" in headers or headers.get(b"content-length", b"0") not in (b"0", b"")
