"""Bounded thread pools for model work, one per kind. Generation, diffusion, training and model loads run
here, never on asyncio's default pool: that pool serves disk I/O (uploads, downloads, blob commits), which
must not queue behind a minute of diffusion or a stream held open by a slow client."""

from __future__ import annotations

import asyncio
import contextvars
import functools
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Literal, ParamSpec, TypeVar

Kind = Literal["chat", "images", "embeddings", "training"]
P = ParamSpec("P")
T = TypeVar("T")

# Few threads: each kind's engines use every core themselves (torch intra-op threads), so more threads
# only interleave the same work. Requests past these wait in the pool, already bounded by admission.
THREADS: dict[Kind, int] = {"chat": 4, "images": 2, "embeddings": 2, "training": 1}


class ModelExecutors:
    """Owned by the service container: built with the engines, shut down on close."""

    def __init__(self, threads: dict[Kind, int] | None = None) -> None:
        self._threads = {**THREADS, **(threads or {})}
        self._pools: dict[Kind, ThreadPoolExecutor] = {}
        self._lock = threading.Lock()

    def pool(self, kind: Kind) -> ThreadPoolExecutor:
        # Made on first use (an unused kind costs nothing) and made again after shutdown, so services
        # closed and reopened keep working.
        with self._lock:
            pool = self._pools.get(kind)
            if pool is None:
                pool = self._pools[kind] = ThreadPoolExecutor(self._threads[kind], thread_name_prefix=kind)
            return pool

    async def run(self, kind: Kind, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """asyncio.to_thread on this kind's pool (context variables travel along, as with to_thread)."""
        call = functools.partial(contextvars.copy_context().run, fn, *args, **kwargs)
        return await asyncio.get_running_loop().run_in_executor(self.pool(kind), call)

    def shutdown(self) -> None:
        with self._lock:
            pools, self._pools = list(self._pools.values()), {}
        for pool in pools:
            # No wait: a training step or a stream's generation ends on its own (their stop flags are set).
            pool.shutdown(wait=False, cancel_futures=True)
