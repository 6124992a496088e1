"""Idempotency-Key: replays of the first answer, 422 on a different body, multipart boundaries ignored."""

from __future__ import annotations

import httpx2
import openai
import pytest

from tests.harness import ServerHandle


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
