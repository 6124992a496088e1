"""Session fixtures of the storage contract: the Postgres server lives for the session and stops at its end."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.storage import postgres_server


@pytest.fixture(scope="session", autouse=True)
def postgres() -> Iterator[None]:
    # Not under pytest's basetemp: every pytest run on the machine resets /tmp/pytest-of-USER to 0700, which
    # would lock out the unprivileged user pgserver runs the server as (when tests run as root).
    base = Path(tempfile.mkdtemp(prefix="inhouse-pg-"))
    postgres_server.set_base_dir(base)
    yield
    postgres_server.stop()
    shutil.rmtree(base, ignore_errors=True)
