"""Domain errors raised by services; api/errors.py maps them to HTTP statuses and the OpenAI envelope.

InhouseError
 ├── InvalidRequest        bad input or an invalid state transition (400)
 ├── AuthenticationFailed  missing or wrong API key (401)
 ├── PermissionDenied      the key may not do this (403)
 ├── NotFound              missing, or belongs to another project (404)
 ├── IdempotencyConflict   same Idempotency-Key, other body (422)
 ├── RequestTooLarge       body over its cap (413)
 ├── Overloaded            a bounded queue is full (429, Retry-After)
 ├── Unavailable           a dependency is down or a model cannot load (503)
 ├── StorageFailure        a write could not be made durable (507)
 └── EngineFailure         a model is missing or failed to load (500, not retried)
"""

from __future__ import annotations


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
