"""The background worker: periodic housekeeping now, long jobs as they are added; clean stop on signal."""

from __future__ import annotations

import asyncio
import logging
import signal

from inhouse.engines.imports import import_libraries
from inhouse.services.container import Services

log = logging.getLogger("inhouse.worker")


class Worker:
    def __init__(self, services: Services) -> None:
        self.services = services
        self._stop = asyncio.Event()

    def stop(self) -> None:
        self._stop.set()

    async def _pause(self, seconds: float) -> None:
        try:
            await asyncio.wait_for(self._stop.wait(), timeout=seconds)
        except TimeoutError:
            return

    async def sweeps(self) -> None:
        while not self._stop.is_set():
            try:
                await self.services.maintenance.sweep()
            except Exception:
                log.exception("sweep failed; retrying next interval")
            await self._pause(self.services.settings.sweep_interval_seconds)

    async def jobs(self) -> None:
        """Claim jobs one at a time: training takes the cores, so one job per worker process."""
        # Importing the training stack takes seconds; do it once up front, not inside the first job.
        await self.services.executors.run("training", _warm_imports)
        while not self._stop.is_set():
            try:
                ran = await self.services.jobs.run_next()
            except Exception:
                log.exception("job loop failed; retrying")
                ran = False
            if not ran:
                await self._pause(self.services.settings.fine_tuning.poll_seconds)

    async def run(self) -> None:
        await asyncio.gather(self.sweeps(), self.jobs())


def _warm_imports() -> None:
    import_libraries("torch", "transformers", "peft")


async def run_worker(services: Services) -> None:
    """`inhouse worker`: the worker alone, sharing the database and blob store with the servers."""
    await services.open()
    worker = Worker(services)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, worker.stop)
    try:
        await worker.run()
    finally:
        await services.close()
