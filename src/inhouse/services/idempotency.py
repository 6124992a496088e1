"""Idempotency-Key: the first answer to a POST is kept and replayed; the same key with another body is 422."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass

from inhouse.errors import IdempotencyConflict, InhouseError
from inhouse.ids import now
from inhouse.records import IdempotencyRecord
from inhouse.storage.base import IdempotencyStore

RETENTION_S = 24 * 3600
LEASE_S = 10  # an in-flight claim outlives its process by at most this long
RENEW_S = 3.0  # how often a live process renews its claims (well inside one lease)


class IdempotencyInFlight(InhouseError):
    """The first request with this key has not answered yet."""


@dataclass(frozen=True, slots=True)
class Replay:
    status_code: int
    content_type: str
    body: bytes


class IdempotencyService:
    def __init__(self, store: IdempotencyStore, clock: Callable[[], int] = now, lease_s: int = LEASE_S) -> None:
        self.store = store
        self.clock = clock
        self.lease_s = lease_s
        # This process's name on its claims: a claim is live while this process renews it.
        self.instance = "inst_" + secrets.token_hex(8)

    async def claim(self, scope: str, key: str) -> IdempotencyRecord | None:
        """None: the caller now owns the key and runs the request. Else the record already there."""
        # The body's hash is known only once the body has streamed through, so the claim is made
        # first and the hash recorded with the answer.
        t = self.clock()
        return await self.store.begin_idempotent(
            IdempotencyRecord(scope, key, "", t, None, None, None), self.instance, t + self.lease_s
        )

    async def renew(self) -> int:
        """Keep this process's in-flight claims alive; run every RENEW_S seconds while serving."""
        return await self.store.renew_idempotent(self.instance, self.clock() + self.lease_s)

    def replay_for(self, existing: IdempotencyRecord, request_hash: str) -> Replay:
        if existing.status_code is None:
            raise IdempotencyInFlight(
                "A request with this Idempotency-Key is still being processed.", code="idempotency_in_flight"
            )
        if existing.request_hash != request_hash:
            raise IdempotencyConflict(
                "Keys for idempotent requests can only be used with the same parameters they were first used "
                "with. Try using a key other than the one used in the original request.",
                param="Idempotency-Key",
                code="idempotency_key_reused",
            )
        return Replay(existing.status_code, existing.content_type or "application/json", existing.body or b"")

    async def finish(self, scope: str, key: str, request_hash: str, replay: Replay) -> None:
        await self.store.finish_idempotent(
            scope, key, request_hash, replay.status_code, replay.content_type, replay.body
        )

    async def abort(self, scope: str, key: str) -> None:
        await self.store.abort_idempotent(scope, key)

    async def purge(self) -> int:
        return await self.store.purge_idempotent(self.clock() - RETENTION_S)
