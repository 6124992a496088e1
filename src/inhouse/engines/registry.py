"""Loaded models by id: load on first use (off the event loop), unload when idle. One registry per kind."""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor
from typing import Generic, Protocol, TypeVar

from inhouse import observability
from inhouse.config import ModelEntry
from inhouse.engines.embeddings.encoder import EncoderSpec
from inhouse.engines.embeddings.engine import EmbeddingEngine, EmbeddingOptions, load_encoder
from inhouse.engines.imports import import_libraries
from inhouse.engines.locate import require_model
from inhouse.errors import EngineFailure

log = logging.getLogger(__name__)


class Engine(Protocol):
    def idle_since(self) -> float | None:
        """Monotonic time it became idle, or None while it has work."""
        ...

    def close(self) -> None: ...


E = TypeVar("E", bound=Engine)
T = TypeVar("T")


class ModelRegistry(Generic[E]):
    """`load(entry, payload)` builds an engine on a model thread. `fetch(entry)`, when given, runs first on the
    event loop and its bytes are the payload (None without a fetch): async I/O (the blob store) stays on the
    loop, and a loader never calls back into it from its thread."""

    def __init__(self, kind: str, load: Callable[[ModelEntry, bytes | None], E], idle_unload_s: float,
                 executor: Callable[[], Executor | None] = lambda: None, libraries: tuple[str, ...] = (),
                 fetch: Callable[[ModelEntry], Awaitable[bytes]] | None = None) -> None:
        self.kind = kind
        self.libraries = libraries  # imported one thread at a time before the first load (engines/imports.py)
        self._load = load
        self._fetch = fetch
        self._executor = executor  # where loads run: the kind's model pool (None: asyncio's default)
        self.idle_unload_s = idle_unload_s
        self._engines: dict[str, E] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    def _timed_load(self, entry: ModelEntry, payload: bytes | None) -> E:
        t0 = time.perf_counter()
        try:
            import_libraries(*self.libraries)
            engine = self._load(entry, payload)
        except BaseException:
            observability.MODEL_LOAD_FAILURES.labels(self.kind).inc()
            raise
        took = time.perf_counter() - t0
        observability.MODEL_LOAD_SECONDS.labels(self.kind).observe(took)
        log.info("loaded %s model %s in %.1f s", self.kind, entry.id, took)
        return engine

    def _timed_close(self, engine: E) -> None:
        t0 = time.perf_counter()
        engine.close()
        observability.MODEL_UNLOAD_SECONDS.labels(self.kind).observe(time.perf_counter() - t0)

    async def get(self, entry: ModelEntry) -> E:
        engine = self._engines.get(entry.id)
        if engine is not None:
            return engine
        lock = self._locks.setdefault(entry.id, asyncio.Lock())
        async with lock:
            engine = self._engines.get(entry.id)
            if engine is None:
                try:
                    payload = await self._fetch(entry) if self._fetch is not None else None
                    engine = await self._off_loop(self._timed_load, entry, payload)
                    del payload  # the engine holds what it needs; the bytes go now, not at the next request
                except EngineFailure:
                    raise
                except Exception as exc:
                    log.exception("loading %s model %s failed", self.kind, entry.id)
                    raise EngineFailure(f"The model `{entry.id}` could not be loaded.",
                                        code="model_load_failed") from exc
                self._engines[entry.id] = engine
                # A model's Python objects live until it unloads; moved out of the collector's reach, full
                # collections stop walking them (0.3-0.8 s pauses of every thread with torch loaded).
                gc.freeze()
        return engine

    def loaded(self) -> list[str]:
        return list(self._engines)

    def engines(self) -> list[E]:
        """The loaded engines, for reading their live state (queue depths) at scrape time."""
        return list(self._engines.values())

    async def unload_idle(self) -> list[str]:
        now = time.monotonic()
        gone = []
        for mid, engine in list(self._engines.items()):
            since = engine.idle_since()
            if since is not None and now - since > self.idle_unload_s:
                gone.append(mid)
                del self._engines[mid]
                await self._off_loop(self._timed_close, engine)
                log.info("unloaded idle %s model %s", self.kind, mid)
        if gone:
            # Give what the unloaded models leave in reference cycles back to the collector, once.
            gc.unfreeze()
            gc.collect()
            gc.freeze()
        return gone

    async def close(self) -> None:
        engines, self._engines = list(self._engines.values()), {}
        for engine in engines:
            await self._off_loop(self._timed_close, engine)

    async def _off_loop(self, fn: Callable[..., T], *args: object) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor(), fn, *args)


def embedding_registry(options: EmbeddingOptions, idle_unload_s: float,
                       executor: Callable[[], Executor | None] = lambda: None) -> ModelRegistry[EmbeddingEngine]:
    def load(entry: ModelEntry, _payload: bytes | None) -> EmbeddingEngine:
        engine = EmbeddingEngine(load_encoder(EncoderSpec.read(require_model(entry)), options), options)
        # Fine-tunes load as `ft-embedding:<blob key>` (services/embedding_models.py): one label for them all.
        is_fine_tune = entry.id.startswith("ft-embedding:")
        engine.batcher.label_as(observability.FINE_TUNED if is_fine_tune else entry.id)
        return engine

    return ModelRegistry("embedding", load, idle_unload_s, executor, ("torch", "transformers"))
