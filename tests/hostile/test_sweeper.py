"""Reliability 26 (maintenance never removes live work): a temporary belongs to a live writer for as long
as that writer exists, however long its client pauses; once the writer's process is gone, the sweeper
takes it."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import openai

from inhouse.storage.local_blobs import LocalBlobStore
from tests.harness import ServerHandle

MIB = 1024 * 1024


def temporaries(root: Path) -> list[Path]:
    return sorted((root / "tmp").glob("*.part"))


def wait_for_temporary(root: Path) -> list[Path]:
    deadline = time.monotonic() + 20
    while not (found := temporaries(root)):
        assert time.monotonic() < deadline, "no temporary appeared"
        time.sleep(0.02)
    return found


def backdate(paths: list[Path], seconds: float) -> None:
    """As if the writer had been silent this long: no sleeping in the test."""
    then = time.time() - seconds
    for p in paths:
        os.utime(p, (then, then))


def test_a_paused_upload_survives_a_sweep(server: ServerHandle, client: openai.OpenAI) -> None:
    root = Path(server.settings.blob_url.removeprefix("file://"))
    boundary = "pause-boundary"
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nassistants\r\n"
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"big.bin\"\r\n\r\n").encode()
    # One batch (1 MiB or a little more) reaches the temporary; the rest waits in the writer's buffer.
    first, rest = b"a" * (3 * MIB // 2), b"b" * MIB
    tail = f"\r\n--{boundary}--\r\n".encode()
    body_len = len(head) + len(first) + len(rest) + len(tail)
    with socket.create_connection(("127.0.0.1", server.settings.port), timeout=30) as sock:
        sock.sendall(f"POST /v1/files HTTP/1.1\r\nHost: 127.0.0.1:{server.settings.port}\r\n"
                     f"Content-Type: multipart/form-data; boundary={boundary}\r\n"
                     f"Content-Length: {body_len}\r\nConnection: close\r\n\r\n".encode() + head + first)
        temps = wait_for_temporary(root)
        # The client pauses for longer than stale_temp_seconds; a sweep runs meanwhile. Repeated until no
        # write landed after the backdating, so the sweeper surely saw a temporary that old.
        old = server.settings.stale_temp_seconds * 2
        for _ in range(200):
            backdate(temps, old)
            server.call(server.services.maintenance.sweep())
            assert temporaries(root) == temps, "the sweeper removed a live upload's temporary"
            if time.time() - temps[0].stat().st_mtime >= old - 1:
                break
            time.sleep(0.01)
        sock.sendall(rest + tail)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    status = answer.split(b"\r\n", 1)[0]
    assert b" 200 " in status, answer[-400:]
    (f,) = client.files.list().data
    assert f.bytes == len(first) + len(rest)
    assert client.files.content(f.id).read() == first + rest
    assert temporaries(root) == []


WRITER = """
import asyncio, sys
from pathlib import Path
from inhouse.storage.local_blobs import LocalBlobStore

async def main():
    store = LocalBlobStore(Path(sys.argv[1]))
    await store.open()
    writer = store.writer("files/file-paused")
    for _ in range(8):
        await writer.write(b"x" * 1024 * 1024)
    await writer._flush(wait=True)  # every batch on disk: no write lands after "ready"
    print("ready", flush=True)
    await asyncio.sleep(3600)  # paused, alive

asyncio.run(main())
"""


def test_temporaries_belong_to_a_live_process(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path / "blobs")
    asyncio.run(store.open())
    # An abandoned temporary that no process holds (left by a crash before this fix, or copied in).
    orphan = store.root / "tmp" / "abandoned.part"
    orphan.write_bytes(b"left behind")
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(store.root)], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        live = [p for p in temporaries(store.root) if p != orphan]
        assert len(live) == 1
        backdate([orphan, *live], 7200)
        assert asyncio.run(store.remove_temporaries(600)) == 1  # the orphan only
        assert temporaries(store.root) == live, "a live writer's temporary (another process) was removed"
        assert asyncio.run(store.remove_temporaries(600)) == 0
    finally:
        proc.kill()
        proc.wait()
    # Its process is gone, so its temporary is abandoned now (still only past the stale age).
    assert asyncio.run(store.remove_temporaries(10**9)) == 0
    assert asyncio.run(store.remove_temporaries(600)) == 1
    assert temporaries(store.root) == []
