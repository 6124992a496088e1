"""A metadata store made by composition: one database (its connections, transactions and schema) and the
per-resource stores that share it. Each backend builds one; none inherits another's methods."""

from __future__ import annotations

from typing import Protocol

from inhouse.storage.protocols.batches import BatchStore
from inhouse.storage.protocols.files import FileStore
from inhouse.storage.protocols.idempotency import IdempotencyStore
from inhouse.storage.protocols.jobs import JobStore
from inhouse.storage.protocols.keys import KeyStore
from inhouse.storage.protocols.models import ModelStore
from inhouse.storage.protocols.uploads import UploadStore
from inhouse.storage.protocols.usage import UsageStore


class Database(Protocol):
    """What a backend's database object answers for: opening and closing, the schema, and its health."""

    async def open(self) -> None: ...
    async def close(self) -> None: ...
    async def migrate(self) -> int: ...
    async def check(self) -> dict[str, str]: ...


class ComposedMetadataStore:
    """The per-resource stores of one backend over one database; the lifecycle is the database's."""

    def __init__(self, database: Database, *, keys: KeyStore, files: FileStore, uploads: UploadStore,
                 models: ModelStore, idempotency: IdempotencyStore, jobs: JobStore, batches: BatchStore,
                 usage: UsageStore) -> None:
        self.database = database
        self.keys = keys
        self.files = files
        self.uploads = uploads
        self.models = models
        self.idempotency = idempotency
        self.jobs = jobs
        self.batches = batches
        self.usage = usage

    async def open(self) -> None:
        await self.database.open()

    async def close(self) -> None:
        await self.database.close()

    async def migrate(self) -> int:
        return await self.database.migrate()

    async def check(self) -> dict[str, str]:
        return await self.database.check()
