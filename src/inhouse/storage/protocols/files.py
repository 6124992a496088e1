"""The contract of File rows: what a stored blob is, for whom, until when."""

from __future__ import annotations

from typing import Literal, Protocol

from inhouse.records import FileRecord, Page

Order = Literal["asc", "desc"]


class FileStore(Protocol):
    """File rows. A row is written only once its bytes are durable (blob key `files/<id>`); a file past its
    `expires_at` is gone for callers (reads take `now`) before the sweeper deletes it."""

    async def insert_file(self, file: FileRecord) -> None:
        """Store the row of a file whose bytes are already committed. A duplicate id or an unknown project is the
        backend's integrity error (the caller then deletes the bytes)."""
        ...

    async def get_file(self, project_id: str, file_id: str, now: int) -> FileRecord | None:
        """The project's file, if it has not expired by `now`; None otherwise (another project's file included)."""
        ...

    async def list_files(
        self, project_id: str, *, purpose: str | None, after: str | None, limit: int, order: Order, now: int
    ) -> Page[FileRecord]:
        """At most `limit` of the project's live files (of `purpose`, when given), in creation order `order`.
        `after` is a file id of the same project: the page starts past it; an unknown id (or another project's)
        gives an empty page, never a position in someone else's list."""
        ...

    async def delete_file(self, project_id: str, file_id: str) -> bool:
        """Delete the project's file row (expired or not); True only for the call that deleted it. The caller
        deletes the bytes after the row: a crash in between leaves an orphan blob for the sweeper, never a listed
        file without content."""
        ...

    async def expired_files(self, now: int, limit: int) -> list[FileRecord]:
        """Up to `limit` files of any project whose `expires_at` is at or before `now` (for the sweeper)."""
        ...

    async def delete_file_by_id(self, file_id: str) -> None:
        """Delete a file row whatever its project (the sweeper's, after `expired_files`); nothing if it is gone."""
        ...

    async def existing_file_ids(self, ids: list[str]) -> set[str]:
        """Which of `ids` have a row, in any project and expired or not: a blob whose id is not among them is
        an orphan the sweeper may delete (once it is older than a write can take)."""
        ...
