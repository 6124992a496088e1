"""SQLite-only parts of the metadata store: its durability pragmas, its refusal to run without them, and the one
thread every statement runs on."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from pathlib import Path

import pytest

from inhouse.bootstrap import build_metadata_store
from inhouse.storage.sqlite import SqliteMetadataStore, sqlite_path
from inhouse.storage.sqlite.database import SqliteDatabase, on_db_thread


def test_durability_pragmas_are_in_force(tmp_path: Path) -> None:
    store = build_metadata_store(f"sqlite:///{tmp_path / 'meta.db'}")
    assert isinstance(store, SqliteMetadataStore)

    async def body() -> dict[str, str]:
        await store.open()
        try:
            await store.migrate()
            return await store.check()
        finally:
            await store.close()

    facts = asyncio.run(body())
    # synchronous=2 is FULL: a write acknowledged is on disk, even across a power loss.
    assert facts == {"journal_mode": "wal", "synchronous": "2", "foreign_keys": "1", "busy_timeout": "10000"}
    assert (tmp_path / "meta.db").stat().st_mode & 0o777 == 0o600


@pytest.mark.parametrize("pragma", ["synchronous = NORMAL", "foreign_keys = OFF", "journal_mode = DELETE"])
def test_check_refuses_a_connection_without_them(tmp_path: Path, pragma: str) -> None:
    store = SqliteMetadataStore(tmp_path / "meta.db")

    async def body() -> None:
        await store.open()
        try:
            await store.db.run(lambda: store.db.conn.execute(f"PRAGMA {pragma}").fetchall())
            with pytest.raises(RuntimeError, match="durability settings not in force"):
                await store.check()
        finally:
            await store.close()

    asyncio.run(body())


class _Probe:
    """A store of one method, to watch `on_db_thread` at work."""

    def __init__(self, db: SqliteDatabase) -> None:
        self.db = db

    @on_db_thread
    def where(self, tag: str, *, fail: bool = False) -> tuple[str, str]:
        if fail:
            self.db.conn.execute("SELECT * FROM no_such_table")
        return tag, threading.current_thread().name


def test_methods_run_on_the_database_thread(tmp_path: Path) -> None:
    db = SqliteDatabase(tmp_path / "meta.db")
    probe = _Probe(db)

    async def body() -> list[tuple[str, str]]:
        await db.open()
        try:
            answers = await asyncio.gather(*(probe.where(str(i)) for i in range(4)))
            with pytest.raises(sqlite3.OperationalError, match="no such table"):
                await probe.where("x", fail=True)  # the body's exception reaches the awaiting caller
            return answers
        finally:
            await db.close()

    answers = asyncio.run(body())
    assert [tag for tag, _ in answers] == ["0", "1", "2", "3"]
    threads = {name for _, name in answers}
    assert len(threads) == 1 and threads.pop().startswith("sqlite") and threading.current_thread().name == "MainThread"


def test_sqlite_urls() -> None:
    assert sqlite_path("sqlite:///rel/meta.db") == Path("rel/meta.db")
    assert sqlite_path("sqlite:////abs/meta.db") == Path("/abs/meta.db")
    with pytest.raises(ValueError, match="not a sqlite URL"):
        sqlite_path("sqlite://host/meta.db")
