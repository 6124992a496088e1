"""The contract of models created here (fine-tunes): rows naming a base model and the blob of the weights."""

from __future__ import annotations

from typing import Protocol

from inhouse.records import ModelRecord


class ModelStore(Protocol):
    """Fine-tuned models, each owned by one project. A model row appears together with its job's success
    (`JobStore.finish_job_success`), never before its artifact is durable."""

    async def insert_model(self, model: ModelRecord) -> None:
        """Store a model whose artifact is already durable (a duplicate id or unknown project: the backend's
        integrity error)."""
        ...

    async def get_model(self, project_id: str, model_id: str) -> ModelRecord | None:
        """The project's model by id; None if the project has none by that id."""
        ...

    async def list_models(self, project_id: str) -> list[ModelRecord]:
        """The project's models, oldest first."""
        ...

    async def delete_model(self, project_id: str, model_id: str) -> bool:
        """Delete the project's model row; True only for the call that deleted it. Its artifact stays until the
        sweeper finds it unreferenced (`JobStore.referenced_artifacts`)."""
        ...
