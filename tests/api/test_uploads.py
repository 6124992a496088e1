"""Uploads API through the SDK: chunked upload, md5, size rules, states, expiry."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import httpx2
import openai
import pytest

from tests.conftest import make_client
from tests.harness import ServerHandle, start_server


def blobs_of(server: ServerHandle, prefix: str) -> list[str]:
    root = Path(server.settings.blob_url.removeprefix("file://")) / prefix
    return sorted(p.name for p in root.iterdir()) if root.exists() else []


def test_upload_file_chunked(server: ServerHandle, client: openai.OpenAI, tmp_path: Path) -> None:
    data = bytes(range(256)) * 4096 + b"end"  # 1 MiB + 3 bytes
    path = tmp_path / "data.jsonl.bin"
    path.write_bytes(data)
    up = client.uploads.upload_file_chunked(
        file=path, mime_type="application/octet-stream", purpose="assistants", part_size=300_000,
        md5=hashlib.md5(data).hexdigest(),
    )
    assert up.status == "completed" and up.object == "upload" and up.bytes == len(data)
    assert up.filename == "data.jsonl.bin" and up.purpose == "assistants"
    assert up.expires_at == up.created_at + 3600
    assert up.file is not None and up.file.bytes == len(data) and up.file.purpose == "assistants"
    assert client.files.content(up.file.id).read() == data
    assert [f.id for f in client.files.list()] == [up.file.id]
    assert blobs_of(server, "parts") == []  # parts are dropped once assembled


def test_parts_are_assembled_in_the_given_order(client: openai.OpenAI) -> None:
    up = client.uploads.create(filename="x.txt", purpose="user_data", bytes=9, mime_type="text/plain")
    assert up.status == "pending" and up.file is None
    a = client.uploads.parts.create(up.id, data=b"aaa")
    b = client.uploads.parts.create(up.id, data=b"bbb")
    c = client.uploads.parts.create(up.id, data=b"ccc")
    assert a.object == "upload.part" and a.upload_id == up.id and a.id.startswith("part_")
    done = client.uploads.complete(up.id, part_ids=[c.id, a.id, b.id])
    assert done.file is not None
    assert client.files.content(done.file.id).read() == b"cccaaabbb"
    with pytest.raises(openai.BadRequestError):
        client.uploads.parts.create(up.id, data=b"more")
    with pytest.raises(openai.BadRequestError):
        client.uploads.complete(up.id, part_ids=[a.id])
    with pytest.raises(openai.BadRequestError):
        client.uploads.cancel(up.id)


def test_complete_checks(client: openai.OpenAI) -> None:
    up = client.uploads.create(filename="x.txt", purpose="user_data", bytes=6, mime_type="text/plain")
    a = client.uploads.parts.create(up.id, data=b"abc")
    with pytest.raises(openai.BadRequestError) as exc:
        client.uploads.complete(up.id, part_ids=[a.id])
    assert exc.value.param == "bytes"
    b = client.uploads.parts.create(up.id, data=b"def")
    with pytest.raises(openai.BadRequestError) as exc:
        client.uploads.complete(up.id, part_ids=[a.id, a.id])
    with pytest.raises(openai.BadRequestError) as exc:
        client.uploads.complete(up.id, part_ids=[a.id, "part_nope"])
    assert exc.value.param == "part_ids"
    with pytest.raises(openai.BadRequestError) as exc:
        client.uploads.complete(up.id, part_ids=[a.id, b.id], md5="0" * 32)
    assert exc.value.param == "md5"
    assert client.files.list().data == []
    ok = client.uploads.complete(up.id, part_ids=[a.id, b.id], md5=hashlib.md5(b"abcdef").hexdigest())
    assert ok.status == "completed"


def test_create_validation(client: openai.OpenAI) -> None:
    for kwargs, param in (
        ({"bytes": 0}, "bytes"),
        ({"bytes": 8 * 1024**3 + 1}, "bytes"),
        ({"purpose": "nope"}, "purpose"),
        ({"mime_type": " "}, "mime_type"),
    ):
        args = {"filename": "a", "purpose": "assistants", "bytes": 10, "mime_type": "text/plain", **kwargs}
        with pytest.raises(openai.BadRequestError) as exc:
            client.uploads.create(**args)  # type: ignore[arg-type]
        assert exc.value.param == param


def test_fine_tune_upload_is_checked_as_jsonl(client: openai.OpenAI) -> None:
    content = b'{"a": 1}\nbroken\n'
    up = client.uploads.create(filename="t.jsonl", purpose="fine-tune", bytes=len(content), mime_type="text/jsonl")
    p = client.uploads.parts.create(up.id, data=content)
    with pytest.raises(openai.BadRequestError) as exc:
        client.uploads.complete(up.id, part_ids=[p.id])
    assert "Line 2" in exc.value.message
    assert client.files.list().data == []


def test_cancel(server: ServerHandle, client: openai.OpenAI) -> None:
    up = client.uploads.create(filename="x", purpose="assistants", bytes=3, mime_type="text/plain")
    p = client.uploads.parts.create(up.id, data=b"abc")
    cancelled = client.uploads.cancel(up.id)
    assert cancelled.status == "cancelled" and cancelled.file is None
    assert blobs_of(server, "parts") == []
    for call in (lambda: client.uploads.cancel(up.id), lambda: client.uploads.complete(up.id, part_ids=[p.id]),
                 lambda: client.uploads.parts.create(up.id, data=b"x")):
        with pytest.raises(openai.BadRequestError):
            call()


def test_unknown_upload_is_404(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError):
        client.uploads.parts.create("upload_nope", data=b"x")
    with pytest.raises(openai.NotFoundError):
        client.uploads.complete("upload_nope", part_ids=[])
    with pytest.raises(openai.NotFoundError):
        client.uploads.cancel("upload_nope")


def test_part_cap_is_413(settings_factory) -> None:  # type: ignore[no-untyped-def]
    settings = settings_factory()
    settings.limits.max_upload_part_bytes = 1000
    with start_server(settings) as server:
        c = make_client(server.base_url)
        up = c.uploads.create(filename="x", purpose="assistants", bytes=2000, mime_type="text/plain")
        with pytest.raises(openai.APIStatusError) as exc:
            c.uploads.parts.create(up.id, data=b"x" * 1001)
        assert exc.value.status_code == 413
        assert blobs_of(server, "parts") == []
        c.uploads.parts.create(up.id, data=b"x" * 1000)


def test_missing_data_part(server: ServerHandle, client: openai.OpenAI) -> None:
    up = client.uploads.create(filename="x", purpose="assistants", bytes=3, mime_type="text/plain")
    r = httpx2.post(f"{server.base_url}/uploads/{up.id}/parts", files={"other": ("a", b"abc")})
    assert r.status_code == 400
    r = httpx2.post(f"{server.base_url}/uploads/{up.id}/parts", data={"x": "1"}, files={"zzz": ("a", b"")})
    assert r.status_code == 400


def test_expiry(server: ServerHandle, client: openai.OpenAI) -> None:
    up = client.uploads.create(filename="x", purpose="assistants", bytes=3, mime_type="text/plain")
    client.uploads.parts.create(up.id, data=b"abc")
    later = lambda: int(time.time()) + 3601  # noqa: E731
    server.services.uploads.clock = later
    with pytest.raises(openai.BadRequestError) as exc:
        client.uploads.parts.create(up.id, data=b"x")
    assert "expired" in exc.value.message
    server.services.maintenance.clock = later
    report = server.call(server.services.maintenance.sweep())
    assert report.expired_uploads == 1
    assert blobs_of(server, "parts") == []
    with pytest.raises(openai.BadRequestError):
        client.uploads.cancel(up.id)
