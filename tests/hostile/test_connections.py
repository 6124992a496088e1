"""Connection-level limits: header size and count, header and body deadlines, idle sockets, keep-alive."""

from __future__ import annotations

import contextlib
import gc
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest

from tests.e2e.serve import ServeProcess
from tests.harness import ServerHandle, start_server
from tests.hostile.raw import closed_within, connect, read_answer, rss_bytes, status_of


@pytest.fixture
def tight(settings_factory: Any) -> Iterator[ServerHandle]:
    http = {"header_timeout_seconds": 1.0, "body_timeout_seconds": 1.0, "keep_alive_seconds": 1.0,
            "keep_alive_requests": 3, "max_connections": 64}
    with start_server(settings_factory(http=http)) as handle:
        yield handle


def port_of(server: ServerHandle) -> int:
    return int(server.origin.rsplit(":", 1)[1])


def healthz_ms(server: ServerHandle) -> tuple[int, float]:
    t0 = time.perf_counter()
    r = httpx2.get(f"{server.origin}/healthz", timeout=10)
    return r.status_code, (time.perf_counter() - t0) * 1000


def test_headers_over_the_cap_get_431(server: ServerHandle) -> None:
    s = connect(port_of(server))
    s.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: " + b"a" * 64 * 1024 + b"\r\n\r\n")
    answer = read_answer(s)
    assert status_of(answer) == 431, answer[:200]
    assert b'"error"' in answer  # the OpenAI envelope, even from the connection layer
    s = connect(port_of(server))
    s.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n" + b"".join(b"X-%d: v\r\n" % i for i in range(200))
              + b"\r\n")
    assert status_of(read_answer(s)) == 431


def test_forty_mib_of_headers_never_reach_memory(server: ServerHandle) -> None:
    """Seen on the old server: 40 MiB of headers answered 200 and grew the process by 640 MiB."""
    gc.collect()
    before = rss_bytes()
    s = connect(port_of(server))
    sent = 0
    with contextlib.suppress(BrokenPipeError, ConnectionResetError, TimeoutError):
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: ")
        chunk = b"a" * (1024 * 1024)
        for _ in range(40):
            s.sendall(chunk)
            sent += len(chunk)
        s.sendall(b"\r\n\r\n")
    answer = read_answer(s)
    assert status_of(answer) in (431, None), answer[:100]  # 431, or reset while we were still sending
    assert sent < 8 * 1024 * 1024, f"the server kept reading {sent} bytes of headers"
    assert rss_bytes() - before < 16 * 1024 * 1024
    assert healthz_ms(server)[0] == 200


def test_slow_headers_are_cut_off(tight: ServerHandle) -> None:
    s = connect(port_of(tight))
    s.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
    t0 = time.monotonic()
    closed = None
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
        while time.monotonic() - t0 < 4 and closed is None:
            s.sendall(b"X-A: b\r\n")  # a header line every 0.2 s, never the blank line
            closed = closed_within(s, 0.2)
    assert time.monotonic() - t0 < 3.5, "a slowloris client kept its connection past the header deadline"


def test_silent_connections_are_closed_and_hold_no_request_slot(tight: ServerHandle) -> None:
    silent = [connect(port_of(tight)) for _ in range(20)]
    assert healthz_ms(tight)[0] == 200
    assert all(closed_within(s, 3.0) is not None for s in silent), "a socket that never sent a byte stayed open"
    for s in silent:
        s.close()


@pytest.mark.e2e
def test_a_thousand_idle_sockets_do_not_deny_service(tmp_path: Path) -> None:
    """Seen with `inhouse serve`: ~1,030 idle connections made every request, /healthz too, answer 503."""
    server = ServeProcess(tmp_path / "data").start()
    idle: list[socket.socket] = []
    try:
        for _ in range(1100):
            idle.append(connect(server.port))
        statuses = [httpx2.get(f"http://127.0.0.1:{server.port}/healthz", timeout=10).status_code
                    for _ in range(5)]
        assert statuses == [200] * 5
    finally:
        for s in idle:
            s.close()
        server.stop()


def test_past_the_connection_cap_the_longest_idle_socket_makes_room(tight: ServerHandle) -> None:
    idle = [connect(port_of(tight)) for _ in range(64)]
    try:
        assert healthz_ms(tight)[0] == 200
        assert closed_within(idle[0], 1.0) is not None  # the oldest idle one went first
    finally:
        for s in idle:
            s.close()


def test_a_stalled_body_gets_408_and_the_connection_closes(tight: ServerHandle) -> None:
    s = connect(port_of(tight))
    s.sendall(b"POST /v1/embeddings HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
              b"Content-Length: 100\r\n\r\n{\"input\": ")
    s.settimeout(4)
    t0 = time.monotonic()
    answer = read_answer(s)
    assert status_of(answer) == 408, answer[:200]
    assert time.monotonic() - t0 < 3.5
    assert b"connection: close" in answer.lower()


def test_keep_alive_is_bounded_in_time_and_requests(tight: ServerHandle) -> None:
    s = connect(port_of(tight))
    request = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    s.sendall(request)
    s.settimeout(2)
    assert s.recv(65536).startswith(b"HTTP/1.1 200")
    assert closed_within(s, 3.0) is not None, "an idle keep-alive connection stayed open"
    s = connect(port_of(tight))
    s.settimeout(2)
    answers = []
    for _ in range(3):
        s.sendall(request)
        answers.append(s.recv(65536))
    assert b"connection: close" not in answers[0].lower()
    assert b"connection: close" in answers[2].lower()  # the third request is the last on this connection
    assert closed_within(s, 2.0) is not None


def test_requests_in_progress_are_capped_and_a_client_that_stops_reading_loses_its_slot(
        settings_factory: Any) -> None:
    with start_server(settings_factory(http={"max_requests": 1, "send_timeout_seconds": 1.0})) as server:
        payload = b"\0" * (32 * 1024 * 1024)
        fid = httpx2.post(f"{server.base_url}/files", files={"file": ("big.bin", payload)},
                          data={"purpose": "assistants"}, timeout=60).json()["id"]
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.connect(("127.0.0.1", port_of(server)))
        s.sendall(f"GET /v1/files/{fid}/content HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())  # never read
        time.sleep(0.3)
        busy = httpx2.get(f"{server.origin}/healthz")
        assert busy.status_code == 503 and busy.headers["retry-after"] == "1"
        assert busy.headers["retry-after-ms"] == "1000"
        assert busy.json()["error"]["code"] == "server_busy"
        t0 = time.monotonic()
        while httpx2.get(f"{server.origin}/healthz").status_code != 200:
            assert time.monotonic() - t0 < 5, "a client that reads nothing kept its request slot"
            time.sleep(0.1)
        assert closed_within(s, 2.0) is not None
