"""Per-key limits through the SDK: real 429s in OpenAI's envelope, Retry-After, every x-ratelimit-* header as
requests are made, the token limit (estimated before, corrected after), and the CLI that sets them."""

from __future__ import annotations

import math
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import openai
import pytest

from inhouse.cli import main as cli
from inhouse.services.keys import CreatedKey
from tests.api.test_embeddings import tiny_encoder, tiny_settings  # noqa: F401 - the tiny encoder fixture
from tests.conftest import make_client, storage_env
from tests.harness import ServerHandle, start_server

MODEL = "text-embedding-3-small"
RATE_HEADERS = [f"x-ratelimit-{what}-{kind}" for kind in ("requests", "tokens")
                for what in ("limit", "remaining", "reset")]
WAIT = re.compile(r"^(\d+)h(\d+)m(\d+)s$|^(\d+)m(\d+)s$|^(\d+(?:\.\d+)?)s$|^(\d+)ms$")


def seconds(text: str) -> float:
    """OpenAI's duration (`120ms`, `7.66s`, `6m0s`) in seconds."""
    m = WAIT.match(text)
    assert m, text
    h, hm, hs, mm, ms_, s, millis = m.groups()
    if h is not None:
        return int(h) * 3600 + int(hm) * 60 + int(hs)
    if mm is not None:
        return int(mm) * 60 + int(ms_)
    return float(s) if s is not None else int(millis) / 1000


@pytest.fixture
def emb_server(settings_factory: Any, tiny_encoder: Path) -> Iterator[ServerHandle]:  # noqa: F811
    with start_server(tiny_settings(settings_factory, tiny_encoder)) as server:
        yield server


def new_key(server: ServerHandle, project: str = "team", **kw: Any) -> CreatedKey:
    created: CreatedKey = server.call(server.services.keys.create(project, **kw))
    server.services.keys._required_cache = None  # the first key closes open mode now, not within 5 s
    return created


def error_of(exc: openai.APIStatusError) -> dict[str, Any]:
    body: dict[str, Any] = exc.response.json()["error"]
    return body


def embed(client: openai.OpenAI, text: str = "alpha beta") -> Any:
    return client.embeddings.with_raw_response.create(model=MODEL, input=text, encoding_format="float")


def test_request_limit(emb_server: ServerHandle) -> None:
    key = new_key(emb_server, rpm=3)
    client = make_client(emb_server.base_url, api_key=key.token)
    for remaining in (2, 1, 0):
        raw = embed(client)
        assert raw.headers["x-ratelimit-limit-requests"] == "3"
        assert raw.headers["x-ratelimit-remaining-requests"] == str(remaining)
        # A bucket of 3 refills one request every 20 s: it is full again once 3 - remaining have come back.
        assert 0 < seconds(raw.headers["x-ratelimit-reset-requests"]) <= 20 * (3 - remaining)
        assert "x-ratelimit-limit-tokens" not in raw.headers  # no token limit, no token headers
        assert raw.parse().data[0].embedding

    with pytest.raises(openai.RateLimitError) as exc:
        embed(client)
    r = exc.value.response
    assert r.status_code == 429
    body = error_of(exc.value)
    assert {k: body[k] for k in ("type", "param", "code")} == {"type": "requests", "param": None,
                                                              "code": "rate_limit_exceeded"}
    wait = re.fullmatch(r"Rate limit reached for requests per min \(RPM\): Limit 3, Used 3, Requested 1\. "
                        r"Please try again in (\S+)\.", body["message"])
    assert wait, body["message"]
    assert 0 < seconds(wait.group(1)) <= 20  # one request back takes 20 s at most
    assert 0 < int(r.headers["retry-after-ms"]) <= 20_000
    assert int(r.headers["retry-after"]) == max(1, math.ceil(int(r.headers["retry-after-ms"]) / 1000))
    assert r.headers["x-ratelimit-remaining-requests"] == "0" and r.headers["x-ratelimit-limit-requests"] == "3"

    # Other routes carry the headers too, and take nothing from the bucket.
    files = client.files.with_raw_response.list()
    assert files.headers["x-ratelimit-remaining-requests"] == "0"
    assert files.headers["x-ratelimit-limit-requests"] == "3"

    # Refused before a byte of the body is read: the connection closes instead of draining it.
    raw = httpx2.post(f"{emb_server.base_url}/embeddings", content=b"x" * 100_000,
                      headers={"authorization": f"Bearer {key.token}", "content-type": "application/json"})
    assert raw.status_code == 429 and raw.headers["connection"] == "close"

    # Another key of the same project has its own bucket; a key without limits carries no such headers.
    other = make_client(emb_server.base_url, api_key=new_key(emb_server, rpm=3).token)
    assert embed(other).headers["x-ratelimit-remaining-requests"] == "2"
    plain = embed(make_client(emb_server.base_url, api_key=new_key(emb_server).token))
    assert not [h for h in plain.headers if h.startswith("x-ratelimit")]


def test_token_limit(emb_server: ServerHandle) -> None:
    key = new_key(emb_server, tpm=60)
    client = make_client(emb_server.base_url, api_key=key.token)
    text = "alpha beta gamma delta " * 4  # 92 characters: 23 tokens estimated before the work
    began = time.monotonic()
    raw = embed(client, text)
    elapsed = time.monotonic() - began
    used = raw.parse().usage.prompt_tokens
    assert used != 23  # so the check below sees the correction, not the estimate
    assert raw.headers["x-ratelimit-limit-tokens"] == "60"
    assert "x-ratelimit-limit-requests" not in raw.headers
    # After the answer the bucket holds 60 - used (the real count), plus what refilled meanwhile (1 a second).
    remaining = int(raw.headers["x-ratelimit-remaining-tokens"])
    assert 60 - used <= remaining <= 60 - used + elapsed + 1
    assert 0 < seconds(raw.headers["x-ratelimit-reset-tokens"]) <= used

    big = "word " * 60  # 300 characters: 75 estimated, more than the whole limit
    with pytest.raises(openai.RateLimitError) as exc:
        embed(client, big)
    body = error_of(exc.value)
    assert body["type"] == "tokens" and body["code"] == "rate_limit_exceeded"
    assert body["message"].startswith("Request too large for tokens per min (TPM): Limit 60, Requested 75.")
    assert exc.value.response.headers["x-should-retry"] == "false"  # it can never pass: the SDK must not retry

    began = time.monotonic()
    left = int(embed(client, "a").headers["x-ratelimit-remaining-tokens"])
    asks = left + 10  # more than what is left, less than the limit
    with pytest.raises(openai.RateLimitError) as exc:
        embed(client, "b" * (4 * asks))
    refilled = time.monotonic() - began + 1  # a token a second, and the one `left` rounded away
    body = error_of(exc.value)
    assert body["type"] == "tokens"
    m = re.fullmatch(r"Rate limit reached for tokens per min \(TPM\): Limit 60, Used (\d+), Requested (\d+)\. "
                     r"Please try again in (\S+)\.", body["message"])
    assert m, body["message"]
    assert int(m.group(2)) == asks and 60 - left - refilled - 1 <= int(m.group(1)) <= 60 - left
    assert 0 < seconds(m.group(3)) <= 10 and int(exc.value.response.headers["retry-after"]) <= 10


def test_chat_tokens_count_max_tokens(settings_factory: Any, tiny_llm: Path) -> None:
    from tests.llm import llm_settings

    with start_server(llm_settings(settings_factory, tiny_llm)) as server:
        client = make_client(server.base_url, api_key=new_key(server, tpm=100).token)
        messages = [{"role": "user", "content": "hello"}]
        # The estimate counts what may be generated: 2 + 3 * 40 tokens is over the limit, before any generation.
        with pytest.raises(openai.RateLimitError) as exc:
            client.chat.completions.create(model="gpt-4o-mini", messages=messages, max_tokens=40, n=3)  # type: ignore[arg-type]
        assert error_of(exc.value)["type"] == "tokens"
        assert "Requested 122." in error_of(exc.value)["message"]
        began = time.monotonic()
        raw = client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=messages,  # type: ignore[arg-type]
                                                               max_tokens=4, temperature=0)
        usage = raw.parse().usage
        assert usage is not None and usage.total_tokens != 6
        # Settled with the real count (the estimate was 2 + 4), plus 100/60 a second of refill.
        remaining = int(raw.headers["x-ratelimit-remaining-tokens"])
        assert 100 - usage.total_tokens <= remaining <= 100 - usage.total_tokens + (time.monotonic() - began) * 2 + 1
        # A stream's headers leave before its tokens are known: they show its estimate (2 + 4) taken.
        began = time.monotonic()
        stream = client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=messages,  # type: ignore[arg-type]
                                                                  max_tokens=4, stream=True)
        before = int(stream.headers["x-ratelimit-remaining-tokens"])
        assert remaining - 6 <= before <= remaining - 6 + (time.monotonic() - began) * 2 + 1
        assert [c for c in stream.parse() if c.choices and c.choices[0].finish_reason]


def test_cli_sets_and_updates_limits(settings_factory: Any, tiny_encoder: Path,  # noqa: F811
                                     capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    settings = tiny_settings(settings_factory, tiny_encoder)
    data = str(settings.data_dir)
    for name, value in storage_env(settings).items():  # the CLI works on the servers' own stores
        monkeypatch.setenv(name, value)
    assert cli(["keys", "create", "--project", "team", "--rpm", "1", "--data-dir", data]) == 0
    out = capsys.readouterr().out
    token = out.strip().splitlines()[-1]
    key_id = re.search(r"Created key (key_\w+)", out).group(1)  # type: ignore[union-attr]
    assert "rpm=1 tpm=unlimited" in out
    assert cli(["keys", "create", "--project", "team", "--rpm", "-1", "--data-dir", data]) == 2
    assert "'rpm' must be a whole number" in capsys.readouterr().err
    with start_server(settings) as server:
        client = make_client(server.base_url, api_key=token)
        assert embed(client).headers["x-ratelimit-remaining-requests"] == "0"
        with pytest.raises(openai.RateLimitError):
            embed(client)
        assert cli(["keys", "update", key_id, "--rpm", "0", "--tpm", "1000", "--data-dir", data]) == 0
        assert "rpm=unlimited tpm=1000" in capsys.readouterr().out
        server.services.keys._cache.clear()  # a running server sees the change within 5 s; now, here
        raw = embed(client)
        assert "x-ratelimit-limit-requests" not in raw.headers
        assert raw.headers["x-ratelimit-limit-tokens"] == "1000"
        assert cli(["keys", "update", key_id, "--tpm", "0", "--data-dir", data]) == 0
        server.services.keys._cache.clear()
        assert not [h for h in embed(client).headers if h.startswith("x-ratelimit")]
    assert cli(["keys", "update", key_id, "--data-dir", data]) == 2  # nothing to change
    assert cli(["keys", "update", "key_000000000000", "--rpm", "5", "--data-dir", data]) == 1
    assert cli(["keys", "list", "--data-dir", data]) == 0
    assert f"{key_id}\tteam\tactive\trpm=unlimited tpm=unlimited" in capsys.readouterr().out


def test_a_limit_holds_across_servers_on_one_database(settings_factory: Any, tiny_encoder: Path) -> None:  # noqa: F811
    """Two servers on one database share a key's bucket: what one takes, the other takes from its own bucket
    at the next exchange (about a second), so the key gets its limit in all, not once per server."""
    settings = tiny_settings(settings_factory, tiny_encoder)
    with start_server(settings) as a, start_server(settings) as b:
        key = new_key(a, rpm=4)
        b.services.keys._required_cache = None
        via_a = make_client(a.base_url, api_key=key.token)
        via_b = make_client(b.base_url, api_key=key.token)
        time.sleep(2.5)  # both have made their first exchange, which only notes what the others had taken
        assert [embed(via_a).headers["x-ratelimit-remaining-requests"] for _ in range(2)] == ["3", "2"]
        time.sleep(3.0)  # A stores its series, B reads it
        raw = embed(via_b)
        # 4 - 2 taken through A - this one (the bucket refills 4 a minute: a fraction came back meanwhile).
        assert raw.headers["x-ratelimit-remaining-requests"] == "1"
        assert embed(via_b).headers["x-ratelimit-remaining-requests"] == "0"
        time.sleep(3.0)
        with pytest.raises(openai.RateLimitError):
            embed(via_a)  # A has seen B's two: the key's four are used, across both servers
