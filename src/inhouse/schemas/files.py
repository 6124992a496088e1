"""Files wire models: OpenAIFile, ListFilesResponse, DeleteFileResponse, FileExpirationAfter."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel

from inhouse.storage.records import FileRecord

FilePurpose = Literal[
    "assistants",
    "assistants_output",
    "batch",
    "batch_output",
    "fine-tune",
    "fine-tune-results",
    "vision",
    "user_data",
    "evals",
]


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

    @classmethod
    def of(cls, rec: FileRecord) -> OpenAIFile:
        return cls(
            id=rec.id,
            bytes=rec.bytes,
            created_at=rec.created_at,
            expires_at=rec.expires_at,
            filename=rec.filename,
            purpose=rec.purpose,  # type: ignore[arg-type]
            status=rec.status,  # type: ignore[arg-type]
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
