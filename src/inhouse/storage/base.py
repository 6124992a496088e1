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

    async def write(self, data: bytes) -> None:
        """Add bytes at the end (kept in the temporary place; nothing is visible under the key yet)."""
        ...

    async def commit(self) -> tuple[int, str]:
        """Make the bytes durable and visible under the key, replacing any blob there; returns (size, sha256 hex).
        Only after it returns may a row name the blob ("bytes before rows")."""
        ...

    async def abort(self) -> None:
        """Drop the temporary bytes; the key is left as it was. Safe to call twice, or after a failed commit."""
        ...


class BlobStore(Protocol):
    """Bytes by key. Keys are ours (built in `services/blob_keys.py`), never derived from a client's filename."""

    async def open(self) -> None:
        """Make the store usable (create the directory or check the bucket)."""
        ...

    async def close(self) -> None:
        """Release connections and threads, after every call in flight has returned."""
        ...

    def writer(self, key: str) -> BlobWriter:
        """A writer for `key` (raises ValueError for a key outside the store's layout)."""
        ...

    def read(self, key: str, chunk_size: int = 1024 * 1024, *, offset: int = 0,
             length: int | None = None) -> AsyncIterator[bytes]:
        """The blob's bytes from `offset`, `length` of them (None: to the end), in chunks of at most `chunk_size`,
        streamed (never the whole blob in memory). Raises FileNotFoundError, on the first chunk, when there is
        no such blob; an offset at or past the end yields nothing. Once the first chunk is read, the bytes stay
        readable to the end whatever a delete does meanwhile."""
        ...

    async def size(self, key: str) -> int | None:
        """The blob's size in bytes, None when there is none."""
        ...

    async def age_seconds(self, key: str) -> float | None:
        """Seconds since the blob was written, None when there is none."""
        ...

    async def delete(self, key: str) -> None:
        """Remove the blob; nothing when there is none."""
        ...

    async def list_keys(self, prefix: str) -> list[str]:
        """Every key that starts with `prefix` (committed blobs only), in no promised order."""
        ...

    async def remove_temporaries(self, older_than_s: float) -> int:
        """Drop writes never committed nor aborted (a crashed writer's) older than `older_than_s`; returns how
        many went."""
        ...


async def read_all(blobs: BlobStore, key: str) -> bytes:
    """A whole blob in memory: for small artifacts only (adapters, weights being loaded anyway)."""
    return b"".join([chunk async for chunk in blobs.read(key)])
