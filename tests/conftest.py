"""Shared fixtures: a real server on 127.0.0.1 per test (fresh data dir) and a strict, validating SDK client."""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before anything can import torch
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from inhouse.config import Settings
from tests.harness import ServerHandle, start_server, validating_http_client

# INHOUSE_TEST_STORAGE=postgres+s3 (or postgres+local) runs the tests' servers on a real Postgres and/or SeaweedFS
# S3 gateway that the test session starts, instead of the embedded SQLite + local blobs: every feature, unchanged.
# postgres+local is the shared-directory deployment: Postgres, and blobs in a directory apart from DATA_DIR (as a
# mount every node shares would be), so nothing may find them under DATA_DIR/blobs.
TEST_STORAGE = os.environ.get("INHOUSE_TEST_STORAGE", "sqlite+local")
_DATABASES, _BLOBS = ("sqlite", "postgres"), ("local", "s3")
if TEST_STORAGE.partition("+")[0] not in _DATABASES or TEST_STORAGE.partition("+")[2] not in _BLOBS:
    raise pytest.UsageError(f"INHOUSE_TEST_STORAGE={TEST_STORAGE!r}: expected DATABASE+BLOBS, DATABASE one of "
                            f"{_DATABASES} and BLOBS one of {_BLOBS} (e.g. postgres+s3)")


def storage_overrides(tmp_path: Path) -> dict[str, Any]:
    database, _, blobs = TEST_STORAGE.partition("+")
    out: dict[str, Any] = {}
    if database == "postgres":
        from tests.storage import postgres_server

        out["database_url"] = postgres_server.database_url(tmp_path)
        if blobs == "local":
            out["blob_url"] = f"file://{(tmp_path / 'shared-blobs').resolve()}"
    if blobs == "s3":
        from tests.storage.seaweedfs import seaweedfs

        out["blob_url"] = seaweedfs().url()
    return out


def storage_env(settings: Settings) -> dict[str, str]:
    """The environment that points the CLI (`inhouse keys …`) at the same stores as `settings`' servers, as an
    operator's would on a scale-out deployment."""
    return {"INHOUSE_DATABASE_URL": settings.database_url, "INHOUSE_BLOB_URL": settings.blob_url}


@pytest.fixture
def settings_factory(tmp_path: Path) -> Any:
    def make(**overrides: Any) -> Settings:
        base: dict[str, Any] = {"data_dir": tmp_path / "data", "sweep_interval_seconds": 3600.0,
                                **storage_overrides(tmp_path)}
        base.update(overrides)
        return Settings(**base)

    return make


@pytest.fixture
def server(settings_factory: Any) -> Iterator[ServerHandle]:
    with start_server(settings_factory()) as handle:
        yield handle


def make_client(base_url: str, api_key: str = "unused", **kw: Any) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=base_url,
        api_key=api_key,
        max_retries=kw.pop("max_retries", 0),
        _strict_response_validation=kw.pop("strict", True),
        http_client=validating_http_client(),
        **kw,
    )


@pytest.fixture
def client(server: ServerHandle) -> Iterator[openai.OpenAI]:
    c = make_client(server.base_url)
    yield c
    c.close()


from tests.llm import llm, llm_server, tiny_llm  # noqa: E402, F401 - the tiny chat model's fixtures
