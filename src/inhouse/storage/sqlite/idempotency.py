"""Idempotency keys on SQLite: claims under leases, answers kept for replay."""

from __future__ import annotations

from inhouse.records import IdempotencyRecord
from inhouse.storage.sqlite.database import SqliteDatabase, on_db_thread


class SqliteIdempotency:
    def __init__(self, db: SqliteDatabase) -> None:
        self.db = db

    @on_db_thread
    def begin_idempotent(
        self, record: IdempotencyRecord, lease_owner: str, lease_until: int
    ) -> IdempotencyRecord | None:
        r = record
        with self.db.write() as c:
            row = c.execute(
                "SELECT scope, key, request_hash, created_at, status_code, content_type, body, lease_expires_at "
                "FROM idempotency WHERE scope = ? AND key = ?", (r.scope, r.key)
            ).fetchone()
            if row is None:
                c.execute(
                    "INSERT INTO idempotency (scope, key, request_hash, created_at, lease_owner, lease_expires_at) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    (r.scope, r.key, r.request_hash, r.created_at, lease_owner, lease_until),
                )
                return None
            existing = IdempotencyRecord(*row[:7])
            lease = row[7]
            if existing.status_code is not None or (lease is not None and lease >= r.created_at):
                return existing
            # In flight under an expired lease: its process died; this request takes the key over.
            c.execute(
                "UPDATE idempotency SET request_hash = ?, created_at = ?, lease_owner = ?, lease_expires_at = ? "
                "WHERE scope = ? AND key = ?",
                (r.request_hash, r.created_at, lease_owner, lease_until, r.scope, r.key),
            )
        return None

    @on_db_thread
    def renew_idempotent(self, lease_owner: str, lease_until: int) -> int:
        with self.db.write() as c:
            cur = c.execute(
                "UPDATE idempotency SET lease_expires_at = ? WHERE lease_owner = ? AND status_code IS NULL",
                (lease_until, lease_owner),
            )
        return cur.rowcount

    @on_db_thread
    def finish_idempotent(
        self, scope: str, key: str, request_hash: str, status_code: int, content_type: str, body: bytes
    ) -> None:
        with self.db.write() as c:
            c.execute(
                "UPDATE idempotency SET request_hash = ?, status_code = ?, content_type = ?, body = ? "
                "WHERE scope = ? AND key = ?",
                (request_hash, status_code, content_type, body, scope, key),
            )

    @on_db_thread
    def abort_idempotent(self, scope: str, key: str) -> None:
        with self.db.write() as c:
            c.execute("DELETE FROM idempotency WHERE scope = ? AND key = ? AND status_code IS NULL", (scope, key))

    @on_db_thread
    def purge_idempotent(self, before: int) -> int:
        with self.db.write() as c:
            cur = c.execute("DELETE FROM idempotency WHERE created_at < ?", (before,))
        return cur.rowcount
