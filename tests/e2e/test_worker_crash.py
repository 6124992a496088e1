"""Reliability 4: a worker killed mid-training; another resumes from the newest checkpoint and the job
succeeds with every step logged exactly once. A job whose workers keep dying fails after bounded attempts."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.api.test_embeddings import tiny_encoder  # noqa: F401 - the tiny encoder fixture
from tests.conftest import make_client
from tests.harness import start_server
from tests.llm import all_events, greedy, llm_entry, llm_settings, pong_file, supervised, wait_for

pytestmark = pytest.mark.e2e


def start_worker(data_dir: Path, model_path: Path, extra: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    env = {**os.environ, "INHOUSE_DATA_DIR": str(data_dir),
           "INHOUSE_MODELS": json.dumps([llm_entry(model_path).model_dump()]), **(extra or {}),
           "INHOUSE_FINE_TUNING__LEASE_SECONDS": "3", "INHOUSE_FINE_TUNING__HEARTBEAT_SECONDS": "0.2",
           "INHOUSE_FINE_TUNING__POLL_SECONDS": "0.1", "INHOUSE_SWEEP_INTERVAL_SECONDS": "3600"}
    return subprocess.Popen([sys.executable, "-m", "inhouse.cli", "worker"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def kill_9_after(client: Any, job_id: str, message: str, worker: subprocess.Popen[bytes]) -> None:
    """SIGKILL the worker as soon as the job logs an event starting with `message` (or after 60 s)."""
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if any(e.message.startswith(message) for e in all_events(client, job_id)):
                break
            time.sleep(0.02)
        worker.send_signal(signal.SIGKILL)
        worker.wait(10)
    finally:
        if worker.poll() is None:
            worker.kill()


def finish_with(client: Any, job_id: str, worker: subprocess.Popen[bytes]) -> Any:
    """Wait for the job to end under `worker`, then stop the worker cleanly; the job as it ended."""
    try:
        return wait_for(client, job_id, timeout=120)
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(30)


def test_kill_9_worker_then_resume(settings_factory: Any, tiny_llm: Path) -> None:
    settings = llm_settings(settings_factory, tiny_llm)
    settings.run_worker = False  # the server only serves; workers are separate processes
    with start_server(settings) as server:
        client = make_client(server.base_url, strict=False)
        job = client.fine_tuning.jobs.create(model="gpt-4o-mini", training_file=pong_file(client, 20), seed=9,
                                             method=supervised(n_epochs=6, batch_size=2, learning_rate_multiplier=20))
        kill_9_after(client, job.id, "Checkpoint created at step 20 ", start_worker(settings.data_dir, tiny_llm))
        killed_at = [e.data["step"] for e in all_events(client, job.id) if e.type == "metrics"][-1]
        assert killed_at < 60, "killed mid-job"
        done = finish_with(client, job.id, start_worker(settings.data_dir, tiny_llm))
        assert done.status == "succeeded", done.error
        events = all_events(client, job.id)
        steps = [e.data["step"] for e in events if e.type == "metrics"]
        assert steps == list(range(1, 61))  # nothing lost, nothing twice
        assert any(e.message.startswith("Fine-tuning job resumed from the checkpoint at step") for e in events)
        ckpts = list(client.fine_tuning.jobs.checkpoints.list(job.id))
        assert [c.step_number for c in ckpts] == [60, 50, 40]
        blobs = settings.data_dir / "blobs" / "checkpoints"
        # Every listed checkpoint has its bytes; the chat model answers from the final one.
        listed = server.call(server.services.meta.jobs.referenced_artifacts())
        assert all((blobs / key.split("/", 1)[1]).exists() for key in listed)
        assert greedy(client, done.fine_tuned_model).startswith("pong")  # what the resumed training taught it


def test_job_that_keeps_losing_its_worker_fails(settings_factory: Any, tiny_llm: Path) -> None:
    settings = llm_settings(settings_factory, tiny_llm)
    settings.run_worker = False
    with start_server(settings) as server:
        client = make_client(server.base_url, strict=False)
        job = client.fine_tuning.jobs.create(model="gpt-4o-mini", training_file=pong_file(client))
        meta = server.services.meta

        async def crash_three_times() -> None:
            for i in range(3):  # three workers claim it and die without a word
                claimed = await meta.jobs.claim_job(f"ghost-{i}", int(time.time()) + 10 * i, 1)
                assert claimed is not None and claimed.id == job.id
            runner = server.services.jobs
            runner.clock = lambda: int(time.time()) + 100
            assert await runner.run_next()

        server.call(crash_three_times())
        done = client.fine_tuning.jobs.retrieve(job.id)
        assert done.status == "failed" and done.error.code == "max_attempts_exceeded"
        assert all_events(client, job.id)[-1].level == "error"


def test_kill_9_worker_mid_embedding_fine_tune(settings_factory: Any, tiny_encoder: Path) -> None:  # noqa: F811
    """The same for an embedding model's fine-tune: resumed from the newest checkpoint's weights, every step
    logged once, and the result serves."""
    from inhouse.config import ModelEntry
    from tests.api.test_embedding_fine_tuning import TRAIN_TEMPLATES, catalogue, pairs, upload

    entry = ModelEntry(id="tiny-encoder", kind="embedding", path=str(tiny_encoder), aliases=["text-embedding-3-small"])
    settings = settings_factory(models=[entry], run_worker=False)
    settings.embeddings.backend = "torch"
    env = {"INHOUSE_MODELS": json.dumps([entry.model_dump()])}
    with start_server(settings) as server:
        client = make_client(server.base_url, strict=False)
        job = client.fine_tuning.jobs.create(model="text-embedding-3-small", seed=4,
                                             training_file=upload(client, pairs(catalogue(), TRAIN_TEMPLATES) * 4),
                                             method=supervised(n_epochs=6, batch_size=8, learning_rate_multiplier=100))
        first = start_worker(settings.data_dir, tiny_encoder, env)
        kill_9_after(client, job.id, "Checkpoint created at step 96 ", first)
        killed_at = [e.data["step"] for e in all_events(client, job.id) if e.type == "metrics"][-1]
        assert killed_at < 288, "killed mid-job"
        done = finish_with(client, job.id, start_worker(settings.data_dir, tiny_encoder, env))
        assert done.status == "succeeded", done.error
        events = all_events(client, job.id)
        assert [e.data["step"] for e in events if e.type == "metrics"] == list(range(1, 289))
        assert any(e.message.startswith("Fine-tuning job resumed from the checkpoint at step") for e in events)
        r = client.embeddings.create(model=done.fine_tuned_model, input="zeta omicron", encoding_format="float")
        assert len(r.data[0].embedding) == 32
