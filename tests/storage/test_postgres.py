"""Postgres-only parts of the metadata store: concurrent migrations, the pool settings in the URL, its facts
(durability settings included)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from inhouse.bootstrap import build_metadata_store
from inhouse.storage.migrations import POSTGRES_MIGRATIONS, SQLITE_MIGRATIONS
from inhouse.storage.postgres import PostgresMetadataStore
from inhouse.storage.postgres.database import pool_settings
from tests.storage import postgres_server


def test_two_processes_migrating_at_once_take_turns(tmp_path: Path) -> None:
    """Without the advisory lock both would run step 1's CREATE TABLEs and one would fail."""
    url = postgres_server.database_url(tmp_path)

    async def body() -> list[int]:
        stores = [build_metadata_store(url) for _ in range(3)]
        for s in stores:
            await s.open()
        try:
            return sorted(await asyncio.gather(*(s.migrate() for s in stores)))
        finally:
            for s in stores:
                await s.close()

    assert asyncio.run(body()) == [0, 0, len(POSTGRES_MIGRATIONS)]
    assert len(POSTGRES_MIGRATIONS) == len(SQLITE_MIGRATIONS)  # the same versions on both backends


def test_pool_settings_come_out_of_the_url(tmp_path: Path) -> None:
    conninfo, settings = pool_settings("postgres://u@h:5433/db?sslmode=require&pool_max_size=3&pool_min_size=0")
    assert conninfo == "postgres://u@h:5433/db?sslmode=require"
    assert settings == {"pool_min_size": 0, "pool_max_size": 3, "pool_timeout": 30}
    for bad in ("postgresql://h/db?pool_max_size=x", "postgresql://h/db?pool_max_size=0",
                "postgresql://h/db?pool_min_size=5&pool_max_size=2"):
        with pytest.raises(ValueError, match="database_url"):
            pool_settings(bad)

    url = postgres_server.database_url(tmp_path)
    store = build_metadata_store(url + "&pool_min_size=2&pool_max_size=4")
    assert isinstance(store, PostgresMetadataStore)

    async def body() -> dict[str, str]:
        await store.open()
        try:
            await store.migrate()
            return await store.check()
        finally:
            await store.close()

    facts = asyncio.run(body())
    assert (facts["pool_min_size"], facts["pool_max_size"]) == ("2", "4")
    assert facts["server_version"].split(".")[0].isdigit() and facts["database"].startswith("t_")


def test_durability_facts(tmp_path: Path) -> None:
    store = build_metadata_store(postgres_server.database_url(tmp_path))

    async def body() -> dict[str, str]:
        await store.open()
        try:
            await store.migrate()
            return await store.check()
        finally:
            await store.close()

    facts = asyncio.run(body())
    assert facts["backend"] == "postgresql" and facts["fsync"] == "on" and facts["synchronous_commit"] != "off"
    assert facts["schema_version"] == str(len(POSTGRES_MIGRATIONS)) and int(facts["pool_max_size"]) >= 1


def test_unknown_scheme_is_refused() -> None:
    with pytest.raises(ValueError, match="postgresql://"):
        build_metadata_store("mysql://h/db")
