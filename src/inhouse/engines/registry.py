"""Loaded embedding models by id: load on first use (off the event loop), unload when idle."""

from __future__ import annotations

import asyncio
import logging
import time

from inhouse.config import ModelEntry
from inhouse.engines.embeddings.encoder import EncoderSpec
from inhouse.engines.embeddings.engine import EmbeddingEngine, EmbeddingOptions, load_encoder
from inhouse.engines.locate import locate_model
from inhouse.errors import EngineFailure

log = logging.getLogger(__name__)


class EmbeddingRegistry:
    def __init__(self, options: EmbeddingOptions, idle_unload_s: float) -> None:
        self.options = options
        self.idle_unload_s = idle_unload_s
        self._engines: dict[str, EmbeddingEngine] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    def _load(self, entry: ModelEntry) -> EmbeddingEngine:
        path = locate_model(entry.path)
        if path is None:
            raise EngineFailure(
                f"The model `{entry.id}` is configured at {entry.path!r}, but no weights were found there.",
                code="model_not_installed",
            )
        t0 = time.perf_counter()
        engine = EmbeddingEngine(load_encoder(EncoderSpec.read(path), self.options), self.options)
        log.info("loaded embedding model %s (%s backend) in %.1f s", entry.id, engine.encoder.backend,
                 time.perf_counter() - t0)
        return engine

    async def get(self, entry: ModelEntry) -> EmbeddingEngine:
        engine = self._engines.get(entry.id)
        if engine is not None:
            return engine
        lock = self._locks.setdefault(entry.id, asyncio.Lock())
        async with lock:
            engine = self._engines.get(entry.id)
            if engine is None:
                try:
                    engine = await asyncio.to_thread(self._load, entry)
                except EngineFailure:
                    raise
                except Exception as exc:
                    log.exception("loading embedding model %s failed", entry.id)
                    raise EngineFailure(f"The model `{entry.id}` could not be loaded.", code="model_load_failed") \
                        from exc
                self._engines[entry.id] = engine
        return engine

    def loaded(self) -> list[str]:
        return list(self._engines)

    async def unload_idle(self) -> list[str]:
        now = time.monotonic()
        gone = [mid for mid, e in self._engines.items()
                if now - e.batcher.last_used > self.idle_unload_s and not e.batcher.busy]
        for mid in gone:
            engine = self._engines.pop(mid)
            await asyncio.to_thread(engine.close)
            log.info("unloaded idle embedding model %s", mid)
        return gone

    async def close(self) -> None:
        engines, self._engines = list(self._engines.values()), {}
        for engine in engines:
            await asyncio.to_thread(engine.close)
