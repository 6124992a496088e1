"""Shared wire shapes: the error envelope and list wrappers."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Error(BaseModel):
    message: str
    type: str
    param: str | None
    code: str | None


class ErrorResponse(BaseModel):
    error: Error


class Request(BaseModel):
    """Base of request bodies: unknown keys are ignored, since real clients send extras."""

    model_config = ConfigDict(extra="ignore")
