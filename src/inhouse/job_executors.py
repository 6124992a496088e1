"""Where the worker runs durable jobs: in its own process (the default) or as tasks on a Ray cluster."""

from __future__ import annotations

import importlib.util
from collections.abc import Awaitable, Callable
from typing import Protocol

from inhouse.engines.imports import import_libraries
from inhouse.services.container import Services

RunNextJob = Callable[[Services, tuple[str, ...]], Awaitable[bool]]  # worker.run_next_job


class JobExecutor(Protocol):
    """Runs one job at a time per slot. Holds no job state: the database and the blob store are the truth, so
    an executor that dies mid-job leaves the job to its lease, and whoever claims it next resumes it."""

    @property
    def slots(self) -> int:
        """How many `run_next` calls the worker keeps in flight at once."""
        ...

    async def start(self) -> None:
        """Called by each of the worker's job loops; the first call does the work."""
        ...

    async def run_next(self, kinds: tuple[str, ...]) -> bool:
        """Claim one job of `kinds`, run it to its end (somewhere), and say whether there was one."""
        ...

    async def close(self) -> None: ...


class InProcessExecutor:
    """The default: jobs run in this process (a fine-tune on its training pool)."""

    slots = 1  # training takes the cores: one job per process

    def __init__(self, services: Services, run_next_job: RunNextJob) -> None:
        self.services = services
        self._run_next_job = run_next_job

    async def start(self) -> None:
        # Importing the training stack takes seconds; do it once up front, not inside the first job (a second
        # call finds it imported).
        await self.services.executors.run("training", import_libraries, "torch", "transformers", "peft")

    async def run_next(self, kinds: tuple[str, ...]) -> bool:
        return await self._run_next_job(self.services, kinds)

    async def close(self) -> None:
        return None


def job_executor(services: Services, run_next_job: RunNextJob) -> JobExecutor:
    """The executor the settings name; Ray is imported only when it is the one."""
    if services.settings.executor == "ray":
        if importlib.util.find_spec("ray") is None:  # fail at start-up, not at every poll
            raise RuntimeError("executor=ray needs Ray: pip install 'inhouse[ray]' (docs/deployment.md)")
        from inhouse.ray_executor import RayExecutor

        return RayExecutor(services.settings)
    return InProcessExecutor(services, run_next_job)
