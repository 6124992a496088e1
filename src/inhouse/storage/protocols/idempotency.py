"""The contract of idempotency keys: one answer per (scope, key), claimed under a lease while it is computed."""

from __future__ import annotations

from typing import Protocol

from inhouse.records import IdempotencyRecord


class IdempotencyStore(Protocol):
    """A (scope, key) is in flight (claimed by one process, under a lease it renews) or finished (its answer
    stored, replayed to every retry until purged). At most one live claim per (scope, key), across processes."""

    async def begin_idempotent(
        self, record: IdempotencyRecord, lease_owner: str, lease_until: int
    ) -> IdempotencyRecord | None:
        """Claim (scope, key) for `lease_owner` until `lease_until`; None when claimed.

        Returns the existing record instead when it is finished, or in flight under a lease that has not
        expired by `record.created_at`. An in-flight record whose lease expired (its process died) is taken over:
        a crash never blocks a retry for longer than one lease. Of two processes claiming at once, one gets None."""
        ...

    async def renew_idempotent(self, lease_owner: str, lease_until: int) -> int:
        """Extend every in-flight claim of `lease_owner` to `lease_until`; returns how many (a claim taken over by
        another process is no longer this owner's, and is not extended)."""
        ...

    async def finish_idempotent(
        self, scope: str, key: str, request_hash: str, status_code: int, content_type: str, body: bytes
    ) -> None:
        """Store the answer of (scope, key): from now on `begin_idempotent` returns it, whatever the lease."""
        ...

    async def abort_idempotent(self, scope: str, key: str) -> None:
        """Drop an in-flight claim (the request failed before it had an answer worth replaying), so a retry runs
        afresh; a finished answer is kept."""
        ...

    async def purge_idempotent(self, before: int) -> int:
        """Delete every record created before `before`, finished or not; returns how many."""
        ...
