"""API keys and projects: required once a key exists, hashed at rest, isolation between projects."""

from __future__ import annotations

import asyncio
import hashlib
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx2
import openai
import pytest

from inhouse.app import UnsafeBind, check_bind
from inhouse.bootstrap import build_services
from inhouse.services.keys import CreatedKey
from tests.conftest import make_client
from tests.harness import ServerHandle


def create_key(server: ServerHandle, project: str) -> CreatedKey:
    return server.call(server.services.keys.create(project))


def test_open_on_loopback_until_a_key_exists(server: ServerHandle) -> None:
    assert make_client(server.base_url, api_key="anything").files.list().data == []
    key = create_key(server, "team-a")
    server.services.keys._required_cache = None  # the 5 s cache would hide the new key for a moment
    with pytest.raises(openai.AuthenticationError) as exc:
        make_client(server.base_url, api_key="sk-inh-wrong-key").files.list()
    assert exc.value.code == "invalid_api_key"
    assert "sk-inh-wrong-key" not in exc.value.message  # the key is never echoed whole
    r = httpx2.get(f"{server.base_url}/files")
    assert r.status_code == 401 and r.json()["error"]["code"] == "missing_api_key"
    assert make_client(server.base_url, api_key=key.token).files.list().data == []
    # health stays open
    assert httpx2.get(f"{server.origin}/healthz").status_code == 200


def test_keys_are_hashed_at_rest_and_revocable(server: ServerHandle) -> None:
    key = create_key(server, "team-a")
    other = create_key(server, "team-a")
    # The rows as the metadata store reads them back (every column of api_keys), on whichever backend it is.
    rows = server.call(server.services.meta.keys.list_api_keys())
    stored = {k.id: k for k, _ in rows}
    assert set(stored) == {key.key.id, other.key.id}
    # The secret is all that follows the key's id (urlsafe: it may hold "-" itself, even end in one).
    secret = key.token.removeprefix(f"sk-inh-{key.key.id.removeprefix('key_')}-")
    assert secret != key.token and key.token not in repr(rows) and secret not in repr(rows)
    assert stored[key.key.id].key_hash == hashlib.sha256(key.token.encode()).hexdigest()  # only its hash
    c = make_client(server.base_url, api_key=key.token)
    assert c.files.list().data == []
    assert server.call(server.services.keys.revoke(key.key.id)) is True
    with pytest.raises(openai.AuthenticationError):
        c.files.list()
    assert make_client(server.base_url, api_key=other.token).files.list().data == []


def test_projects_are_isolated(server: ServerHandle) -> None:
    a = make_client(server.base_url, api_key=create_key(server, "a").token)
    b = make_client(server.base_url, api_key=create_key(server, "b").token)
    fa = a.files.create(file=("a.txt", b"secret"), purpose="assistants")
    up = a.uploads.create(filename="x", purpose="assistants", bytes=1, mime_type="text/plain")
    with pytest.raises(openai.NotFoundError) as seen:
        b.files.retrieve(fa.id)
    with pytest.raises(openai.NotFoundError) as missing:
        b.files.retrieve("file-doesnotexist00000000")
    # Another project's id answers exactly like a missing one.
    assert seen.value.body == {**missing.value.body, "message": seen.value.body["message"]}  # type: ignore[dict-item]
    assert seen.value.message.replace(fa.id, "X") == missing.value.message.replace("file-doesnotexist00000000", "X")
    for call in (lambda: b.files.content(fa.id), lambda: b.files.delete(fa.id),
                 lambda: b.uploads.parts.create(up.id, data=b"x"), lambda: b.uploads.cancel(up.id)):
        with pytest.raises(openai.NotFoundError):
            call()
    assert b.files.list().data == []
    assert b.files.list(after=fa.id).data == []
    assert [f.id for f in a.files.list()] == [fa.id]


def test_non_loopback_bind_needs_keys(settings_factory: Any) -> None:
    async def go(host: str, auth: str = "auto", with_key: bool = False) -> None:
        settings = settings_factory(host=host, auth=auth)
        services = build_services(settings)
        await services.open()
        try:
            if with_key:
                await services.keys.create("p")
            await check_bind(settings, services)
        finally:
            await services.close()

    with pytest.raises(UnsafeBind):
        asyncio.run(go("0.0.0.0"))
    with pytest.raises(UnsafeBind):
        asyncio.run(go("0.0.0.0", auth="off", with_key=True))
    asyncio.run(go("0.0.0.0", with_key=True))
    asyncio.run(go("127.0.0.1"))
    asyncio.run(go("::1"))


def test_cli_keys(tmp_path: Path) -> None:
    env = {"INHOUSE_DATA_DIR": str(tmp_path / "d"), "PATH": "/usr/bin:/bin"}
    run = lambda *a: subprocess.run([sys.executable, "-m", "inhouse.cli", *a], env=env, capture_output=True,  # noqa: E731
                                    text=True, check=True, timeout=60).stdout
    out = run("keys", "create", "--project", "acme", "--name", "ci")
    token = out.strip().splitlines()[-1]
    assert token.startswith("sk-inh-")
    listing = run("keys", "list")
    assert "acme" in listing and "active" in listing and token not in listing
    key_id = listing.split()[0]
    assert "revoked" in run("keys", "revoke", key_id)
    assert "revoked" in run("keys", "list")
    assert "journal_mode" in run("migrate")
    assert '"max_file_bytes": 536870912' in run("config", "show")


def test_every_v1_route_needs_a_key(server: ServerHandle) -> None:
    create_key(server, "team")
    server.services.keys._required_cache = None
    # Signed image URLs are the one keyless /v1 route: their signature is the credential.
    routes = [r for r in server_app_routes(server) if r[1].startswith("/v1/") and "/images/files/" not in r[1]]
    assert len(routes) >= 20
    for method, path in routes:
        url = server.origin + path.replace("{model}", "m").replace("{file_id}", "file-x").replace(
            "{upload_id}", "upload_x").replace("{job_id}", "ftjob-x")
        r = httpx2.request(method, url, json={})
        assert r.status_code == 401, (method, path, r.status_code)


def server_app_routes(server: ServerHandle) -> list[tuple[str, str]]:
    """Every operation the app declares, from its own OpenAPI document."""
    paths = server.app.openapi()["paths"]
    return [(method.upper(), path) for path, ops in paths.items() for method in ops]
