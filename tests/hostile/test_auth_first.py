"""Nothing costly before the key: no body read, route-chosen caps, idempotency only for a valid key; the
auth mode is decided once and only closes; open mode answers only this machine."""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import openai
import pytest

from inhouse.services.keys import CreatedKey
from tests.conftest import make_client
from tests.harness import ServerHandle, start_server
from tests.hostile.raw import connect, read_answer, status_of


def create_key(server: ServerHandle, project: str = "team") -> CreatedKey:
    created = server.call(server.services.keys.create(project))
    server.services.keys._required_cache = None  # what a 5 s wait would do
    return created


@pytest.fixture
def keyed(settings_factory: Any) -> Iterator[tuple[ServerHandle, CreatedKey]]:
    """A server started while a key exists: keys are required from the start."""
    settings = settings_factory()
    with start_server(settings) as first:
        key = create_key(first)
    with start_server(settings) as handle:
        yield handle, key


def port_of(server: ServerHandle) -> int:
    return int(server.origin.rsplit(":", 1)[1])


def headers_only(server: ServerHandle, path: str, extra: bytes = b"", length: int = 300 * 1024 * 1024) -> bytes:
    """Send a POST's headers (and no body) and read the answer: it must come without waiting for the body."""
    s = connect(port_of(server), timeout=3)
    s.sendall(b"POST " + path.encode() + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n" + extra
              + b"Content-Length: %d\r\n\r\n" % length)
    return read_answer(s)


def test_no_body_is_read_before_the_key_is_checked(keyed: tuple[ServerHandle, CreatedKey]) -> None:
    server, _ = keyed
    for path, ctype in (("/v1/embeddings", b"application/json"),
                        ("/v1/files", b"multipart/form-data; boundary=x"),
                        ("/v1/chat/completions", b"application/json")):
        t0 = time.monotonic()
        answer = headers_only(server, path, b"Content-Type: " + ctype + b"\r\n", length=10 * 1024 * 1024)
        assert status_of(answer) == 401, (path, answer[:200])
        assert b"connection: close" in answer.lower()  # the unread body is not drained either
        assert time.monotonic() - t0 < 2.5


def test_body_cap_is_the_routes_not_the_content_types(keyed: tuple[ServerHandle, CreatedKey]) -> None:
    server, key = keyed
    auth = b"Authorization: Bearer " + key.token.encode() + b"\r\n"
    # A JSON route that claims a multipart body is still capped at the JSON limit: 413 before a byte is read.
    answer = headers_only(server, "/v1/embeddings", auth + b"Content-Type: multipart/form-data; boundary=x\r\n")
    assert status_of(answer) == 413, answer[:200]
    assert b"request_too_large" in answer
    # The same size is fine for a file upload route (its cap is the file cap) until the body stalls.
    answer = headers_only(server, "/v1/files", auth + b"Content-Type: multipart/form-data; boundary=x\r\n",
                          length=400 * 1024 * 1024)
    assert status_of(answer) != 413


def test_idempotency_needs_a_valid_key_and_a_replay_rechecks_it(keyed: tuple[ServerHandle, CreatedKey]) -> None:
    server, key = keyed
    db = Path(server.settings.database_url.removeprefix("sqlite:///"))
    r = httpx2.post(f"{server.base_url}/uploads", headers={"Idempotency-Key": "k1"},
                    json={"filename": "a", "purpose": "assistants", "bytes": 1, "mime_type": "text/plain"})
    assert r.status_code == 401
    assert sqlite3.connect(db).execute("SELECT count(*) FROM idempotency").fetchone() == (0,)
    c = make_client(server.base_url, api_key=key.token)
    first = c.uploads.with_raw_response.create(filename="a", purpose="assistants", bytes=1, mime_type="text/plain",
                                               extra_headers={"Idempotency-Key": "k2"})
    assert first.status_code == 200
    server.call(server.services.keys.revoke(key.key.id))
    with pytest.raises(openai.AuthenticationError):  # not a replay of the stored answer
        c.uploads.create(filename="a", purpose="assistants", bytes=1, mime_type="text/plain",
                         extra_headers={"Idempotency-Key": "k2"})


def test_revoking_the_last_key_never_opens_a_running_server(keyed: tuple[ServerHandle, CreatedKey]) -> None:
    server, key = keyed
    assert server.call(server.services.keys.revoke(key.key.id)) is True
    server.services.keys._required_cache = None
    r = httpx2.get(f"{server.base_url}/files")
    assert r.status_code == 401 and r.json()["error"]["code"] == "missing_api_key"


def test_an_open_server_closes_when_a_key_is_made_and_stays_closed(server: ServerHandle) -> None:
    assert httpx2.get(f"{server.base_url}/files").status_code == 200
    key = create_key(server)
    assert httpx2.get(f"{server.base_url}/files").status_code == 401
    server.call(server.services.keys.revoke(key.key.id))
    server.services.keys._required_cache = None
    assert httpx2.get(f"{server.base_url}/files").status_code == 401


def test_the_mode_is_said_at_start(settings_factory: Any, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="inhouse"), start_server(settings_factory()):
        pass
    assert any("auth: OPEN" in r.getMessage() for r in caplog.records)


def test_open_mode_refuses_foreign_hosts_and_cross_site_browsers(server: ServerHandle) -> None:
    url = f"{server.base_url}/models"
    assert httpx2.get(url).status_code == 200
    assert httpx2.get(url, headers={"Host": "localhost:8000"}).status_code == 200
    assert httpx2.get(url, headers={"Origin": "http://127.0.0.1:3000", "Sec-Fetch-Site": "same-site"}).status_code \
        == 200
    for headers in ({"Host": "attacker.example"},  # DNS rebinding: the page's own name
                    {"Host": "attacker.example:8000"},
                    {"Origin": "https://attacker.example"},
                    {"Origin": "null"},
                    {"Sec-Fetch-Site": "cross-site"}):
        r = httpx2.get(url, headers=headers)
        assert r.status_code == 403, headers
        assert r.json()["error"]["code"].startswith("open_mode")
    r = httpx2.post(f"{server.base_url}/embeddings", headers={"Origin": "https://attacker.example"},
                    json={"model": "x", "input": "y"})
    assert r.status_code == 403


def test_openapi_and_docs_follow_the_auth_rule(keyed: tuple[ServerHandle, CreatedKey]) -> None:
    server, key = keyed
    for path in ("/openapi.json", "/docs"):
        assert httpx2.get(server.origin + path).status_code == 401
        ok = httpx2.get(server.origin + path, headers={"Authorization": f"Bearer {key.token}"})
        assert ok.status_code == 200
    assert httpx2.get(f"{server.origin}/healthz").status_code == 200
