"""The storage seams: what services may ask of a metadata store and a blob store."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol

from inhouse.storage.protocols.batches import BatchStore
from inhouse.storage.protocols.files import FileStore, Order
from inhouse.storage.protocols.idempotency import IdempotencyStore
from inhouse.storage.protocols.jobs import JobStore
from inhouse.storage.protocols.keys import KeyStore
from inhouse.storage.protocols.models import ModelStore
from inhouse.storage.protocols.uploads import UploadStore
from inhouse.storage.protocols.usage import UsageStore

__all__ = [
    "BatchStore", "BlobStore", "BlobWriter", "FileStore", "IdempotencyStore", "JobStore", "KeyStore",
    "MetadataStore", "ModelStore", "Order", "UploadStore", "UsageStore", "read_all",
]


class MetadataStore(Protocol):
    """Rows about objects, one store per resource (each with its written contract in `storage/protocols/`),
    all over one database. A service is handed the stores it uses; the lifecycle belongs to the composition root.
    A use case that writes rows of two resources is one method of the resource that owns it, in one transaction
    (`uploads.complete_upload` inserts the file, `jobs.finish_job_success` the model, `batches.finish_batch` the
    output files, `usage.settle_training_usage` marks jobs counted)."""

    keys: KeyStore
    files: FileStore
    uploads: UploadStore
    models: ModelStore
    idempotency: IdempotencyStore
    jobs: JobStore
    batches: BatchStore
    usage: UsageStore

    async def open(self) -> None:
        """Connect (a SQLite file is created 0600 if missing); a store is unusable before."""
        ...

    async def close(self) -> None:
        """Disconnect, after every call in flight has returned."""
        ...

    async def migrate(self) -> int:
        """Apply the schema steps not applied yet (`migrations.py`), each once, even with several processes
        migrating at once; returns how many this call applied."""
        ...

    async def check(self) -> dict[str, str]:
        """Facts about the database for /health and `inhouse migrate`. Raises RuntimeError when a setting that
        keeps acknowledged writes durable is not in force."""
        ...


class BlobWriter(Protocol):
    """One blob being written: bytes go to a temporary place and appear under the key only on commit."""

    async def write(self, data: bytes) -> None: ...
    async def commit(self) -> tuple[int, str]: ...
    async def abort(self) -> None: ...


class BlobStore(Protocol):
    """Bytes by key. Keys are ours (built in `services/blob_keys.py`), never derived from a client's filename."""

    async def open(self) -> None: ...
    async def close(self) -> None: ...
    def writer(self, key: str) -> BlobWriter: ...
    def read(self, key: str, chunk_size: int = 1024 * 1024) -> AsyncIterator[bytes]: ...
    async def size(self, key: str) -> int | None: ...
    async def age_seconds(self, key: str) -> float | None: ...
    async def delete(self, key: str) -> None: ...
    async def list_keys(self, prefix: str) -> list[str]: ...
    async def remove_temporaries(self, older_than_s: float) -> int: ...


async def read_all(blobs: BlobStore, key: str) -> bytes:
    """A whole blob in memory: for small artifacts only (adapters, weights being loaded anyway)."""
    return b"".join([chunk async for chunk in blobs.read(key)])
