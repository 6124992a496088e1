"""Domain errors raised by services; api/errors.py maps them to HTTP statuses and the OpenAI envelope.

InhouseError
 ├── InvalidRequest        bad input or an invalid state transition (400)
 ├── AuthenticationFailed  missing or wrong API key (401)
 ├── PermissionDenied      the key may not do this (403)
 ├── NotFound              missing, or belongs to another project (404)
 ├── IdempotencyConflict   same Idempotency-Key, other body (422)
 ├── RequestTooLarge       body over its cap (413)
 ├── RangeNotSatisfiable   a download's byte range names no byte of it (416, Content-Range)
 ├── Overloaded            a bounded queue is full (429, Retry-After)
 ├── Unavailable           a dependency is down or a model cannot load (503)
 ├── StorageFailure        a write could not be made durable (507)
 └── EngineFailure         a model is missing or failed to load (500, not retried)
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any


class InhouseError(Exception):
    type: str = "invalid_request_error"

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code


class InvalidRequest(InhouseError):
    pass


class AuthenticationFailed(InhouseError):
    pass


class PermissionDenied(InhouseError):
    pass


class NotFound(InhouseError):
    pass


class IdempotencyConflict(InhouseError):
    pass


class RequestTooLarge(InhouseError):
    pass


class RangeNotSatisfiable(InhouseError):
    def __init__(self, message: str, *, size: int) -> None:
        super().__init__(message, param="range", code="range_not_satisfiable")
        self.size = size  # the content's: the answer says it (Content-Range: bytes */size)


class Overloaded(InhouseError):
    type = "rate_limit_error"

    def __init__(self, message: str, *, retry_after_s: float = 1.0, code: str | None = None) -> None:
        super().__init__(message, code=code)
        self.retry_after_s = retry_after_s


class Unavailable(InhouseError):
    type = "server_error"

    def __init__(self, message: str, *, retry_after_s: float = 5.0, code: str | None = None) -> None:
        super().__init__(message, code=code)
        self.retry_after_s = retry_after_s


class StorageFailure(InhouseError):
    type = "server_error"


class EngineFailure(InhouseError):
    type = "server_error"


# The HTTP status of each error (api/errors.py adds its own); a batch line's failure reports the same one.
DOMAIN_STATUS: dict[type[InhouseError], int] = {
    InvalidRequest: 400,
    AuthenticationFailed: 401,
    PermissionDenied: 403,
    NotFound: 404,
    RequestTooLarge: 413,
    RangeNotSatisfiable: 416,
    IdempotencyConflict: 422,
    Overloaded: 429,
    Unavailable: 503,
    StorageFailure: 507,
    EngineFailure: 500,
}


def http_status(exc: InhouseError) -> int:
    for cls in type(exc).__mro__:
        if cls in DOMAIN_STATUS:
            return DOMAIN_STATUS[cls]
    return 400


_TYPE_TAG = re.compile(r"^(str|int|float|bool|none|[a-z-]+\[.*\]|function-.*|json-or-python.*)$")


def _param(loc: tuple[Any, ...]) -> str | None:
    parts: list[str] = []
    for p in loc:
        if p in ("body", "query", "path", "header"):
            continue
        if isinstance(p, str) and _TYPE_TAG.match(p):
            break  # a union member's tag: the caller named the field, not our type alternatives
        parts.append(str(p))
    if not parts:
        return None
    out = parts[0]
    for p in parts[1:]:
        out += f"[{p}]" if p.isdigit() else f".{p}"
    return out


def validation_text(errors: Sequence[Any]) -> tuple[str, str | None]:
    """The 400 message and param of a failed validation (pydantic's `errors()`): what the routes answer and
    what a batch line that fails the same validation reports."""
    if not errors:
        return "Invalid request.", None
    first = errors[0]
    loc = tuple(first.get("loc", ()))
    if first.get("type") == "json_invalid":
        return (
            "We could not parse the JSON body of your request. (HINT: This likely means you aren't using your "
            "HTTP library correctly. The OpenAI API expects a JSON payload.)",
            None,
        )
    param = _param(loc)
    if first.get("type") == "missing":
        return f"Missing required parameter: '{param}'.", param
    msg = str(first.get("msg", "Invalid value"))
    return (f"Invalid value for '{param}': {msg}." if param else f"Invalid request: {msg}."), param
