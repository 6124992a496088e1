"""A real Postgres for the storage contract: pgserver's binaries, its own data dir, one database per test."""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import tempfile
import warnings
from pathlib import Path
from typing import Any

import psycopg
from psycopg import errors, sql

_state: dict[str, Any] = {}


def set_base_dir(path: Path) -> None:
    """Where the server's data dir goes (a temp dir of the session); the server starts on first use."""
    _state["base"] = path


def _server() -> Any:
    if "server" not in _state:
        with warnings.catch_warnings():
            # Without XDG_RUNTIME_DIR (CI, root shells) platformdirs warns and pgserver keeps its lock file
            # under /tmp/runtime-UID, which is fine.
            warnings.simplefilter("ignore")
            from pgserver.postgres_server import get_server  # only sessions that run the Postgres contract load it

        if "base" not in _state:  # a session without the storage conftest (INHOUSE_TEST_STORAGE=postgres+…)
            _state["base"] = Path(tempfile.mkdtemp(prefix="inhouse-pg-"))
            atexit.register(stop)
        base: Path = _state["base"]
        base.mkdir(parents=True, exist_ok=True)
        # A unix socket inside the data dir (pgserver listens on no TCP port): no clash with any other server.
        _state["server"] = get_server(base / "pgdata", cleanup_mode="delete")
    return _state["server"]


def database_url(tmp_dir: Path) -> str:
    """A fresh database per test directory (the same one each time it is asked for the same directory, so a
    test that reopens its store finds what it wrote)."""
    server = _server()
    name = "t_" + hashlib.sha256(str(tmp_dir).encode()).hexdigest()[:24]
    with psycopg.connect(server.get_uri(), autocommit=True) as conn, contextlib.suppress(errors.DuplicateDatabase):
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return str(server.get_uri(name))


def stop() -> None:
    server = _state.pop("server", None)
    if server is not None:
        server.cleanup()
