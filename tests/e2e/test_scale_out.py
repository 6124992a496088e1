"""Many processes, one truth: two `inhouse serve` and two `inhouse worker` processes on one Postgres and one S3
server (both real, started here). Whatever one server writes, the other reads; a worker killed with -9 mid-job
is replaced by the other, which resumes from the newest checkpoint with every step logged once."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import openai
import pytest

from inhouse.config import ModelEntry
from tests.api.test_images import tiny_sd  # noqa: F401 - the tiny diffusion pipeline fixture
from tests.conftest import make_client
from tests.e2e.serve import ServeProcess
from tests.llm import all_events, greedy, llm_entry, pong_file, supervised, wait_for
from tests.storage import postgres_server
from tests.storage.seaweedfs import seaweedfs

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


@pytest.fixture(scope="module")
def postgres() -> Iterator[None]:
    # Not under pytest's basetemp (see tests/storage/conftest.py): pgserver may run as another user.
    base = Path(tempfile.mkdtemp(prefix="inhouse-pg-e2e-"))
    postgres_server.set_base_dir(base)
    yield
    postgres_server.stop()
    shutil.rmtree(base, ignore_errors=True)


class Cluster:
    """The shared settings of every process; each process still has a data dir of its own (local caches)."""

    def __init__(self, root: Path, tiny_llm: Path, sd_path: Path) -> None:
        self.root = root
        sd = ModelEntry(id="tiny-sd", kind="image", path=str(sd_path), aliases=["dall-e-2"])
        self.env = {
            "INHOUSE_DATABASE_URL": postgres_server.database_url(root),
            "INHOUSE_BLOB_URL": seaweedfs().url(),
            "INHOUSE_MODELS": json.dumps([llm_entry(tiny_llm).model_dump(), sd.model_dump()]),
            "INHOUSE_IMAGES__URL_SIGNING_KEY": secrets.token_hex(32),  # the one secret every server shares
            "INHOUSE_IMAGES__STEPS_STANDARD": "2", "INHOUSE_IMAGES__MAX_GENERATE_SIDE": "256",
            "INHOUSE_FINE_TUNING__LEASE_SECONDS": "3", "INHOUSE_FINE_TUNING__HEARTBEAT_SECONDS": "0.2",
            "INHOUSE_FINE_TUNING__POLL_SECONDS": "0.1", "INHOUSE_SWEEP_INTERVAL_SECONDS": "3600",
            "INHOUSE_RUN_WORKER": "false",  # servers only serve; the workers are processes of their own
        }
        self.servers: list[ServeProcess] = []
        self.workers: list[subprocess.Popen[bytes]] = []

    def serve(self, name: str) -> ServeProcess:
        server = ServeProcess(self.root / name, env=self.env).start(timeout=120)
        self.servers.append(server)
        return server

    def worker(self, name: str) -> subprocess.Popen[bytes]:
        env = {**os.environ, **self.env, "INHOUSE_DATA_DIR": str(self.root / name)}
        log = (self.root / f"{name}.log").open("wb")
        proc = subprocess.Popen([sys.executable, "-m", "inhouse.cli", "worker"], env=env, stdout=log,
                                stderr=subprocess.STDOUT)
        log.close()
        self.workers.append(proc)
        return proc

    def cli(self, *args: str) -> str:
        env = {**os.environ, **self.env, "INHOUSE_DATA_DIR": str(self.root / "cli")}
        done = subprocess.run([sys.executable, "-m", "inhouse.cli", *args], env=env, capture_output=True,
                              text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        return done.stdout

    def stop(self) -> None:
        for proc in self.workers:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        for server in self.servers:
            server.stop()


@pytest.fixture
def cluster(postgres: None, tmp_path: Path, tiny_llm: Path, tiny_sd: Path) -> Iterator[Cluster]:  # noqa: F811
    c = Cluster(tmp_path, tiny_llm, tiny_sd)
    try:
        yield c
    finally:
        c.stop()


def secret_of(output: str) -> str:
    return next(word for word in output.split() if word.startswith("sk-"))


def steps_claimed_by(events: list[Any]) -> list[int]:
    return [e.data["step"] for e in events if e.type == "metrics"]


def step_of(message: str) -> int:
    """The step a checkpoint or resume event names ("... at step 20 ...", "... at step 20.")."""
    return int(message.split(" at step ", 1)[1].split()[0].rstrip("."))


def test_two_servers_two_workers_one_truth(cluster: Cluster) -> None:
    admin_key = secret_of(cluster.cli("keys", "create", "--project", "ops", "--admin"))
    a, b = cluster.serve("server-a"), cluster.serve("server-b")
    admin_a = httpx2.Client(base_url=a.base_url, headers={"Authorization": f"Bearer {admin_key}"}, timeout=30)

    # A key made through server A works on server B at once (B has never seen it: nothing cached).
    project = admin_a.get("/organization/projects").json()["data"][0]["id"]
    made = admin_a.post(f"/organization/projects/{project}/api_keys", json={"name": "team"})
    assert made.status_code == 200, made.text
    key = made.json()["value"]
    via_a, via_b = make_client(a.base_url, key, strict=False), make_client(b.base_url, key, strict=False)
    assert via_b.models.list().data

    # A file uploaded through A is listed and downloaded through B.
    data = os.urandom(300_000)
    created = via_a.files.create(file=("blob.jsonl", data), purpose="user_data")
    assert created.id in [f.id for f in via_b.files.list()]
    assert via_b.files.content(created.id).read() == data

    # An Upload whose parts go to A and B completes on B; A serves the bytes.
    first, second = os.urandom(200_000), os.urandom(100_000)
    upload = via_a.uploads.create(filename="parts.bin", purpose="user_data", bytes=len(first) + len(second),
                                  mime_type="application/octet-stream")
    part_a = via_a.uploads.parts.create(upload.id, data=first)
    part_b = via_b.uploads.parts.create(upload.id, data=second)
    done = via_b.uploads.complete(upload.id, part_ids=[part_a.id, part_b.id])
    assert done.status == "completed" and done.file is not None
    assert via_a.files.content(done.file.id).read() == first + second

    # An idempotent POST retried on B replays A's answer (same file, not a second one).
    headers = {"Idempotency-Key": "retry-me-" + secrets.token_hex(4)}
    once = via_a.files.create(file=("once.txt", b"exactly once"), purpose="user_data", extra_headers=headers)
    raw = via_b.files.with_raw_response.create(file=("once.txt", b"exactly once"), purpose="user_data",
                                               extra_headers=headers)
    assert raw.headers.get("idempotent-replayed") == "true" and raw.parse().id == once.id
    assert [f.id for f in via_a.files.list() if f.filename == "once.txt"] == [once.id]

    # An image URL signed by A is served by B (the shared signing key), and not with a forged signature.
    image = via_a.images.generate(model="dall-e-2", prompt="a red square", size="256x256", response_format="url")
    url = image.data[0].url
    assert url is not None and f":{a.port}/" in url
    on_b = url.replace(f":{a.port}/", f":{b.port}/")
    served = httpx2.get(on_b, timeout=30)
    assert served.status_code == 200 and served.content.startswith(b"\x89PNG")
    signed, sig = on_b.rsplit("&sig=", 1)
    forged = signed + "&sig=" + ("0" if sig[0] != "0" else "1") + sig[1:]
    assert httpx2.get(forged, timeout=30).status_code == 403

    # A fine-tune created through B is claimed by worker 1, which is killed with -9 after a checkpoint;
    # worker 2 resumes it from the newest checkpoint and every step is logged exactly once.
    job = via_b.fine_tuning.jobs.create(model="gpt-4o-mini", training_file=pong_file(via_b, 20), seed=9,
                                        method=supervised(n_epochs=6, batch_size=2, learning_rate_multiplier=20))
    worker_1 = cluster.worker("worker-1")
    deadline = time.monotonic() + 120
    while not any(e.message.startswith("Checkpoint created at step 20 ") for e in all_events(via_a, job.id)):
        assert time.monotonic() < deadline, "worker 1 made no checkpoint"
        assert worker_1.poll() is None, (cluster.root / "worker-1.log").read_text()[-3000:]
        time.sleep(0.05)
    worker_1.send_signal(signal.SIGKILL)
    worker_1.wait(10)
    before = all_events(via_a, job.id)
    killed_at = steps_claimed_by(before)[-1]
    assert killed_at < 60, "killed mid-job"
    newest = max(step_of(e.message) for e in before if e.message.startswith("Checkpoint created at step "))
    cluster.worker("worker-2")
    finished = wait_for(via_a, job.id, timeout=180)
    assert finished.status == "succeeded", finished.error
    events = all_events(via_b, job.id)
    assert steps_claimed_by(events) == list(range(1, 61))  # nothing lost, nothing twice
    resumed = [step_of(e.message) for e in events if e.message.startswith("Fine-tuning job resumed from the ")]
    assert resumed == [newest]  # worker 2 took up the newest checkpoint worker 1 wrote, once
    # The fine-tuned model answers on both servers, loaded from the object store by each.
    assert greedy(via_a, finished.fine_tuned_model).startswith("pong")
    assert greedy(via_b, finished.fine_tuned_model) == greedy(via_a, finished.fine_tuned_model)

    # A cancel and a pause taken by server A reach the job worker 2 runs, through the database: its heartbeat,
    # or the next step's or checkpoint's lease-guarded write, whichever comes first (this tiny model's steps are
    # short; test_fine_tuning.py holds a step so that only the heartbeat can). Worker 2 runs one job at a time,
    # and each long job below would hold it for minutes: that it takes the next queued job is the proof the
    # running one stopped. How long that took is printed.
    training = pong_file(via_b, 20)
    long_job, after_it = (via_b.fine_tuning.jobs.create(model="gpt-4o-mini", training_file=training,
                                                        method=supervised(n_epochs=50, batch_size=2))
                          for _ in range(2))
    wait_for(via_a, long_job.id, statuses=("running",), timeout=60)
    started = time.monotonic()
    via_a.fine_tuning.jobs.cancel(long_job.id)
    assert wait_for(via_b, after_it.id, statuses=("running",), timeout=20).status == "running"
    freed_by_cancel = time.monotonic() - started
    assert via_b.fine_tuning.jobs.retrieve(long_job.id).status == "cancelled"
    wait_for(via_a, after_it.id, statuses=("running",), timeout=20)
    deadline = time.monotonic() + 60
    while not steps_claimed_by(all_events(via_a, after_it.id)):  # training, not only claimed
        assert time.monotonic() < deadline, "the job after the cancelled one never trained"
        time.sleep(0.05)
    short = via_b.fine_tuning.jobs.create(model="gpt-4o-mini", training_file=training,
                                          method=supervised(n_epochs=1, batch_size=2))
    started = time.monotonic()
    assert via_a.fine_tuning.jobs.pause(after_it.id).status == "paused"
    assert wait_for(via_b, short.id, statuses=("running", "succeeded"), timeout=20).status in ("running", "succeeded")
    freed_by_pause = time.monotonic() - started
    assert wait_for(via_a, short.id, timeout=120).status == "succeeded"
    paused_at = steps_claimed_by(all_events(via_a, after_it.id))
    assert via_a.fine_tuning.jobs.retrieve(after_it.id).status == "paused"
    time.sleep(1.0)  # a paused job stays still: no step is logged while it waits
    assert steps_claimed_by(all_events(via_a, after_it.id)) == paused_at
    via_b.fine_tuning.jobs.resume(after_it.id)
    wait_for(via_a, after_it.id, statuses=("running",), timeout=20)
    via_a.fine_tuning.jobs.cancel(after_it.id)
    assert wait_for(via_b, after_it.id, timeout=60).status == "cancelled"
    print(f"worker freed {freed_by_cancel:.2f} s after a cancel, {freed_by_pause:.2f} s after a pause "
          f"(heartbeat {cluster.env['INHOUSE_FINE_TUNING__HEARTBEAT_SECONDS']} s, poll 0.1 s)")

    # A key revoked through A stops working on B once B's key cache (5 s) has passed.
    key_id = made.json()["id"]
    assert admin_a.delete(f"/organization/projects/{project}/api_keys/{key_id}").status_code == 200
    deadline = time.monotonic() + 15
    while True:
        try:
            via_b.models.list()
        except openai.AuthenticationError:
            break
        assert time.monotonic() < deadline, "a revoked key kept working on server B"
        time.sleep(0.25)
