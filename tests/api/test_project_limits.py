"""Per-project limits, shared by all of a project's keys, beside each key's own: real 429s naming the project, the
headers of the binding limit, tokens settled in both buckets, nothing leaked when the second limit refuses, and
the CLI and admin route that set them."""

from __future__ import annotations

import math
import re
import time
from pathlib import Path
from typing import Any

import httpx2
import openai
import pytest

from inhouse.cli import main as cli
from inhouse.records import Project
from inhouse.services.keys import CreatedKey
from inhouse.services.rate_limits import Limit, RateLimiter, RateLimitExceeded
from tests.api.test_embeddings import tiny_encoder, tiny_settings  # noqa: F401 - the tiny encoder fixture
from tests.api.test_rate_limits import emb_server, embed, error_of, new_key, seconds  # noqa: F401 - a fixture
from tests.conftest import make_client, storage_env
from tests.harness import ServerHandle, start_server


def limit_project(server: ServerHandle, project: Project, **limits: int | None) -> Project:
    updated: Project = server.call(server.services.keys.update_project(project.id, limits=limits))
    return updated


def client_of(server: ServerHandle, key: CreatedKey) -> openai.OpenAI:
    return make_client(server.base_url, api_key=key.token)


def rate(raw: Any, kind: str = "requests") -> tuple[int, int]:
    """(limit, remaining) of one kind, as the x-ratelimit-* headers say."""
    return int(raw.headers[f"x-ratelimit-limit-{kind}"]), int(raw.headers[f"x-ratelimit-remaining-{kind}"])


def test_keys_of_a_project_share_its_request_limit(emb_server: ServerHandle) -> None:  # noqa: F811
    a = new_key(emb_server, "team")
    b = new_key(emb_server, "team")
    pid = a.project.id
    limit_project(emb_server, a.project, rpm=3)
    ca, cb = client_of(emb_server, a), client_of(emb_server, b)
    assert rate(embed(ca)) == (3, 2)
    assert rate(embed(cb)) == (3, 1)  # the other key took from the same bucket
    raw = embed(ca)
    assert rate(raw) == (3, 0)
    assert 0 < seconds(raw.headers["x-ratelimit-reset-requests"]) <= 60
    assert "x-ratelimit-limit-tokens" not in raw.headers  # no token limit anywhere

    with pytest.raises(openai.RateLimitError) as exc:
        embed(cb)
    r = exc.value.response
    body = error_of(exc.value)
    assert {k: body[k] for k in ("type", "param", "code")} == {"type": "requests", "param": None,
                                                              "code": "rate_limit_exceeded"}
    wait = re.fullmatch(rf"Rate limit reached for requests per min \(RPM\) in project {pid}: Limit 3, Used 3, "
                        r"Requested 1\. Please try again in (\S+)\.", body["message"])
    assert wait, body["message"]
    assert 0 < seconds(wait.group(1)) <= 20
    assert 0 < int(r.headers["retry-after-ms"]) <= 20_000
    assert int(r.headers["retry-after"]) == max(1, math.ceil(int(r.headers["retry-after-ms"]) / 1000))
    assert rate(r) == (3, 0)

    # Every answer of the project's keys carries the headers; other routes take nothing.
    assert rate(ca.files.with_raw_response.list()) == (3, 0)
    # Another project is not limited by this one.
    other = embed(client_of(emb_server, new_key(emb_server, "elsewhere")))
    assert not [h for h in other.headers if h.startswith("x-ratelimit")]


def test_project_refusal_gives_back_the_keys_request(emb_server: ServerHandle) -> None:  # noqa: F811
    own = new_key(emb_server, "team", rpm=4)
    limit_project(emb_server, own.project, rpm=2)
    pid = own.project.id
    client = client_of(emb_server, own)
    assert rate(embed(client)) == (2, 1)  # key 3 left of 4, project 1 of 2: the project's headers
    assert rate(embed(client)) == (2, 0)  # key 2 left, project none
    # The key would run out after two more takes if the project's refusals kept what the key gave: every
    # refusal here is the project's, so each gave the key's request back.
    for _ in range(5):
        with pytest.raises(openai.RateLimitError) as exc:
            embed(client)
        assert f" in project {pid}:" in error_of(exc.value)["message"]
        assert rate(exc.value.response) == (2, 0)
    # Lift the project's limit: the key's own bucket shows what it still holds (2 of 4, plus any refill).
    limit_project(emb_server, own.project, rpm=0)
    raw = embed(client)
    limit, remaining = rate(raw)
    assert limit == 4 and remaining >= 1  # 4 - 3 taken in all; a leak would have emptied it


def test_key_limit_tighter_than_the_projects_still_binds(emb_server: ServerHandle) -> None:  # noqa: F811
    tight = new_key(emb_server, "team", rpm=2)
    free = new_key(emb_server, "team")
    limit_project(emb_server, tight.project, rpm=10)
    began = time.monotonic()
    ct = client_of(emb_server, tight)
    assert rate(embed(ct)) == (2, 1)  # the key has fewer left: its headers
    assert rate(embed(ct)) == (2, 0)
    with pytest.raises(openai.RateLimitError) as exc:
        embed(ct)
    body = error_of(exc.value)
    assert re.fullmatch(r"Rate limit reached for requests per min \(RPM\): Limit 2, Used 2, Requested 1\. "
                        r"Please try again in \S+\.", body["message"]), body["message"]
    assert rate(exc.value.response) == (2, 0)
    # The key refused first, so the project lost nothing to the refused request: 10 - 2 - 1 left after this one.
    limit, remaining = rate(embed(client_of(emb_server, free)))
    assert limit == 10 and 7 <= remaining <= 7 + (time.monotonic() - began) / 6 + 1


def test_project_token_limit(emb_server: ServerHandle) -> None:  # noqa: F811
    a = new_key(emb_server, "team", tpm=50)
    b = new_key(emb_server, "team")
    pid = a.project.id
    limit_project(emb_server, a.project, tpm=100)
    ca, cb = client_of(emb_server, a), client_of(emb_server, b)
    text = "alpha beta gamma delta " * 4  # 23 tokens estimated before the work

    began = time.monotonic()
    raw = embed(ca, text)
    used = raw.parse().usage.prompt_tokens
    assert used != 23  # so the checks below see the correction, not the estimate
    # The key (50 - used) has fewer left than the project (100 - used): its bucket, settled with the real count.
    limit, remaining = rate(raw, "tokens")
    assert limit == 50 and 50 - used <= remaining <= 50 - used + (time.monotonic() - began) + 1
    assert "x-ratelimit-limit-requests" not in raw.headers

    raw = embed(cb, text)
    # The other key has no limit of its own: the project's bucket, with both requests settled in it.
    limit, remaining = rate(raw, "tokens")
    assert limit == 100 and 100 - 2 * used <= remaining <= 100 - 2 * used + (time.monotonic() - began) * 2 + 1

    # Asking more than the project has left (but less than its whole limit) is the project's 429.
    began = time.monotonic()
    left = rate(embed(cb, "a"), "tokens")[1]
    asks = left + 10
    with pytest.raises(openai.RateLimitError) as exc:
        embed(cb, "b" * (4 * asks))
    body = error_of(exc.value)
    assert body["type"] == "tokens" and body["code"] == "rate_limit_exceeded"
    m = re.fullmatch(rf"Rate limit reached for tokens per min \(TPM\) in project {pid}: Limit 100, Used (\d+), "
                     r"Requested (\d+)\. Please try again in (\S+)\.", body["message"])
    assert m, body["message"]
    assert int(m.group(2)) == asks
    assert 0 < seconds(m.group(3)) <= 10 * 60 / 100 + 1 and "x-should-retry" not in exc.value.response.headers

    # More than the whole project limit can never pass: the SDK is told not to retry.
    with pytest.raises(openai.RateLimitError) as exc:
        embed(cb, "word " * 120)  # 150 estimated
    body = error_of(exc.value)
    assert body["message"].startswith(f"Request too large for tokens per min (TPM) in project {pid}: Limit 100, "
                                      "Requested 150.")
    assert exc.value.response.headers["x-should-retry"] == "false"
    # Over the key's 50 but within the project's 100: the key's own limit refuses, as too large for it.
    with pytest.raises(openai.RateLimitError) as exc:
        embed(ca, "word " * 60)  # 75 estimated
    assert error_of(exc.value)["message"].startswith("Request too large for tokens per min (TPM): Limit 50, "
                                                     "Requested 75.")


def test_limiter_gives_back_what_the_first_bucket_took() -> None:
    now = [0.0]
    limiter = RateLimiter(clock=lambda: now[0])  # time stands still: no refill blurs the counts
    key, project = Limit("key_a", 10), Limit("proj_a", 25, " in project proj_a")

    def shown(*limits: Limit) -> tuple[bytes, bytes]:
        headers = dict(limiter.headers([], limits))
        return headers[b"x-ratelimit-limit-tokens"], headers[b"x-ratelimit-remaining-tokens"]

    limiter.take("tokens", [key, project], 5)  # key 5 left, project 20
    limiter.take("tokens", [Limit("key_b", 100), project], 18)  # another key of the project: 2 left
    with pytest.raises(RateLimitExceeded) as exc:
        limiter.take("tokens", [key, project], 3)  # the key could, the project cannot
    assert exc.value.message.startswith("Rate limit reached for tokens per min (TPM) in project proj_a: Limit 25, "
                                        "Used 23, Requested 3.")
    assert shown(key) == (b"10", b"5")  # the key's 3 came back
    limiter.settle("tokens", [key, project], 5, 3)  # the first request really used 3: 2 back to each
    assert shown(key, project) == (b"25", b"4")  # key 7 left, project 4: the project binds
    limiter.take("tokens", [key], 7)
    assert shown(key, project) == (b"10", b"0")  # now the key binds
    with pytest.raises(RateLimitExceeded) as exc:
        limiter.take("tokens", [key, project], 1)
    assert exc.value.message.startswith("Rate limit reached for tokens per min (TPM): Limit 10")
    assert shown(project) == (b"25", b"4")  # the key refused first: the project was never touched


def test_cli_sets_and_lists_project_limits(settings_factory: Any, tiny_encoder: Path,  # noqa: F811
                                           capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    settings = tiny_settings(settings_factory, tiny_encoder)
    data = str(settings.data_dir)
    for name, value in storage_env(settings).items():  # the CLI works on the servers' own stores
        monkeypatch.setenv(name, value)
    assert cli(["keys", "create", "--project", "team", "--data-dir", data]) == 0
    token_a = capsys.readouterr().out.strip().splitlines()[-1]
    assert cli(["keys", "create", "--project", "team", "--data-dir", data]) == 0
    token_b = capsys.readouterr().out.strip().splitlines()[-1]
    assert cli(["projects", "update", "team", "--rpm", "1", "--data-dir", data]) == 0
    out = capsys.readouterr().out
    assert "'team'" in out and "rpm=1 tpm=unlimited" in out
    pid = re.search(r"\((proj_\w+)\)", out).group(1)  # type: ignore[union-attr]
    assert cli(["projects", "list", "--data-dir", data]) == 0
    assert f"{pid}\tteam\trpm=1 tpm=unlimited" in capsys.readouterr().out

    assert cli(["projects", "update", "team", "--data-dir", data]) == 2  # nothing to change
    assert cli(["projects", "update", "nope", "--rpm", "5", "--data-dir", data]) == 1
    assert "No project named 'nope'" in capsys.readouterr().err
    assert cli(["projects", "update", "team", "--rpm", "-1", "--data-dir", data]) == 1
    assert "'rpm' must be a whole number" in capsys.readouterr().err

    with start_server(settings) as server:
        a, b = make_client(server.base_url, api_key=token_a), make_client(server.base_url, api_key=token_b)
        assert rate(embed(a)) == (1, 0)
        with pytest.raises(openai.RateLimitError) as exc:
            embed(b)  # the other key: the same project's single request is spent
        assert f"in project {pid}:" in error_of(exc.value)["message"]
        # By id too; a flag left out keeps its value.
        assert cli(["projects", "update", pid, "--tpm", "1000", "--data-dir", data]) == 0
        assert "rpm=1 tpm=1000" in capsys.readouterr().out
        assert cli(["projects", "update", "team", "--rpm", "0", "--data-dir", data]) == 0
        assert "rpm=unlimited tpm=1000" in capsys.readouterr().out
        server.services.keys._cache.clear()  # a running server sees the change within 5 s; now, here
        raw = embed(b)
        assert "x-ratelimit-limit-requests" not in raw.headers
        assert raw.headers["x-ratelimit-limit-tokens"] == "1000"
        assert cli(["projects", "update", "team", "--tpm", "0", "--data-dir", data]) == 0
        server.services.keys._cache.clear()
        assert not [h for h in embed(a).headers if h.startswith("x-ratelimit")]
    assert cli(["projects", "list", "--data-dir", data]) == 0
    assert f"{pid}\tteam\trpm=unlimited tpm=unlimited" in capsys.readouterr().out


def test_admin_route_sets_project_limits(emb_server: ServerHandle) -> None:  # noqa: F811
    admin = new_key(emb_server, "ops", admin=True)
    user = new_key(emb_server, "team")
    pid = user.project.id
    url = f"{emb_server.base_url}/organization/projects/{pid}"
    auth = {"authorization": f"Bearer {admin.token}"}
    projects = make_client(emb_server.base_url, api_key=admin.token, admin_api_key=admin.token
                           ).admin.organization.projects

    before: Any = projects.retrieve(pid).model_extra
    assert before["rate_limits"] == {"rpm": None, "tpm": None}
    changed = httpx2.post(url, json={"rate_limits": {"rpm": 1, "tpm": 500}}, headers=auth)
    assert changed.status_code == 200
    assert changed.json() | {"created_at": 0} == {
        "id": pid, "object": "organization.project", "name": "team", "created_at": 0, "archived_at": None,
        "status": "active", "rate_limits": {"rpm": 1, "tpm": 500}}
    # A field left out keeps its value; 0 or null is unlimited.
    assert httpx2.post(url, json={"rate_limits": {"tpm": 0}}, headers=auth).json()["rate_limits"] == {"rpm": 1,
                                                                                                      "tpm": None}
    listed: Any = {p.id: p.model_extra for p in projects.list()}
    assert listed[pid]["rate_limits"] == {"rpm": 1, "tpm": None}

    client = client_of(emb_server, user)  # identified after the change (the route clears this process's cache)
    assert rate(embed(client)) == (1, 0)
    with pytest.raises(openai.RateLimitError):
        embed(client)

    # The spec's own `name`, through the SDK's method.
    renamed = projects.update(pid, name="team-renamed")
    assert renamed.name == "team-renamed" and renamed.model_extra["rate_limits"] == {"rpm": 1, "tpm": None}  # type: ignore[index]

    for bad, param in (({"rate_limits": {"rpm": -1}}, "rpm"), ({"rate_limits": {"rpm": "5"}}, None),
                       ({"rate_limits": {"rpd": 5}}, None), ({"rate_limits": None}, None),
                       ({"geography": "eu"}, "geography"), ({"external_key_id": "k"}, "external_key_id"),
                       ({"archived": True}, None), ({}, "rate_limits"), ({"name": "ops"}, "name"),
                       ({"name": " "}, "name")):
        r = httpx2.post(url, json=bad, headers=auth)
        assert r.status_code == 400, (bad, r.text)
        assert r.json()["error"]["type"] == "invalid_request_error"
        if param is not None:
            assert r.json()["error"]["param"] == param, (bad, r.json())
    default = emb_server.call(emb_server.services.keys.default_project())
    r = httpx2.post(f"{emb_server.base_url}/organization/projects/{default.id}", json={"name": "x"}, headers=auth)
    assert r.status_code == 400 and r.json()["error"]["param"] == "name"
    r = httpx2.post(f"{emb_server.base_url}/organization/projects/{default.id}",
                    json={"rate_limits": {"rpm": 100}}, headers=auth)
    assert r.status_code == 200 and r.json()["rate_limits"]["rpm"] == 100
    assert httpx2.post(f"{emb_server.base_url}/organization/projects/proj_nope", json={"rate_limits": {"rpm": 1}},
                       headers=auth).status_code == 404
    assert projects.retrieve(pid).model_extra["rate_limits"] == {"rpm": 1, "tpm": None}  # type: ignore[index]

    # Only admin keys: any other gets 403, and nothing changes.
    for token in (user.token, new_key(emb_server, "team-renamed", rpm=5).token):
        r = httpx2.post(url, json={"rate_limits": {"rpm": 0}}, headers={"authorization": f"Bearer {token}"})
        assert r.status_code == 403 and r.json()["error"]["code"] == "insufficient_permissions"
        with pytest.raises(openai.PermissionDeniedError):
            make_client(emb_server.base_url, api_key=token, admin_api_key=token).admin.organization.projects.update(
                pid, name="mine")
    assert projects.retrieve(pid).model_extra["rate_limits"] == {"rpm": 1, "tpm": None}  # type: ignore[index]
    assert projects.retrieve(pid).name == "team-renamed"
