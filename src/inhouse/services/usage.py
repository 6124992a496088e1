"""Usage recording: each request's counts, aggregated in memory per minute and written about once a second.

Counting happens in the API layer, after the answer is known (`Meter`): only there are the key, the model name
the caller used, the endpoint and the real counts (a stream's are known only when it ends) all at hand, and the
services stay unaware of keys. One request costs a dict update here; the database sees one transaction per
second for all of them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from inhouse.records import UsageRecord
from inhouse.services.keys import Caller
from inhouse.services.rate_limits import SYNC_KEEP_S, SYNC_WINDOW_S, RateLimiter, limits_of
from inhouse.storage.base import UsageStore

log = logging.getLogger(__name__)

FLUSH_SECONDS = 1.0
# Rows waiting, one per distinct (minute, project, key, model, endpoint): past it the request that adds one
# waits for a flush instead. Stream endings never wait (they may pass it by the streams in progress, which
# the generation slots bound).
MAX_PENDING = 10_000

_Key = tuple[int, str, str | None, str, str]


class UsageService:
    def __init__(self, store: UsageStore, limiter: RateLimiter, *, flush_seconds: float = FLUSH_SECONDS,
                 max_pending: int = MAX_PENDING, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.limiter = limiter
        self.flush_seconds = flush_seconds
        self.max_pending = max_pending
        self.clock = clock
        self._pending: dict[_Key, list[int]] = {}  # -> [requests, input tokens, output tokens, images]
        self._last_used: dict[str, int] = {}
        self._lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._stopping = False
        self._task: asyncio.Task[None] | None = None

    def meter(self, caller: Caller, endpoint: str) -> Meter:
        return Meter(self, caller, endpoint)

    # -- counting ---------------------------------------------------------------------------------------
    def add(self, project_id: str, key_id: str | None, model: str, endpoint: str, input_tokens: int = 0,
            output_tokens: int = 0, images: int = 0) -> bool:
        """Count one request; never waits. True when the buffer is full and wants a flush now."""
        now = int(self.clock())
        key = (now - now % 60, project_id, key_id, model, endpoint)
        counts = self._pending.get(key)
        if counts is None:
            counts = self._pending[key] = [0, 0, 0, 0]
        counts[0] += 1
        counts[1] += input_tokens
        counts[2] += output_tokens
        counts[3] += images
        if key_id is not None:
            self._last_used[key_id] = now
        return len(self._pending) >= self.max_pending

    async def record(self, project_id: str, key_id: str | None, model: str, endpoint: str, input_tokens: int = 0,
                     output_tokens: int = 0, images: int = 0) -> None:
        """Count one request; when the buffer is full, wait for it to be written rather than drop anything."""
        if self.add(project_id, key_id, model, endpoint, input_tokens, output_tokens, images):
            await self.flush(only_if_full=True)

    def record_nowait(self, project_id: str, key_id: str | None, model: str, endpoint: str, input_tokens: int = 0,
                      output_tokens: int = 0) -> None:
        """Count one request without waiting: when the buffer is full the writer is woken instead."""
        if self.add(project_id, key_id, model, endpoint, input_tokens, output_tokens):
            self._wake.set()

    def touch(self, key_id: str) -> None:
        """The key was used (for `last_used_at`), on any route."""
        self._last_used[key_id] = int(self.clock())
        if len(self._last_used) >= self.max_pending:
            self._wake.set()

    # -- writing ----------------------------------------------------------------------------------------
    async def flush(self, *, only_if_full: bool = False) -> None:
        """Write what is pending in one transaction. On failure it stays pending for the next try."""
        async with self._lock:
            if only_if_full and len(self._pending) < self.max_pending:
                return  # another request's flush got there first
            if not self._pending and not self._last_used:
                return
            pending, used = self._pending, self._last_used
            self._pending, self._last_used = {}, {}
            rows = [UsageRecord(k[0], k[1], k[2], k[3], k[4], c[0], c[1], c[2], c[3]) for k, c in pending.items()]
            try:
                # Shielded: a cancelled caller must not leave a write running whose rows are put back too.
                await asyncio.shield(self.store.add_usage(rows, used))
            except Exception:
                self._restore(pending, used)
                raise

    def _restore(self, pending: dict[_Key, list[int]], used: dict[str, int]) -> None:
        for key, counts in pending.items():
            mine = self._pending.setdefault(key, [0, 0, 0, 0])
            for i, n in enumerate(counts):
                mine[i] += n
        for key_id, at in used.items():
            self._last_used[key_id] = max(at, self._last_used.get(key_id, 0))

    async def _flush_forever(self) -> None:
        while not self._stopping:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.flush_seconds)
            self._wake.clear()
            try:
                await self.flush()
            except Exception:
                log.exception("writing usage failed; it stays pending and is retried")
            try:
                await self.exchange_limits()
            except Exception:
                log.exception("sharing rate limits failed; this process limits on its own until it works again")

    async def exchange_limits(self) -> None:
        """Share this process's rate-limit use with the other processes on the database, and take theirs."""
        mine = self.limiter.outgoing()
        rows = await self.store.exchange_rate_usage(mine, int(self.clock()), window=SYNC_WINDOW_S, keep=SYNC_KEEP_S)
        self.limiter.stored(mine)
        self.limiter.incoming(rows)

    def start(self) -> None:
        self._stopping = False
        self._task = asyncio.create_task(self._flush_forever())

    async def stop(self) -> None:
        """Stop the periodic writer (letting a write in progress finish), then write what is left."""
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            await self._task
            self._task = None
        try:
            await self.flush()
        except Exception:
            log.exception("writing usage at shutdown failed: %d rows are lost", len(self._pending))


class Meter:
    """One metered request: takes its estimated tokens before the work (when its key or its project has a token
    limit: from both buckets, or neither), then counts what it really used and corrects the estimate in each."""

    __slots__ = ("caller", "endpoint", "hopeless", "taken", "usage")

    def __init__(self, usage: UsageService, caller: Caller, endpoint: str) -> None:
        self.usage = usage
        self.caller = caller
        self.endpoint = endpoint
        self.taken = 0  # estimated tokens taken and not settled yet
        self.hopeless = False  # refused for asking more than the whole limit: retrying cannot help

    def admit(self, estimate: Callable[[], int]) -> None:
        """Before the costly work: 429 (RateLimitExceeded) when the key's or the project's tokens this minute do
        not cover the estimate. `estimate` runs only under a token limit."""
        limits = limits_of(self.caller, "tokens")
        if limits:
            n = estimate()
            self.hopeless = n > min(lim.per_minute for lim in limits)
            self.usage.limiter.take("tokens", limits, n)
            self.taken += n

    def _settle(self, used: int) -> None:
        if self.taken or used:
            limits = limits_of(self.caller, "tokens")
            if limits:
                self.usage.limiter.settle("tokens", limits, self.taken, used)
        self.taken = 0

    async def done(self, model: str, *, input_tokens: int = 0, output_tokens: int = 0, images: int = 0) -> None:
        """The work is done: count it (one model request) and settle the estimate with the real tokens."""
        self._settle(input_tokens + output_tokens)
        await self.usage.record(self.caller.project.id, self.caller.key_id, model, self.endpoint, input_tokens,
                                output_tokens, images)

    def done_nowait(self, model: str, *, input_tokens: int = 0, output_tokens: int = 0) -> None:
        """`done` for the end of a stream, which may run where nothing can be awaited (a closing generator)."""
        self._settle(input_tokens + output_tokens)
        self.usage.record_nowait(self.caller.project.id, self.caller.key_id, model, self.endpoint, input_tokens,
                                 output_tokens)

    def close(self) -> None:
        """The request is over: an estimate never settled (the work failed) is given back."""
        self._settle(0)
