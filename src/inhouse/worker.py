"""The background worker: periodic housekeeping now, long jobs as they are added; clean stop on signal."""

from __future__ import annotations

import asyncio
import logging
import signal

from inhouse.services.container import Services

log = logging.getLogger("inhouse.worker")


class Worker:
    def __init__(self, services: Services) -> None:
        self.services = services
        self._stop = asyncio.Event()

    def stop(self) -> None:
        self._stop.set()

    async def run(self) -> None:
        interval = self.services.settings.sweep_interval_seconds
        while not self._stop.is_set():
            try:
                await self.services.maintenance.sweep()
            except Exception:
                log.exception("sweep failed; retrying next interval")
            try:
                await asyncio.wait_for(self._stop.wait(), timeout=interval)
            except TimeoutError:
                continue


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
