"""The Ray job executor: each job runs as a Ray task on whichever node has the resources it asks for."""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
from pathlib import Path
from typing import Any

from inhouse.config import Settings

log = logging.getLogger("inhouse.ray")

# What the `inhouse` command sets for itself before torch loads (cli._quiet_threads): a Ray worker process is
# started by its raylet, not by `inhouse`, so it gets them here.
TASK_ENV = {"OMP_WAIT_POLICY": "PASSIVE", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
            "TOKENIZERS_PARALLELISM": "false"}


def task_settings(settings: Settings) -> Settings:
    """The settings a job task gets, with every local path absolute: a Ray worker's working directory is not
    the dispatcher's."""
    models = [m.model_copy(update={"path": str(Path(m.path).resolve())})
              if not m.path.startswith("package:") else m for m in settings.models]
    extra = [m.model_copy(update={"path": str(Path(m.path).resolve())})
             if not m.path.startswith("package:") else m for m in settings.extra_models]
    return settings.model_copy(update={"data_dir": settings.data_dir.resolve(), "models": models,
                                       "extra_models": extra})


def lease_owner(node_id: str) -> str:
    """The lease owner a job task claims as: the Ray node it runs on, then a token for this one claim."""
    return f"ray-{node_id[:16]}-{secrets.token_hex(4)}"


class RayExecutor:
    """Keeps up to `ray_max_running_jobs` job tasks in flight; each task claims and runs one job on its node.

    Ray holds no job state: a task that dies with its node leaves its job to the lease, and a later task (on
    any node) claims it once the lease expires and resumes it from its newest checkpoint. Tasks are never
    retried by Ray for the same reason. This process is the tasks' Ray driver: when it exits (or is killed),
    Ray ends its tasks too, and their jobs resume the same way."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.slots = settings.ray_max_running_jobs
        self._settings_json = task_settings(settings).model_dump_json()
        self._lock = asyncio.Lock()
        self._task: Any = None  # the remote function with its resources, once this process joined the cluster
        self._owns_connection = False

    async def start(self) -> None:
        try:
            await self._connected()
        except Exception:
            log.exception("could not join the Ray cluster at %r; trying again at each poll", self.settings.ray_address)

    async def _connected(self) -> Any:
        async with self._lock:
            if self._task is None:
                self._task = await asyncio.to_thread(self._join)
            return self._task

    def _join(self) -> Any:
        import ray

        if not ray.is_initialized():  # one connection per process; a process's other worker may have made it
            # Ray's C++ failure handler would print a stack dump for the SIGTERM that stops this process cleanly.
            os.environ.setdefault("RAY_DISABLE_FAILURE_SIGNAL_HANDLER", "1")
            ray.init(address=self.settings.ray_address, namespace="inhouse", log_to_driver=True,
                     logging_level=logging.WARNING)
            self._owns_connection = True
        s = self.settings
        log.info("joined the Ray cluster at %r: up to %d job tasks of %g CPU, %g GPU%s", s.ray_address, self.slots,
                 s.ray_job_num_cpus, s.ray_job_num_gpus, f", {s.ray_job_resources}" if s.ray_job_resources else "")
        return ray.remote(run_job_task).options(
            name="inhouse-job", num_cpus=s.ray_job_num_cpus, num_gpus=s.ray_job_num_gpus,
            resources=dict(s.ray_job_resources), max_retries=0, runtime_env={"env_vars": TASK_ENV})

    async def run_next(self, kinds: tuple[str, ...]) -> bool:
        import ray.exceptions

        task = await self._connected()
        ref = task.remote(self._settings_json, kinds)
        try:
            return bool(await ref)
        except ray.exceptions.RayTaskError as exc:  # the task itself raised: its traceback says why
            log.error("a job task failed: %s", exc)
            return False
        except ray.exceptions.RayError as exc:  # its worker or node died, or Ray could not run it
            log.warning("a job task ended without an answer (%s); a job it held resumes when its lease expires",
                        type(exc).__name__)
            return False

    async def close(self) -> None:
        if self._owns_connection:
            import ray

            await asyncio.to_thread(ray.shutdown)
            self._owns_connection = False


def run_job_task(settings_json: str, kinds: tuple[str, ...]) -> bool:
    """The Ray task, on a node: build services from the dispatcher's settings, claim and run one job of `kinds`
    under a lease named after this node, close the services; whether there was a job."""
    import ray

    settings = Settings.model_validate_json(settings_json)  # exactly the dispatcher's: the node's env is not read
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if settings.fine_tuning.threads == 0:  # "all cores" on a shared node means the cores Ray reserved
        settings.fine_tuning.threads = max(1, int(settings.ray_job_num_cpus))
    owner = lease_owner(ray.get_runtime_context().get_node_id())
    return asyncio.run(_run_one(settings, tuple(kinds), owner))


async def _run_one(settings: Settings, kinds: tuple[str, ...], owner: str) -> bool:
    from inhouse.bootstrap import build_services
    from inhouse.worker import run_next_job

    services = build_services(settings)
    services.jobs.owner = services.batch_runner.owner = owner  # every kind's runner claims as this node
    await services.open()
    try:
        ran = await run_next_job(services, kinds)
    finally:
        await services.close()
    if ran:
        log.info("%s ran a job to its end", owner)
    return ran
