"""The Postgres database the per-resource stores share: a psycopg 3 async pool, one transaction per write, row
locks (FOR UPDATE) wherever a write depends on what it read, versioned migrations under an advisory lock."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import psycopg
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from inhouse.ids import now
from inhouse.storage.errors import Conflict
from inhouse.storage.migrations import POSTGRES_MIGRATIONS
from inhouse.storage.tables import update_sql

Conn = AsyncConnection[tuple[Any, ...]]
Row = tuple[Any, ...]

# One advisory lock key for every Inhouse process migrating this database ("inhouse" + 1 as a bigint).
MIGRATION_LOCK = 0x696E686F75736501
# Pool settings read from (and removed from) the URL's query; libpq would reject them as unknown.
POOL_DEFAULTS = {"pool_min_size": 1.0, "pool_max_size": 10.0, "pool_timeout": 30.0}


def pool_settings(url: str) -> tuple[str, dict[str, float]]:
    """`postgresql://u@h:5432/db?pool_max_size=20&sslmode=require` -> libpq URL without the pool_* keys, and
    the pool settings (min and max connections, seconds a caller waits for one)."""
    parts = urlsplit(url)
    if parts.scheme not in ("postgresql", "postgres"):
        raise ValueError(f"not a postgres URL: {parts.scheme!r}")
    settings = dict(POOL_DEFAULTS)
    kept = []
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        if name in settings:
            try:
                settings[name] = float(value)
            except ValueError:
                raise ValueError(f"database_url: {name} must be a number, not {value!r}") from None
        else:
            kept.append((name, value))
    if settings["pool_min_size"] < 0 or settings["pool_max_size"] < max(1.0, settings["pool_min_size"]):
        raise ValueError("database_url: need 0 <= pool_min_size <= pool_max_size and pool_max_size >= 1")
    return urlunsplit(parts._replace(query=urlencode(kept))), settings


def load_json(value: str | None) -> Any:
    return None if value is None else json.loads(value)


async def fetchone(c: Conn, sql: str, args: Sequence[Any] = ()) -> Row | None:
    cur = await c.execute(sql, args)
    return await cur.fetchone()


async def fetchall(c: Conn, sql: str, args: Sequence[Any] = ()) -> list[Row]:
    cur = await c.execute(sql, args)
    return await cur.fetchall()


async def rowcount(c: Conn, sql: str, args: Sequence[Any] = ()) -> int:
    cur = await c.execute(sql, args)
    return cur.rowcount


async def set_fields(c: Conn, table: str, row_id: str, fields: dict[str, Any], *, updatable: set[str],
                     json_fields: set[str]) -> None:
    """UPDATE one row's `fields` (tables.update_sql); nothing when there are none."""
    if fields:
        await c.execute(*update_sql(table, row_id, fields, updatable=updatable, json_fields=json_fields, mark="%s"))


async def leased(c: Conn, table: str, row_id: str, owner: str, statuses: tuple[str, ...], *, among: bool) -> bool:
    """Whether `owner` holds the row's lease while its status is among `statuses` (among=False: not among).
    The row stays locked to the end of the transaction, so no claim can take it between this test and the
    write it guards."""
    test = "= ANY(%s)" if among else "<> ALL(%s)"
    row = await fetchone(c, f"SELECT 1 FROM {table} WHERE id = %s AND lease_owner = %s AND status {test} FOR UPDATE",
                         (row_id, owner, list(statuses)))
    return row is not None


class PostgresDatabase:
    """Each call takes a pooled connection; a read is one statement (autocommit), a write one transaction."""

    def __init__(self, url: str) -> None:
        self._conninfo, self._pool_settings = pool_settings(url)
        self._pool: AsyncConnectionPool[Conn] | None = None

    @property
    def pool(self) -> AsyncConnectionPool[Conn]:
        if self._pool is None:
            raise RuntimeError("store is not open")
        return self._pool

    async def open(self) -> None:
        s = self._pool_settings
        # Autocommit: a read is one statement; every write opens its own transaction (`write`).
        pool: AsyncConnectionPool[Conn] = AsyncConnectionPool(
            self._conninfo, min_size=int(s["pool_min_size"]), max_size=int(s["pool_max_size"]),
            timeout=s["pool_timeout"], kwargs={"autocommit": True}, open=False, name="inhouse-meta",
        )
        await pool.open(wait=s["pool_min_size"] > 0, timeout=s["pool_timeout"])
        self._pool = pool

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[Conn]:
        """A pooled connection (autocommit) for one or more statements; a broken constraint leaves as Conflict."""
        try:
            async with self.pool.connection() as conn:
                yield conn
        except psycopg.IntegrityError as exc:
            raise Conflict(str(exc)) from exc

    @asynccontextmanager
    async def write(self) -> AsyncIterator[Conn]:
        """One transaction on one pooled connection: committed on exit, rolled back on any exception."""
        async with self.connection() as conn, conn.transaction():
            yield conn

    async def one(self, sql: str, args: Sequence[Any] = ()) -> Row | None:
        async with self.connection() as conn:
            return await fetchone(conn, sql, args)

    async def rows(self, sql: str, args: Sequence[Any] = ()) -> list[Row]:
        async with self.connection() as conn:
            return await fetchall(conn, sql, args)

    async def existing_ids(self, table: str, ids: list[str]) -> set[str]:
        """Which of `ids` are ids of rows of `table` (asked 500 at a time)."""
        found: set[str] = set()
        for i in range(0, len(ids), 500):
            rows = await self.rows(f"SELECT id FROM {table} WHERE id = ANY(%s::text[])", (ids[i : i + 500],))
            found.update(r[0] for r in rows)
        return found

    async def migrate(self) -> int:
        """Apply the steps not applied yet, each in its own transaction. A session advisory lock makes two
        processes starting at once take turns: the second finds every step recorded and applies none."""
        applied = 0
        async with self.pool.connection() as conn:
            await conn.execute("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK,))
            try:
                await conn.execute(
                    "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at BIGINT)")
                for version, script in enumerate(POSTGRES_MIGRATIONS, start=1):
                    async with conn.transaction():
                        if await fetchone(conn, "SELECT 1 FROM schema_migrations WHERE version = %s", (version,)):
                            continue
                        for statement in script.split(";"):
                            if statement.strip():
                                await conn.execute(statement)
                        await conn.execute("INSERT INTO schema_migrations VALUES (%s, %s)", (version, now()))
                        applied += 1
            finally:
                await conn.execute("SELECT pg_advisory_unlock(%s)", (MIGRATION_LOCK,))
        return applied

    async def check(self) -> dict[str, str]:
        async with self.pool.connection() as conn:
            row = await fetchone(conn, "SELECT current_setting('server_version'), current_database(), "
                                       "current_setting('fsync'), current_setting('synchronous_commit')")
            migrated = await fetchone(conn, "SELECT to_regclass('schema_migrations') IS NOT NULL")
            version = None
            if migrated and migrated[0]:
                version = await fetchone(conn, "SELECT max(version) FROM schema_migrations")
        assert row is not None
        stats = self.pool.get_stats()
        facts = {
            "backend": "postgresql",
            "server_version": str(row[0]),
            "database": str(row[1]),
            "fsync": str(row[2]),
            "synchronous_commit": str(row[3]),
            "schema_version": str((version or (0,))[0] or 0),
            "pool_min_size": str(self.pool.min_size),
            "pool_max_size": str(self.pool.max_size),
            "pool_size": str(stats.get("pool_size", 0)),
        }
        # Either setting off could lose an acknowledged write on a crash (the SQLite store refuses the same).
        if facts["fsync"] != "on" or facts["synchronous_commit"] == "off":
            raise RuntimeError(f"Postgres durability settings not in force: {facts}")
        return facts
