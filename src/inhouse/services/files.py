"""Files: stream uploads into the blob store, check their content, then record them; list, read, delete."""

from __future__ import annotations

import errno
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from inhouse.config import Limits
from inhouse.errors import InvalidRequest, NotFound, RequestTooLarge, StorageFailure
from inhouse.ids import new_id, now
from inhouse.records import FileRecord, Page
from inhouse.services.blob_keys import file_blob_key
from inhouse.services.byte_range import ByteRange
from inhouse.services.checks import ContentCheck, ImageCheck, JsonlCheck, OffLoop
from inhouse.services.filenames import sanitize_filename
from inhouse.storage.base import BlobStore, BlobWriter, FileStore, Order

CREATE_PURPOSES = ("assistants", "batch", "fine-tune", "vision", "user_data", "evals")
MIN_EXPIRY_S, MAX_EXPIRY_S = 3600, 2_592_000
VISION_MAX_BYTES = 20 * 1024 * 1024



@dataclass(frozen=True, slots=True)
class ExpiresAfter:
    anchor: str
    seconds: int


def check_purpose(purpose: str | None) -> str:
    if purpose is None:
        raise InvalidRequest("Missing required parameter: 'purpose'.", param="purpose")
    if purpose not in CREATE_PURPOSES:
        allowed = ", ".join(f"'{p}'" for p in CREATE_PURPOSES)
        raise InvalidRequest(f"'{purpose}' is not one of [{allowed}] - 'purpose'", param="purpose")
    return purpose


def check_expires_after(value: ExpiresAfter | None) -> ExpiresAfter | None:
    if value is None:
        return None
    if value.anchor != "created_at":
        raise InvalidRequest("expires_after[anchor] must be 'created_at'.", param="expires_after[anchor]")
    if not MIN_EXPIRY_S <= value.seconds <= MAX_EXPIRY_S:
        raise InvalidRequest(
            f"expires_after[seconds] must be between {MIN_EXPIRY_S} and {MAX_EXPIRY_S}.",
            param="expires_after[seconds]",
        )
    return value


def storage_failure(exc: OSError) -> StorageFailure:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return StorageFailure("The server is out of storage space; the file was not saved.", code="storage_full")
    return StorageFailure("The file could not be stored durably; it was not saved.", code="storage_error")


class FileIntake:
    """One file arriving as a stream. Bytes go to a blob temporary; a row appears only after commit."""

    def __init__(self, service: FilesService, project_id: str, purpose: str | None) -> None:
        self._service = service
        self._project_id = project_id
        self._purpose = check_purpose(purpose) if purpose is not None else None
        self.file_id = new_id("file")
        self._writer: BlobWriter = service.blobs.writer(file_blob_key(self.file_id))
        self._size = 0
        self._cap = service.size_cap(self._purpose)
        self._check = service.content_check(self._purpose)
        self._done = False

    async def write(self, data: bytes) -> None:
        self._size += len(data)
        if self._size > self._cap:
            await self.abort()
            raise RequestTooLarge(f"File is larger than the {self._cap} byte limit.", param="file",
                                  code="file_too_large")
        try:
            if self._check is not None:
                await self._check.feed(data)
            await self._writer.write(data)
        except InvalidRequest:
            await self.abort()
            raise
        except OSError as exc:
            await self.abort()
            raise storage_failure(exc) from exc

    async def abort(self) -> None:
        if not self._done:
            self._done = True
            await self._writer.abort()

    async def finish(self, filename: str | None, purpose: str | None, expires_after: ExpiresAfter | None) -> FileRecord:
        """Check, commit the bytes, then insert the row (so a listed file always has its content)."""
        return await self._service.insert(await self.finish_unrecorded(filename, purpose, expires_after))

    async def finish_unrecorded(
        self, filename: str | None, purpose: str | None, expires_after: ExpiresAfter | None
    ) -> FileRecord:
        """Check and commit the bytes; the caller writes the row (alone, or inside a larger transaction)."""
        try:
            final_purpose = check_purpose(purpose if purpose is not None else self._purpose)
            expires = check_expires_after(expires_after)
            late = self._purpose is None  # the purpose arrived after the bytes (curl's usual order)
            if late and self._size > self._service.size_cap(final_purpose):
                raise RequestTooLarge("File is larger than the limit for its purpose.", param="file")
            if self._check is not None:
                await self._check.close()
        except BaseException:
            await self.abort()
            raise
        try:
            size, sha256 = await self._writer.commit()
        except OSError as exc:
            self._done = True
            raise storage_failure(exc) from exc
        self._done = True
        if late:
            await self._check_committed(final_purpose)
        return self._service.build_record(
            self.file_id, self._project_id, size, sha256, filename, final_purpose, expires
        )

    async def _check_committed(self, purpose: str) -> None:
        """Check bytes that streamed in before their purpose was known. They can be read back only once
        committed (the temporary is the writer's alone), so a failed check deletes the blob again; no row
        names it yet, and a crash in between leaves an orphan the sweeper removes."""
        check = self._service.content_check(purpose)
        if check is None:
            return
        key = file_blob_key(self.file_id)
        try:
            async for chunk in self._service.blobs.read(key):
                await check.feed(chunk)
            await check.close()
        except BaseException:
            await self._service.blobs.delete(key)
            raise


class FilesService:
    def __init__(self, store: FileStore, blobs: BlobStore, limits: Limits, clock: Callable[[], int] = now) -> None:
        self.store = store
        self.blobs = blobs
        self.limits = limits
        self.clock = clock

    def size_cap(self, purpose: str | None) -> int:
        if purpose == "batch":
            return min(self.limits.max_batch_file_bytes, self.limits.max_file_bytes)
        return self.limits.max_file_bytes

    def content_check(self, purpose: str | None) -> OffLoop | None:
        """The content check for `purpose`, run off the event loop (it parses JSON, or decodes an image)."""
        check: ContentCheck
        if purpose in ("fine-tune", "batch"):
            check = JsonlCheck(self.limits.max_jsonl_line_bytes)
        elif purpose == "vision":
            check = ImageCheck(VISION_MAX_BYTES, self.limits.max_image_pixels)
        else:
            return None
        return OffLoop(check)

    def begin_create(self, project_id: str, purpose: str | None) -> FileIntake:
        return FileIntake(self, project_id, purpose)

    def expiry(self, created_at: int, purpose: str, expires_after: ExpiresAfter | None) -> int | None:
        if expires_after is not None:
            return created_at + expires_after.seconds
        if purpose == "batch":
            return created_at + self.limits.batch_file_ttl_seconds
        return None

    def build_record(
        self,
        file_id: str,
        project_id: str,
        size: int,
        sha256: str,
        filename: str | None,
        purpose: str,
        expires_after: ExpiresAfter | None,
    ) -> FileRecord:
        created = self.clock()
        return FileRecord(
            id=file_id,
            project_id=project_id,
            bytes=size,
            created_at=created,
            expires_at=self.expiry(created, purpose, expires_after),
            filename=sanitize_filename(filename),
            purpose=purpose,
            status="processed",
            status_details=None,
            sha256=sha256,
        )

    async def store_output(self, project_id: str, filename: str, purpose: str, data: bytes) -> FileRecord:
        """A file the platform produces (e.g. fine-tune-results): bytes made durable, then the row."""
        file_id = new_id("file")
        writer = self.blobs.writer(file_blob_key(file_id))
        await writer.write(data)
        size, sha256 = await writer.commit()
        return await self.insert(self.build_record(file_id, project_id, size, sha256, filename, purpose, None))

    async def insert(self, rec: FileRecord) -> FileRecord:
        """The row for bytes already committed; if it cannot be written, the bytes go too (no orphan)."""
        try:
            await self.store.insert_file(rec)
        except BaseException:
            await self.blobs.delete(file_blob_key(rec.id))
            raise
        return rec

    async def find(self, project_id: str, file_id: str) -> FileRecord | None:
        """The project's live file, or None."""
        return await self.store.get_file(project_id, file_id, self.clock())

    async def retrieve(self, project_id: str, file_id: str) -> FileRecord:
        rec = await self.find(project_id, file_id)
        if rec is None:
            raise NotFound(f"No such File object: {file_id}", param="id")
        return rec

    async def list(
        self, project_id: str, *, purpose: str | None, after: str | None, limit: int, order: Order
    ) -> Page[FileRecord]:
        if not 1 <= limit <= self.limits.max_list_limit:
            raise InvalidRequest(f"limit must be between 1 and {self.limits.max_list_limit}.", param="limit")
        return await self.store.list_files(
            project_id, purpose=purpose, after=after, limit=limit, order=order, now=self.clock()
        )

    async def delete(self, project_id: str, file_id: str) -> str:
        if not await self.store.delete_file(project_id, file_id):
            raise NotFound(f"No such File object: {file_id}", param="id")
        # Row first, then bytes: a crash in between leaves an orphan blob that the sweeper removes,
        # never a listed file without content.
        await self.blobs.delete(file_blob_key(file_id))
        return file_id

    async def content(self, project_id: str, file_id: str, byte_range: ByteRange | None = None
                      ) -> tuple[FileRecord, tuple[int, int] | None, AsyncIterator[bytes]]:
        """The file's record, the (offset, length) of `byte_range` within it (None: the whole file) and those
        bytes, streamed. Raises NotFound, or RangeNotSatisfiable when the range names none of its bytes."""
        rec = await self.retrieve(project_id, file_id)
        if byte_range is not None and not byte_range.applies_to(etag(rec)):
            byte_range = None  # the client's copy is another content: the whole of this one
        span = None if byte_range is None else byte_range.within(rec.bytes)
        offset, length = span or (0, None)
        body = self.blobs.read(file_blob_key(file_id), offset=offset, length=length)
        # The blob is opened here, before any header goes out: a delete that won the race is a 404, and once
        # open the bytes stay readable to the end, whatever a delete does meanwhile.
        try:
            first = await anext(body, b"")
        except FileNotFoundError:
            raise NotFound(f"No such File object: {file_id}", param="id") from None
        return rec, span, _prepend(first, body)


def etag(rec: FileRecord) -> str:
    """The file's strong ETag: its bytes never change, and their hash names them."""
    return f'"{rec.sha256}"'


async def _prepend(first: bytes, rest: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    if first:
        yield first
    async for chunk in rest:
        yield chunk
