"""The model registry: a model's payload (a fine-tune's weights) is fetched on the event loop and handed to its
loader on a model thread, once per load; a loaded model is served without fetching again."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

from inhouse.config import ModelEntry
from inhouse.engines.registry import ModelRegistry


class Loaded:
    def __init__(self, payload: bytes | None) -> None:
        self.payload = payload
        self.thread = threading.get_ident()

    def idle_since(self) -> float | None:
        return None

    def close(self) -> None:
        pass


def test_fetch_runs_on_the_loop_and_its_bytes_reach_the_loader_on_a_model_thread() -> None:
    pool = ThreadPoolExecutor(1)
    fetched: list[tuple[str, int]] = []

    async def fetch(entry: ModelEntry) -> bytes:
        fetched.append((entry.id, threading.get_ident()))
        await asyncio.sleep(0)  # real async I/O happens here (the blob store)
        return b"weights of " + entry.id.encode()

    registry = ModelRegistry("fine-tuned", lambda _e, payload: Loaded(payload), 900.0, lambda: pool, fetch=fetch)
    entry = ModelEntry(id="checkpoints/ftjob-1.bin", kind="chat-weights", path="/nowhere")

    async def scenario() -> tuple[list[Loaded], int]:
        loop_thread = threading.get_ident()
        engines = await asyncio.gather(*(registry.get(entry) for _ in range(4)))  # concurrent first uses
        engines.append(await registry.get(entry))
        return engines, loop_thread

    try:
        engines, loop_thread = asyncio.run(scenario())
    finally:
        pool.shutdown()
    assert fetched == [(entry.id, loop_thread)]  # once, on the loop's thread
    assert all(e is engines[0] for e in engines)
    assert engines[0].payload == b"weights of checkpoints/ftjob-1.bin"
    assert engines[0].thread != loop_thread  # built off the loop


def test_without_fetch_the_loader_gets_no_payload() -> None:
    registry = ModelRegistry("chat", lambda _e, payload: Loaded(payload), 900.0)
    engine = asyncio.run(registry.get(ModelEntry(id="m", kind="chat", path="/nowhere")))
    assert engine.payload is None
