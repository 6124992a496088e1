"""The background worker: periodic housekeeping now, long jobs as they are added; clean stop on signal."""

from __future__ import annotations

import asyncio
import logging
import signal

from inhouse.job_executors import JobExecutor, job_executor
from inhouse.services.container import Services

log = logging.getLogger("inhouse.worker")
JOB_KINDS = ("fine_tuning", "batch")


class Worker:
    def __init__(self, services: Services) -> None:
        self.services = services
        self._stop = asyncio.Event()
        self.executor: JobExecutor = job_executor(services, run_next_job)  # in this process, or Ray tasks

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

    async def jobs(self, kinds: tuple[str, ...] = JOB_KINDS) -> None:
        """Claim jobs of `kinds` one at a time per executor slot: in this process one slot, as training takes the
        cores, so one fine-tune per worker process (a batch runs beside it: its lines run on the serving engines,
        behind live requests); on Ray, `ray_max_running_jobs` tasks on the cluster's nodes."""
        await self.executor.start()
        await asyncio.gather(*(self._slot(kinds) for _ in range(self.executor.slots)))

    async def _slot(self, kinds: tuple[str, ...]) -> None:
        while not self._stop.is_set():
            try:
                ran = await self.executor.run_next(kinds)
            except Exception:
                log.exception("job loop failed; retrying")
                ran = False
            if not ran:
                await self._pause(self.services.settings.fine_tuning.poll_seconds)

    async def run(self) -> None:
        try:
            await asyncio.gather(self.sweeps(), self.jobs(("fine_tuning",)), self.jobs(("batch",)))
        finally:
            await self.executor.close()


async def run_next_job(services: Services, kinds: tuple[str, ...] = JOB_KINDS) -> bool:
    """Claim and run one durable job of any of `kinds` (a fine-tune, a batch) to its end, under a lease that
    this process heartbeats; False when none was waiting. The database and blob store hold all of its state, so
    any process with the same settings (a worker, a Ray task on another node) may run it."""
    for kind in kinds:
        runner = services.jobs if kind == "fine_tuning" else services.batch_runner
        if await runner.run_next():
            return True
    return False


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
