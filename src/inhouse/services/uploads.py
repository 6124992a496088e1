"""Uploads: a large file sent in parts, assembled in order into one blob by streaming, then a File."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import replace

from inhouse.config import Limits
from inhouse.errors import InvalidRequest, NotFound, RequestTooLarge, StorageFailure
from inhouse.ids import new_id, now
from inhouse.records import FileRecord, UploadPartRecord, UploadRecord
from inhouse.services.blob_keys import file_blob_key, part_blob_key
from inhouse.services.filenames import sanitize_filename
from inhouse.services.files import (
    CREATE_PURPOSES,
    ExpiresAfter,
    FilesService,
    check_expires_after,
    check_purpose,
    storage_failure,
)
from inhouse.storage.base import BlobStore, BlobWriter, UploadStore


class PartIntake:
    """One part arriving as a stream, capped at the part limit."""

    def __init__(self, service: UploadsService, project_id: str, upload: UploadRecord) -> None:
        self._service = service
        self._project_id = project_id
        self._upload = upload
        self.part_id = new_id("part")
        self._writer: BlobWriter = service.blobs.writer(part_blob_key(self.part_id))
        self._size = 0
        self._done = False

    async def write(self, data: bytes) -> None:
        self._size += len(data)
        cap = self._service.limits.max_upload_part_bytes
        if self._size > cap:
            await self.abort()
            raise RequestTooLarge(f"Upload parts must be at most {cap} bytes.", param="data")
        try:
            await self._writer.write(data)
        except OSError as exc:
            await self.abort()
            raise storage_failure(exc) from exc

    async def abort(self) -> None:
        if not self._done:
            self._done = True
            await self._writer.abort()

    async def finish(self) -> UploadPartRecord:
        try:
            size, sha256 = await self._writer.commit()
        except OSError as exc:
            self._done = True
            raise storage_failure(exc) from exc
        self._done = True
        part = UploadPartRecord(self.part_id, self._upload.id, self._service.clock(), size, sha256)
        if not await self._service.store.insert_upload_part(self._project_id, part):
            await self._service.blobs.delete(part_blob_key(self.part_id))
            current = await self._service.get(self._project_id, self._upload.id)
            raise InvalidRequest(
                f"Cannot add a part to an Upload with status {current.status!r}.", param="upload_id"
            )
        return part


class UploadsService:
    def __init__(
        self,
        store: UploadStore,
        blobs: BlobStore,
        files: FilesService,
        limits: Limits,
        clock: Callable[[], int] = now,
    ) -> None:
        self.store = store
        self.blobs = blobs
        self.files = files
        self.limits = limits
        self.clock = clock

    def _effective(self, upload: UploadRecord) -> UploadRecord:
        # An Upload past its hour reads as expired even before the sweeper gets to it.
        if upload.status == "pending" and upload.expires_at <= self.clock():
            return replace(upload, status="expired")
        return upload

    async def get(self, project_id: str, upload_id: str) -> UploadRecord:
        upload = await self.store.get_upload(project_id, upload_id)
        if upload is None:
            raise NotFound(f"No such Upload object: {upload_id}", param="upload_id")
        return self._effective(upload)

    async def file_of(self, project_id: str, upload: UploadRecord) -> FileRecord | None:
        if upload.file_id is None:
            return None
        return await self.files.find(project_id, upload.file_id)

    async def create(
        self,
        project_id: str,
        *,
        filename: str,
        purpose: str,
        bytes: int,
        mime_type: str,
        expires_after: ExpiresAfter | None,
    ) -> UploadRecord:
        check_purpose(purpose)
        if not 0 < bytes <= self.limits.max_upload_bytes:
            raise InvalidRequest(f"bytes must be between 1 and {self.limits.max_upload_bytes}.", param="bytes")
        if bytes > self.files.size_cap(purpose):
            raise InvalidRequest(f"Files with purpose {purpose!r} are limited to "
                                 f"{self.files.size_cap(purpose)} bytes.", param="bytes")
        if not mime_type.strip():
            raise InvalidRequest("mime_type must not be empty.", param="mime_type")
        check_expires_after(expires_after)
        created = self.clock()
        upload = UploadRecord(
            id=new_id("upload"),
            project_id=project_id,
            filename=sanitize_filename(filename),
            purpose=purpose,
            bytes=bytes,
            mime_type=mime_type[:255],
            status="pending",
            created_at=created,
            expires_at=created + self.limits.upload_ttl_seconds,
            file_expires_after=expires_after.seconds if expires_after else None,
            file_id=None,
        )
        await self.store.insert_upload(upload)
        return upload

    async def _pending(self, project_id: str, upload_id: str, verb: str) -> UploadRecord:
        upload = await self.get(project_id, upload_id)
        if upload.status != "pending":
            raise InvalidRequest(f"Cannot {verb} an Upload with status {upload.status!r}.", param="upload_id")
        return upload

    async def begin_part(self, project_id: str, upload_id: str) -> PartIntake:
        return PartIntake(self, project_id, await self._pending(project_id, upload_id, "add a part to"))

    async def complete(
        self, project_id: str, upload_id: str, part_ids: list[str], md5: str | None
    ) -> UploadRecord:
        upload = await self._pending(project_id, upload_id, "complete")
        if not part_ids:
            raise InvalidRequest("part_ids must not be empty.", param="part_ids")
        if len(set(part_ids)) != len(part_ids):
            raise InvalidRequest("part_ids must not repeat a part.", param="part_ids")
        parts = {p.id: p for p in await self.store.get_upload_parts(upload.id)}
        for pid in part_ids:
            if pid not in parts:
                raise InvalidRequest(f"No such part in this Upload: {pid}", param="part_ids")
        total = sum(parts[pid].bytes for pid in part_ids)
        if total != upload.bytes:
            raise InvalidRequest(
                f"The parts add up to {total} bytes, but the Upload was created with bytes={upload.bytes}.",
                param="bytes",
            )
        intake = self.files.begin_create(project_id, upload.purpose)
        digest = hashlib.md5(usedforsecurity=False)
        try:
            for pid in part_ids:
                async for chunk in self.blobs.read(part_blob_key(pid)):
                    digest.update(chunk)
                    await intake.write(chunk)
            if md5 is not None and md5.strip().lower() != digest.hexdigest():
                raise InvalidRequest("The md5 checksum does not match the uploaded bytes.", param="md5")
        except FileNotFoundError:
            # A concurrent cancel, expiry or complete won the Upload and dropped its parts meanwhile.
            await intake.abort()
            current = await self.get(project_id, upload_id)
            if current.status == "pending":
                raise StorageFailure("A part of this Upload is missing from storage.", param="part_ids",
                                     code="storage_error") from None
            raise InvalidRequest(f"Cannot complete an Upload with status {current.status!r}.",
                                 param="upload_id") from None
        except BaseException:
            await intake.abort()
            raise
        expires = ExpiresAfter("created_at", upload.file_expires_after) if upload.file_expires_after else None
        # The File row and the Upload's completion are written in one transaction below, so the
        # intake's own commit step is done by hand here.
        file = await intake.finish_unrecorded(upload.filename, upload.purpose, expires)
        if not await self.store.complete_upload(upload.id, file):
            await self.blobs.delete(file_blob_key(file.id))
            current = await self.get(project_id, upload_id)
            raise InvalidRequest(f"Cannot complete an Upload with status {current.status!r}.", param="upload_id")
        await self._drop_parts(upload.id)
        return replace(upload, status="completed", file_id=file.id)

    async def cancel(self, project_id: str, upload_id: str) -> UploadRecord:
        upload = await self._pending(project_id, upload_id, "cancel")
        if not await self.store.set_upload_status(upload.id, expect="pending", status="cancelled"):
            current = await self.get(project_id, upload_id)
            raise InvalidRequest(f"Cannot cancel an Upload with status {current.status!r}.", param="upload_id")
        await self._drop_parts(upload.id)
        return replace(upload, status="cancelled")

    async def _drop_parts(self, upload_id: str) -> None:
        for part in await self.store.get_upload_parts(upload_id):
            await self.blobs.delete(part_blob_key(part.id))
        await self.store.delete_upload_parts(upload_id)

    async def expire(self, upload: UploadRecord) -> None:
        if await self.store.set_upload_status(upload.id, expect="pending", status="expired"):
            await self._drop_parts(upload.id)


__all__ = ["CREATE_PURPOSES", "PartIntake", "UploadsService"]
