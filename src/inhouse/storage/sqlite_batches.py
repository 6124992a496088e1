"""Batches and the chunks of their lines on SQLite. Every write a worker makes is guarded by its lease, and a
chunk's counts move in the same transaction that records it, so a line is counted (and output) once."""

from __future__ import annotations

import json
import sqlite3
from typing import Any

from inhouse.storage.records import BatchChunk, BatchRecord, FileRecord, Page
from inhouse.storage.sqlite_base import SqliteBase, leased, set_fields
from inhouse.storage.tables import BATCH_COLS as _COLS
from inhouse.storage.tables import BATCH_JSON as _JSON
from inhouse.storage.tables import BATCH_NAMES as _NAMES
from inhouse.storage.tables import BATCH_OPEN as OPEN
from inhouse.storage.tables import BATCH_UPDATABLE as _UPDATABLE
from inhouse.storage.tables import FILE_COLS as _FILE_COLS
from inhouse.storage.tables import dump_json

# A worker may hold a batch in these states; the others are terminal.


def _batch(row: tuple[Any, ...]) -> BatchRecord:
    values = {n: (json.loads(v) if n in _JSON and v is not None else v) for n, v in zip(_NAMES, row, strict=True)}
    return BatchRecord(**values)


class SqliteBatches(SqliteBase):
    @staticmethod
    def _batch_owned(c: sqlite3.Connection, batch_id: str, owner: str) -> bool:
        return leased(c, "batches", batch_id, owner, OPEN, among=True)

    @staticmethod
    def _batch_set(c: sqlite3.Connection, batch_id: str, fields: dict[str, Any]) -> None:
        set_fields(c, "batches", batch_id, fields, updatable=_UPDATABLE, json_fields=_JSON)

    def _batch_get_any(self, batch_id: str) -> BatchRecord | None:
        row = self.conn.execute(f"SELECT {_COLS} FROM batches WHERE id = ?", (batch_id,)).fetchone()
        return _batch(row) if row else None

    def _insert_batch(self, b: BatchRecord) -> None:
        values = [dump_json(getattr(b, n)) if n in _JSON else getattr(b, n) for n in _NAMES]
        with self._write() as c:
            c.execute(f"INSERT INTO batches ({_COLS}) VALUES ({','.join('?' * len(_NAMES))})", values)

    async def insert_batch(self, batch: BatchRecord) -> None:
        await self._run(self._insert_batch, batch)

    def _batch_get(self, project_id: str, batch_id: str) -> BatchRecord | None:
        row = self.conn.execute(f"SELECT {_COLS} FROM batches WHERE id = ? AND project_id = ?",
                                (batch_id, project_id)).fetchone()
        return _batch(row) if row else None

    async def get_batch(self, project_id: str, batch_id: str) -> BatchRecord | None:
        return await self._run(self._batch_get, project_id, batch_id)

    async def get_batch_any(self, batch_id: str) -> BatchRecord | None:
        return await self._run(self._batch_get_any, batch_id)

    def _batch_list(self, project_id: str, after: str | None, limit: int) -> Page[BatchRecord]:
        where, args = ["project_id = ?"], [project_id]
        if after is not None:
            where.append("seq < (SELECT seq FROM batches WHERE id = ? AND project_id = ?)")
            args += [after, project_id]
        rows = self.conn.execute(
            f"SELECT {_COLS} FROM batches WHERE {' AND '.join(where)} ORDER BY seq DESC LIMIT ?", (*args, limit + 1)
        ).fetchall()
        return Page([_batch(r) for r in rows[:limit]], has_more=len(rows) > limit)

    async def list_batches(self, project_id: str, *, after: str | None, limit: int) -> Page[BatchRecord]:
        return await self._run(self._batch_list, project_id, after, limit)

    def _batch_transition(self, project_id: str, batch_id: str, allowed: tuple[str, ...],
                    fields: dict[str, Any]) -> tuple[BatchRecord | None, bool]:
        with self._write() as c:
            row = c.execute(f"SELECT {_COLS} FROM batches WHERE id = ? AND project_id = ?",
                            (batch_id, project_id)).fetchone()
            if row is None:
                return None, False
            if _batch(row).status not in allowed:
                return _batch(row), False
            self._batch_set(c, batch_id, fields)
        return self._batch_get_any(batch_id), True

    async def transition_batch(self, project_id: str, batch_id: str, *, allowed: tuple[str, ...],
                               fields: dict[str, Any]) -> tuple[BatchRecord | None, bool]:
        return await self._run(self._batch_transition, project_id, batch_id, allowed, fields)

    def _batch_claim(self, owner: str, at: int, lease_s: int) -> BatchRecord | None:
        marks = ",".join("?" * len(OPEN))
        with self._write() as c:
            row = c.execute(
                f"SELECT id FROM batches WHERE status IN ({marks}) AND (lease_owner IS NULL OR lease_expires_at < ?) "
                "ORDER BY seq LIMIT 1", (*OPEN, at)).fetchone()
            if row is None:
                return None
            c.execute("UPDATE batches SET lease_owner = ?, lease_expires_at = ?, attempts = attempts + 1 "
                      "WHERE id = ?", (owner, at + lease_s, row[0]))
        return self._batch_get_any(row[0])

    async def claim_batch(self, owner: str, now: int, lease_s: int) -> BatchRecord | None:
        return await self._run(self._batch_claim, owner, now, lease_s)

    def _batch_heartbeat(self, batch_id: str, owner: str, at: int, lease_s: int) -> str | None:
        with self._write() as c:
            row = c.execute("SELECT status, lease_owner FROM batches WHERE id = ?", (batch_id,)).fetchone()
            if row is None or row[1] != owner:
                return None
            if row[0] in OPEN:
                c.execute("UPDATE batches SET lease_expires_at = ? WHERE id = ?", (at + lease_s, batch_id))
            return str(row[0])

    async def heartbeat_batch(self, batch_id: str, owner: str, now: int, lease_s: int) -> str | None:
        return await self._run(self._batch_heartbeat, batch_id, owner, now, lease_s)

    def _batch_update(self, batch_id: str, owner: str, fields: dict[str, Any], allowed: tuple[str, ...]) -> bool:
        with self._write() as c:
            if not self._batch_owned(c, batch_id, owner):
                return False
            status = c.execute("SELECT status FROM batches WHERE id = ?", (batch_id,)).fetchone()[0]
            if status not in allowed:
                return False
            self._batch_set(c, batch_id, fields)
        return True

    async def batch_update(self, batch_id: str, owner: str, fields: dict[str, Any],
                           allowed: tuple[str, ...] = OPEN) -> bool:
        return await self._run(self._batch_update, batch_id, owner, fields, allowed)

    def _batch_chunk_list(self, batch_id: str) -> list[BatchChunk]:
        rows = self.conn.execute("SELECT chunk, completed, failed, input_tokens, output_tokens FROM batch_chunks "
                                 "WHERE batch_id = ? ORDER BY chunk", (batch_id,)).fetchall()
        return [BatchChunk(*r) for r in rows]

    async def batch_chunks(self, batch_id: str) -> list[BatchChunk]:
        return await self._run(self._batch_chunk_list, batch_id)

    def _batch_add_chunk(self, batch_id: str, owner: str, chunk: BatchChunk) -> bool:
        with self._write() as c:
            if not self._batch_owned(c, batch_id, owner):
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

    async def add_batch_chunk(self, batch_id: str, owner: str, chunk: BatchChunk) -> bool:
        return await self._run(self._batch_add_chunk, batch_id, owner, chunk)

    def _batch_finish(self, batch_id: str, owner: str, fields: dict[str, Any], files: list[FileRecord]) -> bool:
        with self._write() as c:
            if not self._batch_owned(c, batch_id, owner):
                return False
            for f in files:
                c.execute(f"INSERT INTO files ({_FILE_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                          (f.id, f.project_id, f.bytes, f.created_at, f.expires_at, f.filename, f.purpose, f.status,
                           f.status_details, f.sha256))
            self._batch_set(c, batch_id, {**fields, "lease_owner": None, "lease_expires_at": None})
        return True

    async def finish_batch(self, batch_id: str, owner: str, *, fields: dict[str, Any],
                           files: list[FileRecord]) -> bool:
        return await self._run(self._batch_finish, batch_id, owner, fields, files)

    def _batch_release(self, batch_id: str, owner: str) -> None:
        with self._write() as c:
            c.execute("UPDATE batches SET lease_owner = NULL, lease_expires_at = NULL WHERE id = ? AND lease_owner = ?",
                      (batch_id, owner))

    async def release_batch(self, batch_id: str, owner: str) -> None:
        await self._run(self._batch_release, batch_id, owner)

    def _batch_open_ids(self) -> set[str]:
        marks = ",".join("?" * len(OPEN))
        return {r[0] for r in self.conn.execute(f"SELECT id FROM batches WHERE status IN ({marks})", OPEN)}

    async def open_batch_ids(self) -> set[str]:
        return await self._run(self._batch_open_ids)
