"""Batches and the chunks of their lines on SQLite. Every write a worker makes is tested against its lease in the
write transaction that makes it, and a chunk's counts move in the transaction that records it."""

from __future__ import annotations

import sqlite3
from typing import Any

from inhouse.records import BatchChunk, BatchRecord, FileRecord, Page
from inhouse.storage.sqlite.database import SqliteDatabase, leased, load_json, on_db_thread, set_fields
from inhouse.storage.sqlite.files import insert_file_row
from inhouse.storage.tables import BATCH_COLS, BATCH_JSON, BATCH_NAMES, BATCH_OPEN, BATCH_UPDATABLE, dump_json

_OPEN_MARKS = ",".join("?" * len(BATCH_OPEN))


def _batch(row: tuple[Any, ...]) -> BatchRecord:
    values = {n: (load_json(v) if n in BATCH_JSON else v) for n, v in zip(BATCH_NAMES, row, strict=True)}
    return BatchRecord(**values)


# -- run inside a write transaction --------------------------------------------------------------------------
def _owned(c: sqlite3.Connection, batch_id: str, owner: str) -> bool:
    return leased(c, "batches", batch_id, owner, BATCH_OPEN, among=True)


def _set(c: sqlite3.Connection, batch_id: str, fields: dict[str, Any]) -> None:
    set_fields(c, "batches", batch_id, fields, updatable=BATCH_UPDATABLE, json_fields=BATCH_JSON)


def _batch_any(c: sqlite3.Connection, batch_id: str) -> BatchRecord | None:
    row = c.execute(f"SELECT {BATCH_COLS} FROM batches WHERE id = ?", (batch_id,)).fetchone()
    return _batch(row) if row else None


class SqliteBatches:
    def __init__(self, db: SqliteDatabase) -> None:
        self.db = db

    @on_db_thread
    def insert_batch(self, batch: BatchRecord) -> None:
        values = [dump_json(getattr(batch, n)) if n in BATCH_JSON else getattr(batch, n) for n in BATCH_NAMES]
        with self.db.write() as c:
            c.execute(f"INSERT INTO batches ({BATCH_COLS}) VALUES ({','.join('?' * len(BATCH_NAMES))})", values)

    @on_db_thread
    def get_batch(self, project_id: str, batch_id: str) -> BatchRecord | None:
        row = self.db.conn.execute(f"SELECT {BATCH_COLS} FROM batches WHERE id = ? AND project_id = ?",
                                   (batch_id, project_id)).fetchone()
        return _batch(row) if row else None

    @on_db_thread
    def get_batch_any(self, batch_id: str) -> BatchRecord | None:
        return _batch_any(self.db.conn, batch_id)

    @on_db_thread
    def list_batches(self, project_id: str, *, after: str | None, limit: int) -> Page[BatchRecord]:
        where, args = ["project_id = ?"], [project_id]
        if after is not None:
            where.append("seq < (SELECT seq FROM batches WHERE id = ? AND project_id = ?)")
            args += [after, project_id]
        rows = self.db.conn.execute(
            f"SELECT {BATCH_COLS} FROM batches WHERE {' AND '.join(where)} ORDER BY seq DESC LIMIT ?",
            (*args, limit + 1),
        ).fetchall()
        return Page([_batch(r) for r in rows[:limit]], has_more=len(rows) > limit)

    @on_db_thread
    def transition_batch(self, project_id: str, batch_id: str, *, allowed: tuple[str, ...],
                         fields: dict[str, Any]) -> tuple[BatchRecord | None, bool]:
        with self.db.write() as c:
            row = c.execute(f"SELECT {BATCH_COLS} FROM batches WHERE id = ? AND project_id = ?",
                            (batch_id, project_id)).fetchone()
            if row is None:
                return None, False
            if _batch(row).status not in allowed:
                return _batch(row), False
            _set(c, batch_id, fields)
            return _batch_any(c, batch_id), True

    @on_db_thread
    def claim_batch(self, owner: str, now: int, lease_s: int) -> BatchRecord | None:
        with self.db.write() as c:
            row = c.execute(
                f"SELECT id FROM batches WHERE status IN ({_OPEN_MARKS}) "
                "AND (lease_owner IS NULL OR lease_expires_at < ?) ORDER BY seq LIMIT 1", (*BATCH_OPEN, now),
            ).fetchone()
            if row is None:
                return None
            c.execute("UPDATE batches SET lease_owner = ?, lease_expires_at = ?, attempts = attempts + 1 "
                      "WHERE id = ?", (owner, now + lease_s, row[0]))
            return _batch_any(c, row[0])

    @on_db_thread
    def heartbeat_batch(self, batch_id: str, owner: str, now: int, lease_s: int) -> str | None:
        with self.db.write() as c:
            row = c.execute("SELECT status, lease_owner FROM batches WHERE id = ?", (batch_id,)).fetchone()
            if row is None or row[1] != owner:
                return None
            if row[0] in BATCH_OPEN:
                c.execute("UPDATE batches SET lease_expires_at = ? WHERE id = ?", (now + lease_s, batch_id))
            return str(row[0])

    @on_db_thread
    def batch_update(self, batch_id: str, owner: str, fields: dict[str, Any],
                     allowed: tuple[str, ...] = BATCH_OPEN) -> bool:
        with self.db.write() as c:
            if not _owned(c, batch_id, owner):
                return False
            status = c.execute("SELECT status FROM batches WHERE id = ?", (batch_id,)).fetchone()[0]
            if status not in allowed:
                return False
            _set(c, batch_id, fields)
        return True

    @on_db_thread
    def batch_chunks(self, batch_id: str) -> list[BatchChunk]:
        rows = self.db.conn.execute(
            "SELECT chunk, completed, failed, input_tokens, output_tokens FROM batch_chunks WHERE batch_id = ? "
            "ORDER BY chunk", (batch_id,)).fetchall()
        return [BatchChunk(*r) for r in rows]

    @on_db_thread
    def add_batch_chunk(self, batch_id: str, owner: str, chunk: BatchChunk) -> bool:
        with self.db.write() as c:
            if not _owned(c, batch_id, owner):
                return False
            done = c.execute("SELECT 1 FROM batch_chunks WHERE batch_id = ? AND chunk = ?",
                             (batch_id, chunk.index)).fetchone()
            if done:
                return True  # recorded by an earlier attempt: counted once already
            c.execute("INSERT INTO batch_chunks VALUES (?, ?, ?, ?, ?, ?)",
                      (batch_id, chunk.index, chunk.completed, chunk.failed, chunk.input_tokens, chunk.output_tokens))
            c.execute("UPDATE batches SET request_completed = request_completed + ?, request_failed = "
                      "request_failed + ?, input_tokens = input_tokens + ?, output_tokens = output_tokens + ? "
                      "WHERE id = ?", (chunk.completed, chunk.failed, chunk.input_tokens, chunk.output_tokens,
                                       batch_id))
        return True

    @on_db_thread
    def finish_batch(self, batch_id: str, owner: str, *, fields: dict[str, Any], files: list[FileRecord]) -> bool:
        with self.db.write() as c:
            if not _owned(c, batch_id, owner):
                return False
            for f in files:
                insert_file_row(c, f)
            _set(c, batch_id, {**fields, "lease_owner": None, "lease_expires_at": None})
        return True

    @on_db_thread
    def release_batch(self, batch_id: str, owner: str) -> None:
        with self.db.write() as c:
            c.execute("UPDATE batches SET lease_owner = NULL, lease_expires_at = NULL WHERE id = ? AND lease_owner = ?",
                      (batch_id, owner))

    @on_db_thread
    def open_batch_ids(self) -> set[str]:
        rows = self.db.conn.execute(f"SELECT id FROM batches WHERE status IN ({_OPEN_MARKS})", BATCH_OPEN)
        return {r[0] for r in rows}
