"""Cross-request dynamic batching: windows from many requests queue, batches form by a token budget with
similar lengths together, one thread runs the model, each request gets back exactly its own vectors.

Background work (a batch's lines) waits in its own queue and runs one forward batch at a time, only while no
live request's window waits: a large batch never puts more than one forward batch ahead of a live request."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np

from inhouse import observability
from inhouse.engines.embeddings.encoder import Encoder, FloatArray
from inhouse.errors import Overloaded

log = logging.getLogger(__name__)

_PAD_WASTE = 0.2  # share of a batch's padded tokens that may be padding
_PAD_SLACK = 64  # tokens of padding always allowed: tiny batches cost more in per-call overhead
_REFUSED = observability.REFUSED.labels("embeddings")
# While live requests come (one arrived within this many seconds), background work runs in forward batches of
# at most this many padded tokens: a live request that arrives mid-batch then waits about as long as its own
# forward takes, not a full batch's time. Without live traffic background batches are full-size.
_LIVE_GRACE_S = 2.0
_POLITE_TOKENS = 32


@dataclass
class _Job:
    windows: list[list[int]]
    out: FloatArray
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[FloatArray]
    remaining: int
    failed: bool = False


@dataclass(order=True)
class _Item:
    length: int
    seq: int
    job: _Job = field(compare=False)
    index: int = field(compare=False)


class Batcher:
    def __init__(self, encoder: Encoder, *, max_batch_tokens: int, max_batch_size: int, max_queued_inputs: int) -> None:
        self.encoder = encoder
        self.max_batch_tokens = max_batch_tokens
        self.max_batch_size = max_batch_size
        self.max_queued_inputs = max_queued_inputs
        self._cond = threading.Condition()
        self._pending: list[_Item] = []
        # Background jobs' windows, cut into batches once when submitted (sorted by length), oldest job first.
        self._background: deque[list[_Item]] = deque()
        self._seq = 0
        self._reserved = 0
        self._closed = False
        self.last_used = time.monotonic()
        self._live_at = -_LIVE_GRACE_S  # when a live request last submitted windows (monotonic)
        self.forward_calls = 0
        self.forwarded = 0
        self.label_as("unknown")
        self._thread = threading.Thread(target=self._run, name="embedding-batcher", daemon=True)
        self._thread.start()

    def label_as(self, model: str) -> None:
        """The `model` label its metrics carry (a configured id, or `fine-tuned`); set by whoever loads it."""
        model = observability.model_label(model)
        self._batch_inputs = observability.EMBEDDING_BATCH_INPUTS.labels(model)
        self._padding = observability.EMBEDDING_PADDING_EFFICIENCY.labels(model)
        self.model = model

    @property
    def queued_inputs(self) -> int:
        """Inputs admitted and not yet answered (what max_queued_inputs caps)."""
        return self._reserved

    @property
    def pending_windows(self) -> int:
        """Windows waiting for the model thread to take them."""
        return len(self._pending)

    # -- admission --------------------------------------------------------------------------------
    @contextmanager
    def reserve(self, n_inputs: int) -> Iterator[None]:
        """Hold room for a request's inputs from admission to answer; full → 429 before any work."""
        with self._cond:
            if self._reserved and self._reserved + n_inputs > self.max_queued_inputs:
                _REFUSED.inc()
                raise Overloaded(
                    "The embedding queue is full; retry shortly.", retry_after_s=1.0, code="queue_full"
                )
            self._reserved += n_inputs
        try:
            yield
        finally:
            with self._cond:
                self._reserved -= n_inputs

    # -- submission -------------------------------------------------------------------------------
    async def embed(self, windows: list[list[int]], *, background: bool = False) -> FloatArray:
        """Pooled vectors for each window, in order, batched with whatever else is waiting (`background`: with
        other background work, whenever no live window waits)."""
        self.last_used = time.monotonic()
        if not background:
            self._live_at = self.last_used
        loop = asyncio.get_running_loop()
        job = _Job(windows, np.empty((len(windows), self.encoder.spec.dimensions), dtype=np.float32), loop,
                   loop.create_future(), len(windows))
        with self._cond:
            if self._closed:
                raise RuntimeError("batcher closed")
            items = []
            for i, w in enumerate(windows):
                self._seq += 1
                items.append(_Item(len(w), self._seq, job, i))
            if background:
                self._background.extend(self._batches(items))
            else:
                self._pending.extend(items)
            self._cond.notify()
        return await job.future

    # -- the model thread -------------------------------------------------------------------------
    def _batches(self, items: list[_Item], max_tokens: int | None = None) -> Iterator[list[_Item]]:
        """Sorted by length, cut where the batch is full, over the token budget, or would spend more
        than a fifth of its work (plus a little slack) on padding."""
        budget = self.max_batch_tokens if max_tokens is None else max_tokens
        items.sort()
        batch: list[_Item] = []
        real = 0
        for item in items:
            width = item.length  # sorted ascending: the newest item is the widest
            padded = width * (len(batch) + 1)
            if batch and (
                len(batch) >= self.max_batch_size
                or padded > budget
                or padded - (real + item.length) > _PAD_WASTE * padded + _PAD_SLACK
            ):
                yield batch
                batch, real = [], 0
            batch.append(item)
            real += item.length
        if batch:
            yield batch

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._pending and not self._background and not self._closed:
                    self._cond.wait()
                if self._closed:
                    return
                if self._pending:
                    items, self._pending = self._pending, []
                    batches = list(self._batches(items))
                else:  # background: the oldest job's next batch; the rest waits for the next round
                    polite = time.monotonic() - self._live_at < _LIVE_GRACE_S
                    head = self._background.popleft()
                    if polite:  # only its shortest windows, as many as the polite budget holds
                        first, *rest = self._batches(head, _POLITE_TOKENS)
                        if rest:
                            self._background.appendleft([it for part in rest for it in part])
                        head = first
                    batches = [head]
            for batch in batches:
                live = [it for it in batch if not it.job.failed and not it.job.future.cancelled()]
                if not live:
                    continue
                try:
                    vectors = self.encoder.forward([it.job.windows[it.index] for it in live])
                    self.forward_calls += 1
                    self.forwarded += len(live)
                    # Batches are padded to their longest window, and sorted ascending: the last is the longest.
                    self._batch_inputs.observe(len(live))
                    self._padding.observe(sum(it.length for it in live) / (len(live) * live[-1].length or 1))
                except Exception as exc:  # report to every request in the batch, keep serving
                    log.exception("embedding forward failed")
                    for it in live:
                        self._fail(it.job, exc)
                    continue
                for row, it in enumerate(live):
                    job = it.job
                    job.out[it.index] = vectors[row]
                    job.remaining -= 1
                    if job.remaining == 0:
                        job.loop.call_soon_threadsafe(_resolve, job.future, job.out)

    def _fail(self, job: _Job, exc: Exception) -> None:
        if not job.failed:
            job.failed = True
            job.loop.call_soon_threadsafe(_reject, job.future, exc)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join(timeout=30)
        log.info("embedding batcher closing: %d windows in %d forward calls", self.forwarded, self.forward_calls)
        self.encoder.close()

    @property
    def busy(self) -> bool:
        with self._cond:
            return bool(self._pending) or bool(self._background) or self._reserved > 0


def _resolve(future: asyncio.Future[FloatArray], value: FloatArray) -> None:
    if not future.done():
        future.set_result(value)


def _reject(future: asyncio.Future[FloatArray], exc: Exception) -> None:
    if not future.done():
        future.set_exception(exc)
