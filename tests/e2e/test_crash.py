"""Reliability 1: `kill -9` of the server during concurrent uploads loses nothing that was acknowledged."""

from __future__ import annotations

import hashlib
import random
import sqlite3
import threading
import time
from pathlib import Path

import openai
import pytest

from tests.conftest import make_client
from tests.e2e.serve import ServeProcess

pytestmark = pytest.mark.e2e


def uploader(base_url: str, seed: int, chunked: bool, stop: threading.Event, acked: list[tuple[str, str, int]],
             tmp: Path) -> None:
    rng = random.Random(seed)
    client = make_client(base_url, strict=False, timeout=30)
    n = 0
    while not stop.is_set():
        size = rng.randint(64 * 1024, 3 * 1024 * 1024)
        data = rng.randbytes(size)
        try:
            if chunked:
                path = tmp / f"u{seed}-{n}.bin"
                path.write_bytes(data)
                up = client.uploads.upload_file_chunked(file=path, mime_type="application/octet-stream",
                                                        purpose="assistants", part_size=512 * 1024)
                assert up.file is not None
                file_id = up.file.id
            else:
                file_id = client.files.create(file=(f"f{seed}-{n}.bin", data), purpose="user_data").id
        except (openai.APIConnectionError, openai.APIStatusError):
            if stop.is_set():
                return
            continue
        acked.append((file_id, hashlib.sha256(data).hexdigest(), size))
        n += 1


def test_kill_9_during_concurrent_uploads(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    server = ServeProcess(data_dir).start()
    acked: list[tuple[str, str, int]] = []
    stop = threading.Event()
    threads = [threading.Thread(target=uploader, args=(server.base_url, i, i % 3 == 0, stop, acked, tmp_path))
               for i in range(6)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 30
    while len(acked) < 12 and time.monotonic() < deadline:
        time.sleep(0.05)
    server.kill9()  # mid-flight: other uploads are half-written right now
    stop.set()
    for t in threads:
        t.join(timeout=60)
    assert len(acked) >= 12

    # Restart; the start-up sweep (stale age 0 here) removes temporaries and orphaned blobs.
    restarted = ServeProcess(data_dir, env={"INHOUSE_STALE_TEMP_SECONDS": "0"}, port=server.port).start()
    try:
        blobs = data_dir / "blobs"
        client = make_client(restarted.base_url)
        listed = {f.id: f for f in client.files.list()}
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            on_disk = {p.name for p in (blobs / "files").iterdir()}
            temps = list((blobs / "tmp").iterdir())
            parts = list((blobs / "parts").iterdir()) if (blobs / "parts").exists() else []
            if on_disk == set(listed) and not temps:
                break
            time.sleep(0.1)
        assert on_disk == set(listed), "no orphan blobs and no listed file without its blob"
        assert temps == []
        # Every acknowledged upload is listed once, whole, with the right hash.
        ids = [f.id for f in client.files.list()]
        assert len(ids) == len(set(ids))
        for file_id, sha, size in acked:
            assert file_id in listed
            assert listed[file_id].bytes == size
            assert hashlib.sha256(client.files.content(file_id).read()).hexdigest() == sha
        # Every listed file (acknowledged or not) has exactly its recorded content.
        db = sqlite3.connect(data_dir / "inhouse.db")
        for file_id, size, sha in db.execute("SELECT id, bytes, sha256 FROM files"):
            content = (blobs / "files" / file_id).read_bytes()
            assert len(content) == size and hashlib.sha256(content).hexdigest() == sha
        # Parts of uploads that never completed wait for their upload to expire; none is orphaned.
        part_ids = {r[0] for r in db.execute("SELECT id FROM upload_parts")}
        assert {p.name for p in parts} <= part_ids
    finally:
        restarted.stop()
