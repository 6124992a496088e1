"""Shared wire shapes: the error envelope and list wrappers."""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, ConfigDict, model_validator

# JSON may escape a lone UTF-16 surrogate ("\ud800"); no UTF-8 encoder, database or tokenizer takes one.
_SURROGATE = re.compile("[\ud800-\udfff]")


class Error(BaseModel):
    message: str
    type: str
    param: str | None
    code: str | None


class ErrorResponse(BaseModel):
    error: Error


def lone_surrogate_at(value: Any) -> str | None:
    """Where in a decoded JSON value a string (or key) holds a lone surrogate: '' for the value itself, or a
    path such as 'messages[0].content'; None when there is none. Iterative, so no nesting depth can break it."""
    stack: list[tuple[str, Any]] = [("", value)]
    while stack:
        path, v = stack.pop()
        if isinstance(v, str):
            if _SURROGATE.search(v):
                return path
        elif isinstance(v, dict):
            for k, item in v.items():
                sub = f"{path}.{k}" if path else str(k)
                if isinstance(k, str) and _SURROGATE.search(k):
                    return sub
                stack.append((sub, item))
        elif isinstance(v, list):
            stack.extend((f"{path}[{i}]", item) for i, item in enumerate(v))
    return None


def valid_unicode(value: Any) -> Any:
    """A validator for a whole request body: a lone surrogate anywhere is a 400, before any service sees it."""
    where = lone_surrogate_at(value)
    if where is not None:
        where = _SURROGATE.sub("?", where)  # the path may run through a key that holds one
        raise ValueError(f"'{where or 'body'}' is not valid Unicode (it holds a lone surrogate such as \\ud800)")
    return value


class Request(BaseModel):
    """Base of request bodies: unknown keys are ignored, since real clients send extras."""

    model_config = ConfigDict(extra="ignore")

    @model_validator(mode="before")
    @classmethod
    def _valid_unicode(cls, data: Any) -> Any:
        return valid_unicode(data)
