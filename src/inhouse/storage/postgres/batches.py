"""Batches and the chunks of their lines on Postgres. Every write a worker makes is guarded by its lease (the
batch's row locked while it is tested), and a chunk's counts move in the transaction that records it."""

from __future__ import annotations

from typing import Any

from inhouse.records import BatchChunk, BatchRecord, FileRecord, Page
from inhouse.storage.postgres.database import Conn, PostgresDatabase, Row, fetchone, leased, load_json, set_fields
from inhouse.storage.postgres.files import insert_file_row
from inhouse.storage.tables import BATCH_COLS, BATCH_JSON, BATCH_NAMES, BATCH_OPEN, BATCH_UPDATABLE, dump_json


def _batch(row: Row) -> BatchRecord:
    values = {n: (load_json(v) if n in BATCH_JSON else v) for n, v in zip(BATCH_NAMES, row, strict=True)}
    return BatchRecord(**values)


# -- run inside a write transaction --------------------------------------------------------------------------
async def _owned(c: Conn, batch_id: str, owner: str) -> bool:
    return await leased(c, "batches", batch_id, owner, BATCH_OPEN, among=True)


async def _set(c: Conn, batch_id: str, fields: dict[str, Any]) -> None:
    await set_fields(c, "batches", batch_id, fields, updatable=BATCH_UPDATABLE, json_fields=BATCH_JSON)


class PostgresBatches:
    def __init__(self, db: PostgresDatabase) -> None:
        self.db = db

    async def insert_batch(self, batch: BatchRecord) -> None:
        values = [dump_json(getattr(batch, n)) if n in BATCH_JSON else getattr(batch, n) for n in BATCH_NAMES]
        async with self.db.write() as c:
            await c.execute(f"INSERT INTO batches ({BATCH_COLS}) VALUES ({', '.join(['%s'] * len(BATCH_NAMES))})",
                            values)

    async def get_batch(self, project_id: str, batch_id: str) -> BatchRecord | None:
        row = await self.db.one(f"SELECT {BATCH_COLS} FROM batches WHERE id = %s AND project_id = %s",
                                (batch_id, project_id))
        return _batch(row) if row else None

    async def get_batch_any(self, batch_id: str) -> BatchRecord | None:
        row = await self.db.one(f"SELECT {BATCH_COLS} FROM batches WHERE id = %s", (batch_id,))
        return _batch(row) if row else None

    async def list_batches(self, project_id: str, *, after: str | None, limit: int) -> Page[BatchRecord]:
        where, args = ["project_id = %s"], [project_id]
        if after is not None:
            where.append("seq < (SELECT seq FROM batches WHERE id = %s AND project_id = %s)")
            args += [after, project_id]
        rows = await self.db.rows(
            f"SELECT {BATCH_COLS} FROM batches WHERE {' AND '.join(where)} ORDER BY seq DESC LIMIT %s",
            (*args, limit + 1))
        return Page([_batch(r) for r in rows[:limit]], has_more=len(rows) > limit)

    async def transition_batch(self, project_id: str, batch_id: str, *, allowed: tuple[str, ...],
                               fields: dict[str, Any]) -> tuple[BatchRecord | None, bool]:
        async with self.db.write() as c:
            row = await fetchone(c, f"SELECT {BATCH_COLS} FROM batches WHERE id = %s AND project_id = %s FOR UPDATE",
                                 (batch_id, project_id))
            if row is None:
                return None, False
            if _batch(row).status not in allowed:
                return _batch(row), False
            await _set(c, batch_id, fields)
            after = await fetchone(c, f"SELECT {BATCH_COLS} FROM batches WHERE id = %s", (batch_id,))
        return (_batch(after) if after else None), True

    async def claim_batch(self, owner: str, now: int, lease_s: int) -> BatchRecord | None:
        async with self.db.write() as c:
            # SKIP LOCKED: a batch another claimer is taking right now is passed over, never handed out twice.
            row = await fetchone(
                c, "SELECT id FROM batches WHERE status = ANY(%s) AND (lease_owner IS NULL OR lease_expires_at < %s) "
                   "ORDER BY seq LIMIT 1 FOR UPDATE SKIP LOCKED", (list(BATCH_OPEN), now))
            if row is None:
                return None
            claimed = await fetchone(
                c, "UPDATE batches SET lease_owner = %s, lease_expires_at = %s, attempts = attempts + 1 "
                   f"WHERE id = %s RETURNING {BATCH_COLS}", (owner, now + lease_s, row[0]))
        return _batch(claimed) if claimed else None

    async def heartbeat_batch(self, batch_id: str, owner: str, now: int, lease_s: int) -> str | None:
        async with self.db.write() as c:
            row = await fetchone(c, "SELECT status, lease_owner FROM batches WHERE id = %s FOR UPDATE", (batch_id,))
            if row is None or row[1] != owner:
                return None
            if row[0] in BATCH_OPEN:
                await c.execute("UPDATE batches SET lease_expires_at = %s WHERE id = %s", (now + lease_s, batch_id))
            return str(row[0])

    async def batch_update(self, batch_id: str, owner: str, fields: dict[str, Any],
                           allowed: tuple[str, ...] = BATCH_OPEN) -> bool:
        async with self.db.write() as c:
            if not await _owned(c, batch_id, owner):
                return False
            status = await fetchone(c, "SELECT status FROM batches WHERE id = %s", (batch_id,))
            if status is None or status[0] not in allowed:
                return False
            await _set(c, batch_id, fields)
        return True

    async def batch_chunks(self, batch_id: str) -> list[BatchChunk]:
        rows = await self.db.rows("SELECT chunk, completed, failed, input_tokens, output_tokens FROM batch_chunks "
                                  "WHERE batch_id = %s ORDER BY chunk", (batch_id,))
        return [BatchChunk(*r) for r in rows]

    async def add_batch_chunk(self, batch_id: str, owner: str, chunk: BatchChunk) -> bool:
        async with self.db.write() as c:
            if not await _owned(c, batch_id, owner):
                return False
            # The batch row is locked (above), so this test and the insert cannot interleave with another's.
            done = await fetchone(c, "SELECT 1 FROM batch_chunks WHERE batch_id = %s AND chunk = %s",
                                  (batch_id, chunk.index))
            if done:
                return True  # recorded by an earlier attempt: counted once already
            await c.execute("INSERT INTO batch_chunks VALUES (%s, %s, %s, %s, %s, %s)",
                            (batch_id, chunk.index, chunk.completed, chunk.failed, chunk.input_tokens,
                             chunk.output_tokens))
            await c.execute("UPDATE batches SET request_completed = request_completed + %s, request_failed = "
                            "request_failed + %s, input_tokens = input_tokens + %s, output_tokens = output_tokens + "
                            "%s WHERE id = %s", (chunk.completed, chunk.failed, chunk.input_tokens,
                                                 chunk.output_tokens, batch_id))
        return True

    async def finish_batch(self, batch_id: str, owner: str, *, fields: dict[str, Any],
                           files: list[FileRecord]) -> bool:
        async with self.db.write() as c:
            if not await _owned(c, batch_id, owner):
                return False
            for f in files:
                await insert_file_row(c, f)
            await _set(c, batch_id, {**fields, "lease_owner": None, "lease_expires_at": None})
        return True

    async def release_batch(self, batch_id: str, owner: str) -> None:
        async with self.db.write() as c:
            await c.execute("UPDATE batches SET lease_owner = NULL, lease_expires_at = NULL WHERE id = %s AND "
                            "lease_owner = %s", (batch_id, owner))

    async def open_batch_ids(self) -> set[str]:
        rows = await self.db.rows("SELECT id FROM batches WHERE status = ANY(%s)", (list(BATCH_OPEN),))
        return {r[0] for r in rows}
