"""Bounded admission: at most N requests of a kind in progress; the next gets 429 before any work is done."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator

from inhouse.errors import Overloaded


class Admission:
    def __init__(self, limit: Callable[[], int], message: str, retry_after_s: float) -> None:
        self._limit = limit  # read each time, so a changed setting applies at once
        self._message = message
        self._retry_after_s = retry_after_s
        self._active = 0
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def __call__(self) -> Iterator[None]:
        with self._lock:
            if self._active >= self._limit():
                raise Overloaded(self._message, retry_after_s=self._retry_after_s, code="queue_full")
            self._active += 1
        try:
            yield
        finally:
            with self._lock:
                self._active -= 1
