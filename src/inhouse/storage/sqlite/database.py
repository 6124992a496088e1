"""The SQLite database the per-resource stores share: one connection owned by one thread, explicit durability
pragmas, BEGIN IMMEDIATE for every write, versioned migrations; and `on_db_thread`, which runs a store's method
body on that thread."""

from __future__ import annotations

import asyncio
import functools
import json
import os
import sqlite3
from collections.abc import Callable, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, Protocol, TypeVar

from inhouse.ids import now
from inhouse.storage.errors import Conflict
from inhouse.storage.migrations import SQLITE_MIGRATIONS
from inhouse.storage.tables import update_sql

P = ParamSpec("P")
T = TypeVar("T")


class SqliteDatabase:
    """All statements run on one dedicated thread that owns the connection, so the event loop never blocks and
    SQLite never sees the connection from two threads; the thread also orders this process's writes."""

    def __init__(self, path: Path, *, busy_timeout_ms: int = 10_000) -> None:
        self.path = path
        self._busy_timeout_ms = busy_timeout_ms
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite")
        self._conn: sqlite3.Connection | None = None

    async def run(self, fn: Callable[[], T]) -> T:
        """`fn()` on the database's thread; a broken constraint leaves as Conflict."""
        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor, fn)
        except sqlite3.IntegrityError as exc:
            raise Conflict(str(exc)) from exc

    @property
    def conn(self) -> sqlite3.Connection:
        """The connection; only for code running on the database's thread."""
        if self._conn is None:
            raise RuntimeError("store is not open")
        return self._conn

    @contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction: BEGIN IMMEDIATE takes the write lock before the first read, so what it reads
        stays true until COMMIT (claims, lease tests, at-most-once transitions rely on it); rolled back on any
        exception."""
        conn = self.conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def _connect(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # Made 0600 before SQLite sees it (SQLite would use 0644): it holds key hashes and every object's
        # metadata, and SQLite gives the -wal and -shm files it makes the database file's own mode.
        os.close(os.open(self.path, os.O_RDONLY | os.O_CREAT, 0o600))
        # isolation_level=None: we issue BEGIN IMMEDIATE ourselves for every write.
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        conn.execute(f"PRAGMA busy_timeout = {int(self._busy_timeout_ms)}")
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = FULL")
        conn.execute("PRAGMA foreign_keys = ON")
        self._conn = conn

    def _disconnect(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    async def open(self) -> None:
        await self.run(self._connect)

    async def close(self) -> None:
        await self.run(self._disconnect)
        self._executor.shutdown(wait=True)

    def _apply_migrations(self) -> int:
        self.conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at INTEGER)")
        applied = 0
        for version, script in enumerate(SQLITE_MIGRATIONS, start=1):
            # Each step in its own write transaction: a second process waits for the lock, then skips the step.
            with self.write() as c:
                if c.execute("SELECT 1 FROM schema_migrations WHERE version = ?", (version,)).fetchone():
                    continue
                for statement in script.split(";"):
                    if statement.strip():
                        c.execute(statement)
                c.execute("INSERT INTO schema_migrations VALUES (?, ?)", (version, now()))
                applied += 1
        return applied

    async def migrate(self) -> int:
        return await self.run(self._apply_migrations)

    def _facts(self) -> dict[str, str]:
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
        return await self.run(self._facts)


class OnDatabase(Protocol):
    """A per-resource store: it holds the database its methods run on."""

    @property
    def db(self) -> SqliteDatabase: ...


S = TypeVar("S", bound=OnDatabase)


def on_db_thread(method: Callable[Concatenate[S, P], T]) -> Callable[Concatenate[S, P], Coroutine[Any, Any, T]]:
    """Make a blocking method body the async method of the contract: the body runs on the database's thread
    (where it may use `self.db.conn` and `self.db.write()`), the caller awaits its answer on the loop."""

    @functools.wraps(method)
    async def on_thread(self: S, /, *args: P.args, **kwargs: P.kwargs) -> T:
        return await self.db.run(functools.partial(method, self, *args, **kwargs))

    return on_thread


def set_fields(c: sqlite3.Connection, table: str, row_id: str, fields: dict[str, Any], *, updatable: set[str],
               json_fields: set[str]) -> None:
    """UPDATE one row's `fields` (tables.update_sql); nothing when there are none."""
    if fields:
        c.execute(*update_sql(table, row_id, fields, updatable=updatable, json_fields=json_fields, mark="?"))


def leased(c: sqlite3.Connection, table: str, row_id: str, owner: str, statuses: tuple[str, ...], *,
           among: bool) -> bool:
    """Whether `owner` holds the row's lease while its status is among `statuses` (among=False: not among).
    Inside `write()`, no claim can take the row between this test and the write it guards."""
    marks = ",".join("?" * len(statuses))
    test = "IN" if among else "NOT IN"
    return c.execute(f"SELECT 1 FROM {table} WHERE id = ? AND lease_owner = ? AND status {test} ({marks})",
                     (row_id, owner, *statuses)).fetchone() is not None


def existing_ids(c: sqlite3.Connection, table: str, ids: list[str]) -> set[str]:
    """Which of `ids` are ids of rows of `table` (asked 500 at a time: SQLite caps bound parameters)."""
    found: set[str] = set()
    for i in range(0, len(ids), 500):
        chunk = ids[i : i + 500]
        marks = ",".join("?" * len(chunk))
        found.update(r[0] for r in c.execute(f"SELECT id FROM {table} WHERE id IN ({marks})", chunk))
    return found


def load_json(value: str | None) -> Any:
    return None if value is None else json.loads(value)
