"""The contract of batches and the chunks of their lines: claimed by workers under leases, counted once."""

from __future__ import annotations

from typing import Any, Protocol

from inhouse.records import BatchChunk, BatchRecord, FileRecord, Page
from inhouse.storage.tables import BATCH_OPEN


class BatchStore(Protocol):
    """Batches move through the open states of `tables.BATCH_OPEN` to a terminal one, never back. A worker holds an
    open batch under a lease, as with jobs; once it lost the batch (cancelled and finished by another, claimed by
    another after its lease ran out) it can write nothing. A batch's counts and tokens move only with the chunks
    recorded, in the same transaction, so every line is counted once. `fields` name columns of
    `tables.BATCH_UPDATABLE`; any other is a bug (ValueError, nothing written)."""

    async def insert_batch(self, batch: BatchRecord) -> None:
        """Store a new batch (a duplicate id or unknown project: the backend's integrity error)."""
        ...

    async def get_batch(self, project_id: str, batch_id: str) -> BatchRecord | None:
        """The project's batch; None if the project has none by that id."""
        ...

    async def get_batch_any(self, batch_id: str) -> BatchRecord | None:
        """The batch whatever its project (for the worker); None if there is none."""
        ...

    async def list_batches(self, project_id: str, *, after: str | None, limit: int) -> Page[BatchRecord]:
        """The project's batches, newest first; `after` is a batch id of the same project."""
        ...

    async def transition_batch(self, project_id: str, batch_id: str, *, allowed: tuple[str, ...],
                               fields: dict[str, Any]) -> tuple[BatchRecord | None, bool]:
        """Set `fields` only if the batch's status is in `allowed`, in one transaction (of two racing transitions
        out of one state, exactly one happens); answers the batch as it is afterwards (None if the project has
        none by that id) and whether this call changed it. Ignores leases: this is the user's cancel."""
        ...

    async def claim_batch(self, owner: str, now: int, lease_s: int) -> BatchRecord | None:
        """The oldest open batch with no live lease (none, or one that ended before `now`), now leased to `owner`
        until now + lease_s with `attempts` + 1; None when there is none. Two claimers never get one batch."""
        ...

    async def heartbeat_batch(self, batch_id: str, owner: str, now: int, lease_s: int) -> str | None:
        """Renew `owner`'s lease to now + lease_s while the batch is open; answers its status (cancelling tells the
        worker to wind down), or None when `owner` does not hold the lease."""
        ...

    async def batch_update(self, batch_id: str, owner: str, fields: dict[str, Any],
                           allowed: tuple[str, ...] = BATCH_OPEN) -> bool:
        """Set `fields` if `owner` holds the lease and the status is open and in `allowed`, in one transaction;
        False, writing nothing, otherwise."""
        ...

    async def batch_chunks(self, batch_id: str) -> list[BatchChunk]:
        """The chunks recorded so far, in order (a resumed batch skips them)."""
        ...

    async def add_batch_chunk(self, batch_id: str, owner: str, chunk: BatchChunk) -> bool:
        """Record a chunk (its output and error lines already durable) and add its counts and tokens to the
        batch, in one transaction; a chunk recorded before is not counted again (True: it is recorded), even when
        two writes of it race. False, writing nothing, if `owner` lost the lease."""
        ...

    async def finish_batch(self, batch_id: str, owner: str, *, fields: dict[str, Any],
                           files: list[FileRecord]) -> bool:
        """Insert the output files' rows (their bytes already durable), set `fields` (a terminal state) and clear
        the lease, in one transaction; False, writing nothing, if `owner` lost the lease."""
        ...

    async def release_batch(self, batch_id: str, owner: str) -> None:
        """Give `owner`'s lease up (another worker may claim the batch at once); nothing if it is not `owner`'s."""
        ...

    async def open_batch_ids(self) -> set[str]:
        """Ids of batches not yet in a terminal state (their chunk blobs are still needed)."""
        ...
