"""A worker killed (SIGKILL) in the middle of a batch; another resumes it: no finished line is run again and
every line is in the output exactly once, in input order."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from inhouse.config import ModelEntry
from tests.api.test_batches import jsonl, line, upload, wait
from tests.api.test_embeddings import tiny_encoder  # noqa: F401 - the tiny encoder fixture
from tests.conftest import make_client
from tests.e2e.test_worker_crash import start_worker
from tests.harness import start_server

pytestmark = pytest.mark.e2e


def test_kill_9_worker_mid_batch_then_resume(settings_factory: Any, tiny_encoder: Path) -> None:  # noqa: F811
    entry = ModelEntry(id="tiny-encoder", kind="embedding", path=str(tiny_encoder), aliases=["text-embedding-3-small"])
    settings = settings_factory(models=[entry], run_worker=False)
    env = {"INHOUSE_MODELS": json.dumps([entry.model_dump()]), "INHOUSE_EMBEDDINGS__BACKEND": "torch",
           "INHOUSE_BATCHES__EMBEDDING_CHUNK_LINES": "20"}
    n = 2000
    with start_server(settings) as server:
        client = make_client(server.base_url, strict=False)
        lines = [line(f"r{i}", "/v1/embeddings", {"model": "text-embedding-3-small", "encoding_format": "float",
                                                   "input": f"line {i} of the batch {'word ' * (i % 7)}"})
                 for i in range(n)]
        batch = client.batches.create(input_file_id=upload(client, lines), endpoint="/v1/embeddings",
                                      completion_window="24h")
        first = start_worker(settings.data_dir, tiny_encoder, env)
        try:
            deadline = time.monotonic() + 120
            while (b := client.batches.retrieve(batch.id)).request_counts.completed < 400:
                assert (time.monotonic() < deadline and b.status == "in_progress") or b.status == "validating", b.status
                time.sleep(0.01)
            first.send_signal(signal.SIGKILL)
            first.wait(10)
        finally:
            if first.poll() is None:
                first.kill()
        killed = client.batches.retrieve(batch.id)
        assert killed.status == "in_progress" and 400 <= killed.request_counts.completed < n, "killed mid-batch"
        # The lines finished before the kill, as the chunks the first worker made durable hold them.
        before = {json.loads(x)["id"] for blob in (settings.data_dir / "blobs" / "batches").glob("*-out")
                  for x in blob.read_text().splitlines()}
        second = start_worker(settings.data_dir, tiny_encoder, env)
        try:
            done = wait(client, batch.id, timeout=180)
        finally:
            second.send_signal(signal.SIGTERM)
            second.wait(30)
        assert done.status == "completed", done.errors
        assert (done.request_counts.total, done.request_counts.completed, done.request_counts.failed) == (n, n, 0)
        out = jsonl(client, done.output_file_id)
        assert [o["custom_id"] for o in out] == [f"r{i}" for i in range(n)]  # each once, in order
        assert len({o["id"] for o in out}) == n
        # Every line recorded as finished before the kill is in the output as first written: none ran again.
        assert len(before & {o["id"] for o in out}) >= killed.request_counts.completed
        assert done.error_file_id is None
        assert done.usage.input_tokens == sum(o["response"]["body"]["usage"]["prompt_tokens"] for o in out)
        # Nothing of the run is left behind but the two files.
        assert not list((settings.data_dir / "blobs" / "batches").glob("*"))
