"""MetadataStore on SQLite (WAL, synchronous=FULL, foreign keys, BEGIN IMMEDIATE writes): one database object
shared by one store per resource."""

from __future__ import annotations

from pathlib import Path

from inhouse.storage.composed import ComposedMetadataStore
from inhouse.storage.sqlite.batches import SqliteBatches
from inhouse.storage.sqlite.database import SqliteDatabase
from inhouse.storage.sqlite.files import SqliteFiles
from inhouse.storage.sqlite.idempotency import SqliteIdempotency
from inhouse.storage.sqlite.jobs import SqliteJobs
from inhouse.storage.sqlite.keys import SqliteKeys
from inhouse.storage.sqlite.models import SqliteModels
from inhouse.storage.sqlite.uploads import SqliteUploads
from inhouse.storage.sqlite.usage import SqliteUsage


def sqlite_path(url: str) -> Path:
    """`sqlite:///rel/path.db` is relative, `sqlite:////abs/path.db` absolute (SQLAlchemy's convention)."""
    if not url.startswith("sqlite:///"):
        raise ValueError(f"not a sqlite URL: {url!r}")
    return Path(url.removeprefix("sqlite:///"))


class SqliteMetadataStore(ComposedMetadataStore):
    def __init__(self, path: Path, *, busy_timeout_ms: int = 10_000) -> None:
        db = SqliteDatabase(path, busy_timeout_ms=busy_timeout_ms)
        super().__init__(db, keys=SqliteKeys(db), files=SqliteFiles(db), uploads=SqliteUploads(db),
                         models=SqliteModels(db), idempotency=SqliteIdempotency(db), jobs=SqliteJobs(db),
                         batches=SqliteBatches(db), usage=SqliteUsage(db))
        self.db = db
