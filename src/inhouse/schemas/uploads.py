"""Uploads wire models: CreateUploadRequest, CompleteUploadRequest, Upload, UploadPart."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, SerializerFunctionWrapHandler, model_serializer

from inhouse.records import FileRecord, UploadPartRecord, UploadRecord
from inhouse.schemas.common import Request
from inhouse.schemas.files import FileExpirationAfter, OpenAIFile


class CreateUploadRequest(Request):
    filename: str
    purpose: str
    bytes: int
    mime_type: str
    expires_after: FileExpirationAfter | None = None


class CompleteUploadRequest(Request):
    part_ids: list[str]
    md5: str | None = None


class Upload(BaseModel):
    id: str
    object: Literal["upload"] = "upload"
    created_at: int
    filename: str
    bytes: int
    purpose: str
    status: Literal["pending", "completed", "cancelled", "expired"]
    expires_at: int
    file: OpenAIFile | None = None

    @model_serializer(mode="wrap")
    def _omit_no_file(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data: dict[str, Any] = handler(self)
        if data.get("file") is None:
            data.pop("file", None)
        return data

    @classmethod
    def of(cls, rec: UploadRecord, file: FileRecord | None) -> Upload:
        return cls(
            id=rec.id,
            created_at=rec.created_at,
            filename=rec.filename,
            bytes=rec.bytes,
            purpose=rec.purpose,
            status=rec.status,
            expires_at=rec.expires_at,
            file=OpenAIFile.of(file) if file is not None else None,
        )


class UploadPart(BaseModel):
    id: str
    object: Literal["upload.part"] = "upload.part"
    created_at: int
    upload_id: str

    @classmethod
    def of(cls, rec: UploadPartRecord) -> UploadPart:
        return cls(id=rec.id, created_at=rec.created_at, upload_id=rec.upload_id)
