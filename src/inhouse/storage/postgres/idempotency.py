"""Idempotency keys on Postgres: claims under leases, answers kept for replay."""

from __future__ import annotations

from inhouse.records import IdempotencyRecord
from inhouse.storage.postgres.database import PostgresDatabase, fetchone, rowcount


class PostgresIdempotency:
    def __init__(self, db: PostgresDatabase) -> None:
        self.db = db

    async def begin_idempotent(
        self, record: IdempotencyRecord, lease_owner: str, lease_until: int
    ) -> IdempotencyRecord | None:
        r = record
        async with self.db.write() as c:
            # Insert-or-nothing first: of two requests racing for a new key exactly one inserts (the other waits
            # for its commit, then finds the row below, locked).
            inserted = await rowcount(
                c, "INSERT INTO idempotency (scope, key, request_hash, created_at, lease_owner, lease_expires_at) "
                   "VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (scope, key) DO NOTHING",
                (r.scope, r.key, r.request_hash, r.created_at, lease_owner, lease_until))
            if inserted == 1:
                return None
            row = await fetchone(
                c, "SELECT scope, key, request_hash, created_at, status_code, content_type, body, lease_expires_at "
                   "FROM idempotency WHERE scope = %s AND key = %s FOR UPDATE", (r.scope, r.key))
            if row is None:  # deleted (aborted or purged) between the two statements: claim it afresh
                await c.execute(
                    "INSERT INTO idempotency (scope, key, request_hash, created_at, lease_owner, lease_expires_at) "
                    "VALUES (%s, %s, %s, %s, %s, %s)",
                    (r.scope, r.key, r.request_hash, r.created_at, lease_owner, lease_until))
                return None
            existing = IdempotencyRecord(row[0], row[1], row[2], row[3], row[4], row[5],
                                         None if row[6] is None else bytes(row[6]))
            lease = row[7]
            if existing.status_code is not None or (lease is not None and lease >= r.created_at):
                return existing
            # In flight under an expired lease: its process died; this request takes the key over.
            await c.execute(
                "UPDATE idempotency SET request_hash = %s, created_at = %s, lease_owner = %s, lease_expires_at = %s "
                "WHERE scope = %s AND key = %s",
                (r.request_hash, r.created_at, lease_owner, lease_until, r.scope, r.key),
            )
        return None

    async def renew_idempotent(self, lease_owner: str, lease_until: int) -> int:
        async with self.db.write() as c:
            return await rowcount(
                c, "UPDATE idempotency SET lease_expires_at = %s WHERE lease_owner = %s AND status_code IS NULL",
                (lease_until, lease_owner))

    async def finish_idempotent(
        self, scope: str, key: str, request_hash: str, status_code: int, content_type: str, body: bytes
    ) -> None:
        async with self.db.write() as c:
            await c.execute(
                "UPDATE idempotency SET request_hash = %s, status_code = %s, content_type = %s, body = %s "
                "WHERE scope = %s AND key = %s",
                (request_hash, status_code, content_type, bytes(body), scope, key),
            )

    async def abort_idempotent(self, scope: str, key: str) -> None:
        async with self.db.write() as c:
            await c.execute("DELETE FROM idempotency WHERE scope = %s AND key = %s AND status_code IS NULL",
                            (scope, key))

    async def purge_idempotent(self, before: int) -> int:
        async with self.db.write() as c:
            return await rowcount(c, "DELETE FROM idempotency WHERE created_at < %s", (before,))
