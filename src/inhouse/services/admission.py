"""Bounded admission: at most N requests of a kind in progress; the next gets 429 before any work is done."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator

from inhouse import observability
from inhouse.errors import Overloaded


class Slot:
    """One admitted request. release() may be called by every path a request can end on; only the first counts."""

    def __init__(self, admission: Admission) -> None:
        self._admission = admission
        self._held = True

    def release(self) -> None:
        with self._admission.lock:
            if self._held:
                self._held = False
                self._admission.active -= 1


class Admission:
    def __init__(self, limit: Callable[[], int], message: str, retry_after_s: float, kind: str = "other") -> None:
        self._limit = limit  # read each time, so a changed setting applies at once
        self._message = message
        self._retry_after_s = retry_after_s
        self._refused = observability.REFUSED.labels(kind)  # kind: one of observability.REFUSAL_KINDS
        self.active = 0
        self.lock = threading.Lock()

    def acquire(self) -> Slot:
        """A slot the caller must release; for a request whose work outlives the handler (a stream)."""
        with self.lock:
            if self.active >= self._limit():
                self._refused.inc()
                raise Overloaded(self._message, retry_after_s=self._retry_after_s, code="queue_full")
            self.active += 1
        return Slot(self)

    @contextlib.contextmanager
    def __call__(self) -> Iterator[None]:
        slot = self.acquire()
        try:
            yield
        finally:
            slot.release()


class ByteBudget:
    """Bytes that requests hold in memory, all requests together; a request that would pass it gets 429.

    Admission slots are taken only once a body is in (so a stalled upload holds none); this bounds what the
    bodies being received can hold meanwhile."""

    def __init__(self, limit: Callable[[], int], message: str, retry_after_s: float, kind: str = "other") -> None:
        self._limit = limit
        self._message = message
        self._retry_after_s = retry_after_s
        self._refused = observability.REFUSED.labels(kind)
        self.used = 0
        self._lock = threading.Lock()

    def take(self, n: int) -> None:
        with self._lock:
            if self.used + n > self._limit():
                self._refused.inc()
                raise Overloaded(self._message, retry_after_s=self._retry_after_s, code="queue_full")
            self.used += n

    def give(self, n: int) -> None:
        with self._lock:
            self.used -= n
