"""A crash never blocks a retry: an in-flight Idempotency-Key claim is a lease held by a live process."""

from __future__ import annotations

import time
from pathlib import Path

import openai
import pytest

from inhouse.services.idempotency import LEASE_S, RENEW_S
from tests.conftest import make_client
from tests.e2e.serve import ServeProcess
from tests.hostile.raw import connect

pytestmark = pytest.mark.e2e


def test_retry_after_kill_9_proceeds_within_a_lease(tmp_path: Path) -> None:
    data = tmp_path / "data"
    server = ServeProcess(data).start()
    # A file upload with an Idempotency-Key whose body is still arriving when the server dies.
    s = connect(server.port)
    s.sendall(b"POST /v1/files HTTP/1.1\r\nHost: 127.0.0.1\r\nIdempotency-Key: upload-1\r\n"
              b"Authorization: Bearer unused\r\n"
              b"Content-Type: multipart/form-data; boundary=b\r\nContent-Length: 100000\r\n\r\n"
              b"--b\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nassistants\r\n")
    time.sleep(RENEW_S + 1)  # claimed, and renewed at least once while alive
    server.kill9()
    s.close()
    server = ServeProcess(data).start()
    try:
        client = make_client(server.base_url)
        t0 = time.monotonic()
        conflicts = 0
        while True:
            try:
                f = client.files.create(file=("a.txt", b"hello"), purpose="assistants",
                                        extra_headers={"Idempotency-Key": "upload-1"})
                break
            except openai.ConflictError:  # the dead process's claim, until its lease runs out
                conflicts += 1
                assert time.monotonic() - t0 < LEASE_S + 2 * RENEW_S + 5, "the dead process's claim never expired"
                time.sleep(0.5)
        assert client.files.content(f.id).read() == b"hello"
        # The answer is now kept: the same retry replays it.
        again = client.files.create(file=("a.txt", b"hello"), purpose="assistants",
                                    extra_headers={"Idempotency-Key": "upload-1"})
        assert again.id == f.id
    finally:
        server.stop()
