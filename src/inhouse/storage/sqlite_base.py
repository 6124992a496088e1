"""SQLite plumbing shared by the metadata store's parts: one connection owned by one thread, explicit
durability pragmas, BEGIN IMMEDIATE for every write, versioned migrations."""

from __future__ import annotations

import asyncio
import os
import sqlite3
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from inhouse.ids import now
from inhouse.storage.migrations import SQLITE_MIGRATIONS
from inhouse.storage.tables import update_sql

T = TypeVar("T")


def set_fields(c: sqlite3.Connection, table: str, row_id: str, fields: dict[str, Any], *, updatable: set[str],
               json_fields: set[str]) -> None:
    """UPDATE one row's `fields` (tables.update_sql); nothing when there are none."""
    if fields:
        c.execute(*update_sql(table, row_id, fields, updatable=updatable, json_fields=json_fields, mark="?"))


def leased(c: sqlite3.Connection, table: str, row_id: str, owner: str, statuses: tuple[str, ...], *,
           among: bool) -> bool:
    """Whether `owner` holds the row's lease while its status is among `statuses` (among=False: not among)."""
    marks = ",".join("?" * len(statuses))
    test = "IN" if among else "NOT IN"
    return c.execute(f"SELECT 1 FROM {table} WHERE id = ? AND lease_owner = ? AND status {test} ({marks})",
                     (row_id, owner, *statuses)).fetchone() is not None


class SqliteBase:
    def __init__(self, path: Path, *, busy_timeout_ms: int = 10_000) -> None:
        self._path = path
        self._busy_timeout_ms = busy_timeout_ms
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite")
        self._conn: sqlite3.Connection | None = None

    # -- plumbing -------------------------------------------------------------------------------
    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    @property
    def conn(self) -> sqlite3.Connection:
        if self._conn is None:
            raise RuntimeError("store is not open")
        return self._conn

    def _open(self) -> None:
        self._path.parent.mkdir(parents=True, exist_ok=True)
        # Made 0600 before SQLite sees it (SQLite would use 0644): it holds key hashes and every object's
        # metadata, and SQLite gives the -wal and -shm files it makes the database file's own mode.
        os.close(os.open(self._path, os.O_RDONLY | os.O_CREAT, 0o600))
        # isolation_level=None: we issue BEGIN IMMEDIATE ourselves for every write.
        conn = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
        conn.execute(f"PRAGMA busy_timeout = {int(self._busy_timeout_ms)}")
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = FULL")
        conn.execute("PRAGMA foreign_keys = ON")
        self._conn = conn

    def _close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        conn = self.conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    async def open(self) -> None:
        await self._run(self._open)

    async def close(self) -> None:
        await self._run(self._close)
        self._executor.shutdown(wait=True)

    def _migrate(self) -> int:
        conn = self.conn
        conn.execute("CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at INTEGER)")
        applied = 0
        for version, script in enumerate(SQLITE_MIGRATIONS, start=1):
            with self._write() as c:
                if c.execute("SELECT 1 FROM schema_migrations WHERE version = ?", (version,)).fetchone():
                    continue
                for statement in script.split(";"):
                    if statement.strip():
                        c.execute(statement)
                c.execute("INSERT INTO schema_migrations VALUES (?, ?)", (version, now()))
                applied += 1
        return applied

    async def migrate(self) -> int:
        return await self._run(self._migrate)

    def _check(self) -> dict[str, str]:
        conn = self.conn
        facts = {
            "journal_mode": str(conn.execute("PRAGMA journal_mode").fetchone()[0]),
            "synchronous": str(conn.execute("PRAGMA synchronous").fetchone()[0]),
            "foreign_keys": str(conn.execute("PRAGMA foreign_keys").fetchone()[0]),
            "busy_timeout": str(conn.execute("PRAGMA busy_timeout").fetchone()[0]),
        }
        # synchronous=2 is FULL; anything less could lose an acknowledged write on power loss.
        if facts["journal_mode"] != "wal" or facts["synchronous"] != "2" or facts["foreign_keys"] != "1":
            raise RuntimeError(f"SQLite durability settings not in force: {facts}")
        return facts

    async def check(self) -> dict[str, str]:
        return await self._run(self._check)

