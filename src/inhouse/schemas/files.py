"""Files wire models: OpenAIFile, ListFilesResponse, DeleteFileResponse, FileExpirationAfter."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, SerializerFunctionWrapHandler, model_serializer

from inhouse.records import FileRecord

FilePurpose = Literal[
    "assistants",
    "assistants_output",
    "batch",
    "batch_output",
    "fine-tune",
    "fine-tune-results",
    "vision",
    "user_data",
]

# The spec accepts purpose=evals on create but OpenAIFile.purpose (and the SDK's type) has no `evals`:
# such files are kept as `evals` (so `purpose=evals` filters work) and reported as `user_data`.
_WIRE_PURPOSE = {"evals": "user_data"}


class OpenAIFile(BaseModel):
    id: str
    object: Literal["file"] = "file"
    bytes: int
    created_at: int
    expires_at: int | None = None
    filename: str
    purpose: FilePurpose
    status: Literal["uploaded", "processed", "error"]
    status_details: str | None = None

    @model_serializer(mode="wrap")
    def _omit_unset(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # Optional in the spec and typed non-null there: leave them out rather than send null.
        data: dict[str, Any] = handler(self)
        for key in ("expires_at", "status_details"):
            if data.get(key) is None:
                data.pop(key, None)
        return data

    @classmethod
    def of(cls, rec: FileRecord) -> OpenAIFile:
        return cls(
            id=rec.id,
            bytes=rec.bytes,
            created_at=rec.created_at,
            expires_at=rec.expires_at,
            filename=rec.filename,
            purpose=_WIRE_PURPOSE.get(rec.purpose, rec.purpose),
            status=rec.status,
            status_details=rec.status_details,
        )


class ListFilesResponse(BaseModel):
    object: Literal["list"] = "list"
    data: list[OpenAIFile]
    first_id: str | None
    last_id: str | None
    has_more: bool


class DeleteFileResponse(BaseModel):
    id: str
    object: Literal["file"] = "file"
    deleted: bool


class FileExpirationAfter(BaseModel):
    anchor: str
    seconds: int
