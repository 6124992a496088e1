"""File rows on Postgres."""

from __future__ import annotations

from typing import Any

from inhouse.records import FileRecord, Page
from inhouse.storage.postgres.database import Conn, PostgresDatabase, rowcount
from inhouse.storage.protocols.files import Order
from inhouse.storage.tables import FILE_COLS

_LIVE = "(expires_at IS NULL OR expires_at > %s)"


async def insert_file_row(c: Conn, f: FileRecord) -> None:
    """The INSERT of a file's row, inside the caller's transaction (uploads and batches make files too)."""
    await c.execute(f"INSERT INTO files ({FILE_COLS}) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                    (f.id, f.project_id, f.bytes, f.created_at, f.expires_at, f.filename, f.purpose, f.status,
                     f.status_details, f.sha256))


class PostgresFiles:
    def __init__(self, db: PostgresDatabase) -> None:
        self.db = db

    async def insert_file(self, file: FileRecord) -> None:
        # One statement, atomic alone: autocommit spares the BEGIN and COMMIT round trips of db.write().
        async with self.db.connection() as c:
            await insert_file_row(c, file)

    async def get_file(self, project_id: str, file_id: str, now: int) -> FileRecord | None:
        row = await self.db.one(f"SELECT {FILE_COLS} FROM files WHERE id = %s AND project_id = %s AND {_LIVE}",
                                (file_id, project_id, now))
        return FileRecord(*row) if row else None

    async def list_files(
        self, project_id: str, *, purpose: str | None, after: str | None, limit: int, order: Order, now: int
    ) -> Page[FileRecord]:
        where = ["project_id = %s", _LIVE]
        args: list[Any] = [project_id, now]
        if purpose is not None:
            where.append("purpose = %s")
            args.append(purpose)
        if after is not None:
            # The cursor is an id; rows after it in this order. An unknown id (or another project's)
            # yields an empty page, never someone else's position.
            op = "<" if order == "desc" else ">"
            where.append(f"seq {op} (SELECT seq FROM files WHERE id = %s AND project_id = %s)")
            args += [after, project_id]
        direction = "DESC" if order == "desc" else "ASC"
        rows = await self.db.rows(
            f"SELECT {FILE_COLS} FROM files WHERE {' AND '.join(where)} ORDER BY seq {direction} LIMIT %s",
            (*args, limit + 1),
        )
        return Page([FileRecord(*r) for r in rows[:limit]], has_more=len(rows) > limit)

    async def delete_file(self, project_id: str, file_id: str) -> bool:
        async with self.db.write() as c:
            n = await rowcount(c, "DELETE FROM files WHERE id = %s AND project_id = %s", (file_id, project_id))
        return n == 1

    async def expired_files(self, now: int, limit: int) -> list[FileRecord]:
        rows = await self.db.rows(
            f"SELECT {FILE_COLS} FROM files WHERE expires_at IS NOT NULL AND expires_at <= %s LIMIT %s", (now, limit))
        return [FileRecord(*r) for r in rows]

    async def delete_file_by_id(self, file_id: str) -> None:
        async with self.db.write() as c:
            await c.execute("DELETE FROM files WHERE id = %s", (file_id,))

    async def existing_file_ids(self, ids: list[str]) -> set[str]:
        return await self.db.existing_ids("files", ids)
