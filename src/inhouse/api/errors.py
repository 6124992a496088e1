"""One table from domain error to HTTP status, and the OpenAI error envelope on every non-2xx answer."""

from __future__ import annotations

import logging
import math
import secrets
from collections.abc import MutableMapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from inhouse.errors import (
    DOMAIN_STATUS,
    InhouseError,
    RangeNotSatisfiable,
    Unavailable,
    validation_text,
)
from inhouse.services.idempotency import IdempotencyInFlight

log = logging.getLogger("inhouse.api")

# 409 (in flight) is retried by the SDK on purpose; every other 4xx is final.
STATUS: dict[type[InhouseError], int] = {**DOMAIN_STATUS, IdempotencyInFlight: 409}

REQUEST_ID_KEY = "inhouse.request_id"


def request_id_of(scope: MutableMapping[str, Any]) -> str:
    rid = scope.get(REQUEST_ID_KEY)
    if not isinstance(rid, str):
        rid = "req_" + secrets.token_hex(16)
        scope[REQUEST_ID_KEY] = rid
    return rid


def status_of(exc: InhouseError) -> int:
    for cls in type(exc).__mro__:
        if cls in STATUS:
            return STATUS[cls]
    return 400


def _encodable(text: str) -> str:
    return text.encode("utf-8", "replace").decode("utf-8")


def envelope(
    status: int,
    message: str,
    *,
    type: str = "invalid_request_error",
    param: str | None = None,
    code: str | None = None,
    headers: dict[str, str] | None = None,
    request_id: str | None = None,
) -> JSONResponse:
    out = dict(headers or {})
    if request_id:
        out["x-request-id"] = request_id
    # Messages and params may quote the client; a lone surrogate in them must not fail the error answer itself.
    message = _encodable(message)
    param = None if param is None else _encodable(param)
    body = {"error": {"message": message, "type": type, "param": param, "code": code}}
    return JSONResponse(body, status_code=status, headers=out)


def error_response(exc: InhouseError, request_id: str | None = None) -> JSONResponse:
    status = status_of(exc)
    headers: dict[str, str] = {}
    retry_after = getattr(exc, "retry_after_s", None)
    if isinstance(retry_after, float | int):
        headers["retry-after"] = str(max(1, math.ceil(retry_after)))
        headers["retry-after-ms"] = str(int(retry_after * 1000))
    if isinstance(exc, RangeNotSatisfiable):
        headers["content-range"] = f"bytes */{exc.size}"
    if status >= 500 and not isinstance(exc, Unavailable):
        headers["x-should-retry"] = "false"
    type_ = exc.type
    if status == 401:
        type_ = "invalid_request_error"
    return envelope(status, exc.message, type=type_, param=exc.param, code=exc.code, headers=headers,
                    request_id=request_id)


def validation_message(exc: RequestValidationError) -> tuple[str, str | None]:
    return validation_text(exc.errors())


def install(app: FastAPI) -> None:
    async def on_domain(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, InhouseError)
        return error_response(exc, request_id_of(request.scope))

    async def on_validation(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        message, param = validation_message(exc)
        return envelope(400, message, param=param, request_id=request_id_of(request.scope))

    async def on_http(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        if exc.status_code == 404:
            message = f"Invalid URL ({request.method} {request.url.path})"
        elif exc.status_code == 405:
            message = f"Method {request.method} is not allowed for {request.url.path}"
        else:
            message = str(exc.detail)
        return envelope(exc.status_code, message, request_id=request_id_of(request.scope),
                        headers=dict(exc.headers or {}))

    async def on_disconnect(request: Request, exc: Exception) -> Response:
        # The client went away (or a body cap already answered): nothing to say, nothing to log.
        return Response(status_code=499)

    async def on_crash(request: Request, exc: Exception) -> JSONResponse:
        rid = request_id_of(request.scope)
        log.exception("unhandled error in %s %s (%s)", request.method, request.url.path, rid)
        return envelope(500, "The server had an error while processing your request. Sorry about that!",
                        type="server_error", request_id=rid)

    app.add_exception_handler(InhouseError, on_domain)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(StarletteHTTPException, on_http)
    app.add_exception_handler(ClientDisconnect, on_disconnect)
    app.add_exception_handler(Exception, on_crash)
