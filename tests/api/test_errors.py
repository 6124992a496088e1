"""The OpenAI error contract: envelope on every non-2xx, 400 not 422, request ids, caps, no tracebacks."""

from __future__ import annotations

import errno
import json
from typing import Any

import httpx2
import openai
import pytest
from fastapi import FastAPI

from inhouse.errors import Overloaded, Unavailable
from tests.conftest import make_client
from tests.harness import ServerHandle, check_response, start_server


def get(server: ServerHandle, path: str, **kw: Any) -> httpx2.Response:
    r = httpx2.get(f"{server.origin}{path}", **kw)
    check_response(r)
    return r


def post(server: ServerHandle, path: str, **kw: Any) -> httpx2.Response:
    r = httpx2.post(f"{server.origin}{path}", **kw)
    check_response(r)
    return r


def test_unknown_route_and_method(server: ServerHandle) -> None:
    r = get(server, "/v1/nothing-here")
    assert r.status_code == 404 and r.json()["error"]["message"] == "Invalid URL (GET /v1/nothing-here)"
    r = httpx2.put(f"{server.base_url}/files")
    check_response(r)
    assert r.status_code == 405


def test_validation_is_400_with_param(server: ServerHandle) -> None:
    r = post(server, "/v1/uploads", json={"filename": "a", "purpose": "assistants", "mime_type": "x"})
    assert r.status_code == 400
    assert r.json()["error"] == {"message": "Missing required parameter: 'bytes'.", "type": "invalid_request_error",
                                 "param": "bytes", "code": None}
    r = post(server, "/v1/uploads", json={"filename": "a", "purpose": "assistants", "mime_type": "x", "bytes": "lots"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "bytes"
    r = post(server, "/v1/uploads/upload_x/complete", json={"part_ids": [1, {"a": 2}]})
    assert r.status_code == 400 and r.json()["error"]["param"].startswith("part_ids")


@pytest.mark.parametrize(
    "body",
    [b"{not json", b"\xff\xfe\x00", b"[" * 100_000 + b"]" * 100_000, b'{"bytes": NaN}', b""],
)
def test_bad_json_bodies_are_400(server: ServerHandle, body: bytes) -> None:
    r = post(server, "/v1/uploads", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 400


def test_oversized_json_is_413_before_reading(settings_factory: Any) -> None:
    settings = settings_factory()
    settings.limits.max_json_body_bytes = 1000
    with start_server(settings) as server:
        r = post(server, "/v1/uploads", content=b"x" * 5000, headers={"content-type": "application/json"})
        assert r.status_code == 413

        def chunks() -> Any:  # no Content-Length: the count stops it
            for _ in range(100):
                yield b" " * 100

        r = post(server, "/v1/uploads", content=chunks(), headers={"content-type": "application/json"})
        assert r.status_code == 413


def test_multipart_abuse_is_400(server: ServerHandle) -> None:
    many = "".join(f"--B\r\nContent-Disposition: form-data; name=\"f{i}\"\r\n\r\nv\r\n" for i in range(5000))
    r = post(server, "/v1/files", content=(many + "--B--\r\n").encode(),
             headers={"content-type": "multipart/form-data; boundary=B"})
    assert r.status_code == 400
    mp = {"content-type": "multipart/form-data; boundary=B"}
    r = post(server, "/v1/files", content=b"--B\r\ngarbage", headers=mp)
    assert r.status_code == 400
    r = post(server, "/v1/files", content=b"abc", headers={"content-type": "multipart/form-data"})
    assert r.status_code == 400
    long_field = b"--B\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\n" + b"a" * 100_000 + b"\r\n--B--\r\n"
    r = post(server, "/v1/files", content=long_field, headers={"content-type": "multipart/form-data; boundary=B"})
    assert r.status_code == 400


def test_crash_is_500_without_traceback(settings_factory: Any) -> None:
    def hook(app: FastAPI) -> None:
        @app.get("/v1/boom")
        async def boom() -> None:
            raise RuntimeError("secret internals /etc/shadow")

    with start_server(settings_factory(), app_hook=hook) as server:
        r = get(server, "/v1/boom")
        assert r.status_code == 500
        assert "secret" not in r.text and "Traceback" not in r.text
        assert r.json()["error"]["type"] == "server_error"


def test_429_and_503_carry_retry_after_in_seconds_and_milliseconds(settings_factory: Any) -> None:
    def hook(app: FastAPI) -> None:
        @app.get("/v1/busy")
        async def busy() -> None:
            raise Overloaded("wait", retry_after_s=1.5)

        @app.get("/v1/down")
        async def down() -> None:
            raise Unavailable("loading", retry_after_s=5.0)

    with start_server(settings_factory(), app_hook=hook) as server:
        r = get(server, "/v1/busy")
        assert r.status_code == 429
        assert (r.headers["retry-after"], r.headers["retry-after-ms"]) == ("2", "1500")  # whole seconds, rounded up
        r = get(server, "/v1/down")
        assert r.status_code == 503
        assert (r.headers["retry-after"], r.headers["retry-after-ms"]) == ("5", "5000")
        assert "x-should-retry" not in r.headers  # it will heal: the SDK may retry


class FullDisk:
    """A blob writer that fails like a full disk on commit."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    async def write(self, data: bytes) -> None:
        await self.inner.write(data)

    async def commit(self) -> tuple[int, str]:
        await self.inner.abort()
        raise OSError(errno.ENOSPC, "No space left on device")

    async def abort(self) -> None:
        await self.inner.abort()


def test_failed_write_never_answers_200(server: ServerHandle, client: openai.OpenAI) -> None:
    kept = client.files.create(file=("a.txt", b"keep"), purpose="assistants")
    blobs = server.services.blobs
    original = blobs.writer
    blobs.writer = lambda key: FullDisk(original(key))  # type: ignore[method-assign]
    try:
        with pytest.raises(openai.APIStatusError) as exc:
            client.files.create(file=("b.txt", b"lost"), purpose="assistants")
        assert exc.value.status_code == 507 and exc.value.code == "storage_full"
        assert exc.value.response.headers["x-should-retry"] == "false"
    finally:
        blobs.writer = original  # type: ignore[method-assign]
    assert [f.id for f in client.files.list()] == [kept.id]  # nothing half-listed, reads still served
    assert client.files.content(kept.id).read() == b"keep"


def test_errors_carry_request_id(server: ServerHandle) -> None:
    c = make_client(server.base_url)
    with pytest.raises(openai.NotFoundError) as exc:
        c.files.retrieve("file-nope")
    assert exc.value.request_id and exc.value.request_id.startswith("req_")
    assert json.loads(exc.value.response.text)["error"]["code"] is None


def test_health(server: ServerHandle) -> None:
    assert httpx2.get(f"{server.origin}/healthz").json() == {"status": "ok"}
    ready = httpx2.get(f"{server.origin}/readyz").json()
    assert ready["status"] == "ready" and ready["database"]["journal_mode"] == "wal"
