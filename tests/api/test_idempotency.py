"""Idempotency-Key: replays of the first answer, 422 on a different body, multipart boundaries ignored, 409 while
the first attempt is in flight, keys scoped per API key."""

from __future__ import annotations

import asyncio
import socket
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx2
import openai
import pytest

from inhouse.api.auth import CALLER_KEY
from inhouse.api.idempotency import Idempotency
from inhouse.records import IdempotencyRecord, Project
from inhouse.services.idempotency import IdempotencyService
from inhouse.services.keys import Caller
from inhouse.storage.sqlite import SqliteMetadataStore
from tests.conftest import make_client
from tests.harness import ServerHandle, start_server


def test_json_replay_and_conflict(server: ServerHandle, client: openai.OpenAI) -> None:
    args = {"filename": "a", "purpose": "assistants", "bytes": 3, "mime_type": "text/plain"}
    first = client.uploads.create(**args, extra_headers={"Idempotency-Key": "k1"})  # type: ignore[arg-type]
    again = client.uploads.create(**args, extra_headers={"Idempotency-Key": "k1"})  # type: ignore[arg-type]
    assert again.id == first.id
    with pytest.raises(openai.UnprocessableEntityError) as exc:
        client.uploads.create(**{**args, "bytes": 4}, extra_headers={"Idempotency-Key": "k1"})  # type: ignore[arg-type]
    assert exc.value.code == "idempotency_key_reused"
    other = client.uploads.create(**args, extra_headers={"Idempotency-Key": "k2"})  # type: ignore[arg-type]
    assert other.id != first.id


def test_multipart_replay_ignores_boundary(client: openai.OpenAI) -> None:
    f1 = client.files.create(file=("a.txt", b"hello"), purpose="assistants", extra_headers={"Idempotency-Key": "f"})
    f2 = client.files.create(file=("a.txt", b"hello"), purpose="assistants", extra_headers={"Idempotency-Key": "f"})
    assert f1.id == f2.id
    assert [f.id for f in client.files.list()] == [f1.id]
    with pytest.raises(openai.UnprocessableEntityError):
        client.files.create(file=("a.txt", b"world"), purpose="assistants", extra_headers={"Idempotency-Key": "f"})


def test_errors_that_could_heal_are_not_kept(server: ServerHandle) -> None:
    # A 400 is final and replayed; the same key can't later succeed with the same body.
    url = f"{server.base_url}/uploads"
    bad = {"filename": "a", "purpose": "nope", "bytes": 3, "mime_type": "text/plain"}
    r1 = httpx2.post(url, json=bad, headers={"Idempotency-Key": "e"})
    r2 = httpx2.post(url, json=bad, headers={"Idempotency-Key": "e"})
    assert r1.status_code == r2.status_code == 400
    assert r1.json() == r2.json() and r2.headers.get("idempotent-replayed") == "true"


def test_cancel_replay(client: openai.OpenAI) -> None:
    up = client.uploads.create(filename="a", purpose="assistants", bytes=3, mime_type="text/plain")
    c1 = client.uploads.cancel(up.id, extra_headers={"Idempotency-Key": "c"})
    c2 = client.uploads.cancel(up.id, extra_headers={"Idempotency-Key": "c"})  # a retry, not a second cancel
    assert c1.status == c2.status == "cancelled"


def test_a_retry_while_the_first_is_in_flight_is_409(server: ServerHandle, client: openai.OpenAI) -> None:
    port = int(server.origin.rsplit(":", 1)[1])
    # The first attempt: its headers and the start of its body are in; the rest never comes.
    first = socket.create_connection(("127.0.0.1", port), timeout=10)
    first.sendall(b"POST /v1/files HTTP/1.1\r\nHost: 127.0.0.1\r\nIdempotency-Key: slow\r\n"
                  b"Content-Type: multipart/form-data; boundary=b\r\nContent-Length: 100000\r\n\r\n"
                  b"--b\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nassistants\r\n")
    deadline = time.monotonic() + 10
    # The server's claims in flight, as its store counts them (renewing them is what the server does anyway).
    while server.call(server.services.idempotency.renew()) != 1:
        assert time.monotonic() < deadline, "the first attempt never claimed its key"
        time.sleep(0.02)
    with pytest.raises(openai.ConflictError) as exc:
        client.files.create(file=("a.txt", b"hello"), purpose="assistants", extra_headers={"Idempotency-Key": "slow"})
    assert exc.value.code == "idempotency_in_flight"
    assert client.files.list().data == []  # the retry did nothing
    first.close()  # the first attempt dies unanswered: its claim is dropped, and the retry now runs
    while True:
        try:
            f = client.files.create(file=("a.txt", b"hello"), purpose="assistants",
                                    extra_headers={"Idempotency-Key": "slow"})
            break
        except openai.ConflictError:
            assert time.monotonic() < deadline + 10, "the dead attempt's claim was never dropped"
            time.sleep(0.05)
    assert client.files.content(f.id).read() == b"hello"


def test_keys_are_per_api_key(settings_factory: Any) -> None:
    with start_server(settings_factory()) as server:
        # Two keys of the same project: only the key itself tells their requests apart.
        a, b = (server.call(server.services.keys.create("team")) for _ in range(2))
        assert a.project.id == b.project.id
        server.services.keys._required_cache = None
        ca, cb = make_client(server.base_url, api_key=a.token), make_client(server.base_url, api_key=b.token)
        args = {"filename": "a", "purpose": "assistants", "bytes": 3, "mime_type": "text/plain"}
        first_a = ca.uploads.with_raw_response.create(**args, extra_headers={"Idempotency-Key": "same"})
        first_b = cb.uploads.with_raw_response.create(**args, extra_headers={"Idempotency-Key": "same"})
        assert "idempotent-replayed" not in first_b.headers  # not A's answer replayed to B
        assert first_a.parse().id != first_b.parse().id
        # Nor is another body under a key A used a reuse (422) of A's key.
        ca.uploads.create(**args, extra_headers={"Idempotency-Key": "other"})
        assert cb.uploads.create(**{**args, "bytes": 4}, extra_headers={"Idempotency-Key": "other"}).bytes == 4
        again_a = ca.uploads.with_raw_response.create(**args, extra_headers={"Idempotency-Key": "same"})
        again_b = cb.uploads.with_raw_response.create(**args, extra_headers={"Idempotency-Key": "same"})
        assert again_a.headers["idempotent-replayed"] == again_b.headers["idempotent-replayed"] == "true"
        assert (again_a.parse().id, again_b.parse().id) == (first_a.parse().id, first_b.parse().id)



def test_the_answer_is_kept_before_its_last_byte_leaves(tmp_path: Path) -> None:
    # A client may retry the instant it has the answer: the retry must find the answer kept, not a claim
    # still "in flight" (409; CI saw this on Postgres). So the record is finished before the final body
    # message is sent, not after the route returns.
    async def go() -> list[int | None]:
        store = SqliteMetadataStore(tmp_path / "meta.db")
        await store.open()
        await store.migrate()
        service = IdempotencyService(store.idempotency)

        async def route(scope: Any, receive: Any, send: Any) -> None:
            await receive()
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-type", b"application/json")]})
            await send({"type": "http.response.body", "body": b'{"a":', "more_body": True})
            await send({"type": "http.response.body", "body": b"1}"})

        seen: list[int | None] = []

        async def send(message: Any) -> None:
            if message["type"] == "http.response.body":  # what a retry arriving now would find
                rec = await store.idempotency.begin_idempotent(IdempotencyRecord("owner", "k", "", 0, None, None, None),
                                                   "another-process", 2**40)
                seen.append(None if rec is None else rec.status_code)

        async def receive() -> Any:
            return {"type": "http.request", "body": b"{}", "more_body": False}

        scope = {"type": "http", "method": "POST", "path": "/v1/x", "query_string": b"",
                 "headers": [(b"idempotency-key", b"k"), (b"content-length", b"2")],
                 "app": SimpleNamespace(state=SimpleNamespace(services=SimpleNamespace(idempotency=service))),
                 CALLER_KEY: Caller(Project("owner", "p", 0), "owner")}
        try:
            await Idempotency(route)(scope, receive, send)
        finally:
            await store.close()
        return seen

    # While the body streams the claim is in flight; when its last chunk leaves, the answer is stored.
    assert asyncio.run(go()) == [None, 200]
