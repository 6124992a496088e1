"""The contract of Uploads and their parts: a file sent in pieces, completed at most once."""

from __future__ import annotations

from typing import Protocol

from inhouse.records import FileRecord, UploadPartRecord, UploadRecord


class UploadStore(Protocol):
    """Uploads move pending -> completed | cancelled | expired, each at most once; only a pending upload takes
    parts, and a part's row is written only once its bytes are durable (blob key `parts/<id>`)."""

    async def insert_upload(self, upload: UploadRecord) -> None:
        """Store a new upload (its project must exist, its id be new: else the backend's integrity error)."""
        ...

    async def get_upload(self, project_id: str, upload_id: str) -> UploadRecord | None:
        """The project's upload, whatever its status; None if the project has none by that id."""
        ...

    async def insert_upload_part(self, project_id: str, part: UploadPartRecord) -> bool:
        """Record a part (its bytes already durable) if its upload is this project's and still pending, tested in
        the same transaction; False, writing nothing, otherwise (the caller then deletes the part's bytes). A
        completed upload never gains a part, however the two race."""
        ...

    async def get_upload_parts(self, upload_id: str) -> list[UploadPartRecord]:
        """The upload's parts in the order they were recorded."""
        ...

    async def set_upload_status(self, upload_id: str, *, expect: str, status: str) -> bool:
        """Move the upload from `expect` to `status`; False, writing nothing, when its status is not `expect`
        (so of two racing transitions out of one state, exactly one happens)."""
        ...

    async def complete_upload(self, upload_id: str, file: FileRecord) -> bool:
        """Mark a pending upload completed with `file` as its file and insert that file's row (its bytes already
        durable), in one transaction; False, writing nothing, when the upload is not pending (at most once: a
        second completion never makes a second file)."""
        ...

    async def expired_uploads(self, now: int, limit: int) -> list[UploadRecord]:
        """Up to `limit` pending uploads of any project whose `expires_at` is at or before `now` (for the
        sweeper, which moves each to expired with `set_upload_status` and deletes its parts)."""
        ...

    async def delete_upload_parts(self, upload_id: str) -> None:
        """Delete the upload's part rows (after their bytes are gone or no longer needed)."""
        ...

    async def existing_part_ids(self, ids: list[str]) -> set[str]:
        """Which of `ids` have a part row: a part blob whose id is not among them is an orphan."""
        ...
