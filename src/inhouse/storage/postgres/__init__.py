"""MetadataStore on Postgres (psycopg 3, async pool): the SQLite store's semantics, for several machines; one
database object shared by one store per resource.

Each call takes a pooled connection; a write is one transaction, and a write that depends on what it read locks
the rows it read (FOR UPDATE) where SQLite's BEGIN IMMEDIATE serialized every writer.
"""

from __future__ import annotations

from inhouse.storage.composed import ComposedMetadataStore
from inhouse.storage.postgres.batches import PostgresBatches
from inhouse.storage.postgres.database import PostgresDatabase
from inhouse.storage.postgres.files import PostgresFiles
from inhouse.storage.postgres.idempotency import PostgresIdempotency
from inhouse.storage.postgres.jobs import PostgresJobs
from inhouse.storage.postgres.keys import PostgresKeys
from inhouse.storage.postgres.models import PostgresModels
from inhouse.storage.postgres.uploads import PostgresUploads
from inhouse.storage.postgres.usage import PostgresUsage


class PostgresMetadataStore(ComposedMetadataStore):
    def __init__(self, url: str) -> None:
        db = PostgresDatabase(url)
        super().__init__(db, keys=PostgresKeys(db), files=PostgresFiles(db), uploads=PostgresUploads(db),
                         models=PostgresModels(db), idempotency=PostgresIdempotency(db), jobs=PostgresJobs(db),
                         batches=PostgresBatches(db), usage=PostgresUsage(db))
        self.db = db
