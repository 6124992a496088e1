"""Models wire models: Model, ListModelsResponse, DeleteModelResponse."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel


class Model(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str


class ListModelsResponse(BaseModel):
    object: Literal["list"] = "list"
    data: list[Model]


class DeleteModelResponse(BaseModel):
    id: str
    object: Literal["model"] = "model"
    deleted: bool
