"""File rows on SQLite."""

from __future__ import annotations

import sqlite3
from typing import Any

from inhouse.records import FileRecord, Page
from inhouse.storage.protocols.files import Order
from inhouse.storage.sqlite.database import SqliteDatabase, existing_ids, on_db_thread
from inhouse.storage.tables import FILE_COLS

_LIVE = "(expires_at IS NULL OR expires_at > ?)"


def insert_file_row(c: sqlite3.Connection, f: FileRecord) -> None:
    """The INSERT of a file's row, inside the caller's write transaction (uploads and batches make files too)."""
    c.execute(
        f"INSERT INTO files ({FILE_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (f.id, f.project_id, f.bytes, f.created_at, f.expires_at, f.filename, f.purpose, f.status, f.status_details,
         f.sha256),
    )


class SqliteFiles:
    def __init__(self, db: SqliteDatabase) -> None:
        self.db = db

    @on_db_thread
    def insert_file(self, file: FileRecord) -> None:
        with self.db.write() as c:
            insert_file_row(c, file)

    @on_db_thread
    def get_file(self, project_id: str, file_id: str, now: int) -> FileRecord | None:
        row = self.db.conn.execute(
            f"SELECT {FILE_COLS} FROM files WHERE id = ? AND project_id = ? AND {_LIVE}", (file_id, project_id, now)
        ).fetchone()
        return FileRecord(*row) if row else None

    @on_db_thread
    def list_files(
        self, project_id: str, *, purpose: str | None, after: str | None, limit: int, order: Order, now: int
    ) -> Page[FileRecord]:
        where = ["project_id = ?", _LIVE]
        args: list[Any] = [project_id, now]
        if purpose is not None:
            where.append("purpose = ?")
            args.append(purpose)
        if after is not None:
            # The cursor is an id; rows after it in this order. An unknown id (or another project's)
            # yields an empty page, never someone else's position.
            op = "<" if order == "desc" else ">"
            where.append(f"seq {op} (SELECT seq FROM files WHERE id = ? AND project_id = ?)")
            args += [after, project_id]
        direction = "DESC" if order == "desc" else "ASC"
        rows = self.db.conn.execute(
            f"SELECT {FILE_COLS} FROM files WHERE {' AND '.join(where)} ORDER BY seq {direction} LIMIT ?",
            (*args, limit + 1),
        ).fetchall()
        return Page([FileRecord(*r) for r in rows[:limit]], has_more=len(rows) > limit)

    @on_db_thread
    def delete_file(self, project_id: str, file_id: str) -> bool:
        with self.db.write() as c:
            cur = c.execute("DELETE FROM files WHERE id = ? AND project_id = ?", (file_id, project_id))
        return cur.rowcount == 1

    @on_db_thread
    def expired_files(self, now: int, limit: int) -> list[FileRecord]:
        rows = self.db.conn.execute(
            f"SELECT {FILE_COLS} FROM files WHERE expires_at IS NOT NULL AND expires_at <= ? LIMIT ?", (now, limit)
        ).fetchall()
        return [FileRecord(*r) for r in rows]

    @on_db_thread
    def delete_file_by_id(self, file_id: str) -> None:
        with self.db.write() as c:
            c.execute("DELETE FROM files WHERE id = ?", (file_id,))

    @on_db_thread
    def existing_file_ids(self, ids: list[str]) -> set[str]:
        return existing_ids(self.db.conn, "files", ids)
