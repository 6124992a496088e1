"""The Batch API through the SDK: each endpoint's lines answered exactly as its route answers them (compared
with the live route), per-line failures in the error file, input files refused with OpenAI's per-line errors,
create's checks, cancel, listing."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import numpy as np
import openai
import pytest

from tests.api.test_embeddings import tiny_encoder, tiny_settings  # noqa: F401 - the session's tiny encoder
from tests.api.test_images import decode, sd_settings, tiny_sd  # noqa: F401 - the session's tiny pipeline
from tests.conftest import make_client
from tests.harness import ServerHandle, start_server
from tests.llm import llm_settings

TERMINAL = ("completed", "failed", "cancelled", "expired")


def quick(settings: Any) -> Any:
    settings.fine_tuning.poll_seconds, settings.fine_tuning.heartbeat_seconds = 0.05, 0.1
    return settings


@pytest.fixture
def emb_batch_server(settings_factory: Any, tiny_encoder: Path) -> Iterator[ServerHandle]:  # noqa: F811
    settings = quick(tiny_settings(settings_factory, tiny_encoder))
    settings.batches.embedding_chunk_lines = 4
    with start_server(settings) as server:
        yield server


@pytest.fixture
def ec(emb_batch_server: ServerHandle) -> openai.OpenAI:
    return make_client(emb_batch_server.base_url)


def line(custom_id: str, url: str, body: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"custom_id": custom_id, "method": "POST", "url": url, "body": body, **extra}


def upload(client: openai.OpenAI, lines: list[Any]) -> str:
    text = "\n".join(x if isinstance(x, str) else json.dumps(x) for x in lines)
    return client.files.create(file=("batch.jsonl", text.encode()), purpose="batch").id


def wait(client: openai.OpenAI, batch_id: str, statuses: tuple[str, ...] = TERMINAL, timeout: float = 120) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        batch = client.batches.retrieve(batch_id)
        if batch.status in statuses:
            return batch
        time.sleep(0.05)
    raise AssertionError(f"batch {batch_id} still {batch.status}")


def run(client: openai.OpenAI, endpoint: Any, lines: list[Any], **kw: Any) -> Any:
    batch = client.batches.create(input_file_id=upload(client, lines), endpoint=endpoint, completion_window="24h",
                                  **kw)
    assert batch.status == "validating" and batch.object == "batch"
    return wait(client, batch.id)


def jsonl(client: openai.OpenAI, file_id: str | None) -> list[dict[str, Any]]:
    assert file_id is not None
    return [json.loads(x) for x in client.files.content(file_id).text.splitlines()]


def test_embeddings_batch_answers_as_the_route(ec: openai.OpenAI) -> None:
    texts = [f"sentence number {i} about {'vectors ' * (i % 5)}storage" for i in range(10)]
    lines = [line(f"req-{i}", "/v1/embeddings", {"model": "text-embedding-3-small", "input": t,
                                                   "encoding_format": "float"}) for i, t in enumerate(texts)]
    lines.insert(3, line("many", "/v1/embeddings", {"model": "text-embedding-3-small", "input": texts[:3],
                                                     "encoding_format": "float", "dimensions": 8}))
    lines.insert(5, line("empty", "/v1/embeddings", {"model": "text-embedding-3-small", "input": ""}))
    lines.insert(7, line("untyped", "/v1/embeddings", {"model": "text-embedding-3-small", "input": 5}))
    batch = run(ec, "/v1/embeddings", lines, metadata={"team": "search"})
    assert batch.status == "completed", batch.errors
    assert batch.request_counts is not None
    assert (batch.request_counts.total, batch.request_counts.completed, batch.request_counts.failed) == (13, 11, 2)
    assert batch.model == "text-embedding-3-small" and batch.metadata == {"team": "search"}
    assert batch.created_at <= batch.in_progress_at <= batch.finalizing_at <= batch.completed_at  # type: ignore[operator]
    assert batch.expires_at == batch.created_at + 24 * 3600
    out = jsonl(ec, batch.output_file_id)
    refused = ("empty", "untyped")
    assert [o["custom_id"] for o in out] == [x["custom_id"] for x in lines if x["custom_id"] not in refused]
    tokens = 0
    for o in out:
        assert o["error"] is None and o["id"].startswith("batch_req_") and o["response"]["status_code"] == 200
        body = o["response"]["body"]
        tokens += body["usage"]["prompt_tokens"]
        asked = next(x["body"] for x in lines if x["custom_id"] == o["custom_id"])
        live = ec.embeddings.create(**asked)  # the route itself, for the same body
        assert len(body["data"]) == len(live.data)
        for got, want in zip(body["data"], live.data, strict=True):
            assert np.allclose(got["embedding"], want.embedding, atol=1e-5)
        assert body["usage"]["prompt_tokens"] == live.usage.prompt_tokens
    assert batch.usage is not None and batch.usage.input_tokens == tokens and batch.usage.output_tokens == 0
    errors = {e["custom_id"]: e for e in jsonl(ec, batch.error_file_id)}
    assert set(errors) == {"empty", "untyped"}
    assert errors["empty"]["response"]["status_code"] == 400
    assert errors["empty"]["response"]["body"]["error"]["message"] == "'input' cannot be an empty string."
    assert errors["untyped"]["response"]["body"]["error"]["param"] == "input"
    for fid in (batch.output_file_id, batch.error_file_id):
        f = ec.files.retrieve(fid)  # type: ignore[arg-type]
        assert f.purpose == "batch_output" and f.filename.startswith(batch.id)


def test_input_file_problems_fail_the_batch_with_line_numbers(ec: openai.OpenAI) -> None:
    good = {"model": "text-embedding-3-small", "input": "x"}
    lines = [
        line("a", "/v1/embeddings", good),
        {"method": "POST", "url": "/v1/embeddings", "body": good},  # 2: no custom_id
        line("a", "/v1/embeddings", good),  # 3: duplicate
        line("b", "/v1/chat/completions", good),  # 4: another endpoint
        line("c", "/v1/embeddings", good, method="GET"),  # 5
        line("d", "/v1/embeddings", {**good, "model": "text-embedding-ada-002"}),  # a second model
        line("e", "/v1/embeddings", None),  # 7: no body
    ]
    batch = run(ec, "/v1/embeddings", lines)
    assert batch.status == "failed" and batch.failed_at and batch.output_file_id is None
    got = {(e.code, e.line) for e in batch.errors.data}
    assert {("missing_custom_id", 2), ("duplicate_custom_id", 3), ("invalid_url", 4), ("invalid_method", 5),
            ("missing_body", 7), ("mixed_models", None)} <= got
    assert all(e.message for e in batch.errors.data)


def test_create_checks(ec: openai.OpenAI) -> None:
    fid = upload(ec, [line("a", "/v1/embeddings", {"model": "text-embedding-3-small", "input": "x"})])
    tuning = ec.files.create(file=("t.jsonl", b'{"a": 1}\n'), purpose="fine-tune").id
    cases: list[tuple[dict[str, Any], str]] = [
        ({"endpoint": "/v1/moderations"}, "endpoint"),
        ({"completion_window": "1h"}, "completion_window"),
        ({"input_file_id": "file-nope"}, "input_file_id"),
        ({"input_file_id": tuning}, "input_file_id"),
        ({"metadata": {f"k{i}": "v" for i in range(17)}}, "metadata"),
        ({"output_expires_after": {"anchor": "created_at", "seconds": 60}}, "output_expires_after.seconds"),
    ]
    for change, param in cases:
        args: Any = {"input_file_id": fid, "endpoint": "/v1/embeddings", "completion_window": "24h", **change}
        with pytest.raises(openai.BadRequestError) as bad:
            ec.batches.create(**args)
        assert bad.value.status_code == 400 and bad.value.param == param, (change, bad.value)
    with pytest.raises(openai.NotFoundError):
        ec.batches.retrieve("batch_nope")


def test_list_paginates_newest_first_and_cancel_of_a_finished_batch_is_refused(ec: openai.OpenAI) -> None:
    fid = upload(ec, [line("a", "/v1/embeddings", {"model": "text-embedding-3-small", "input": "x"})])
    ids = [ec.batches.create(input_file_id=fid, endpoint="/v1/embeddings", completion_window="24h").id
           for _ in range(3)]
    page = ec.batches.list(limit=2)
    assert [b.id for b in page.data] == ids[::-1][:2] and page.has_more
    assert [b.id for b in ec.batches.list()] == ids[::-1]  # the SDK's auto-pagination
    done = wait(ec, ids[0])
    assert done.status == "completed"
    with pytest.raises(openai.BadRequestError):
        ec.batches.cancel(done.id)


def test_output_expiry(ec: openai.OpenAI) -> None:
    batch = run(ec, "/v1/embeddings", [line("a", "/v1/embeddings", {"model": "text-embedding-3-small", "input": "x"})],
                output_expires_after={"anchor": "created_at", "seconds": 7200})
    f = ec.files.retrieve(batch.output_file_id)  # type: ignore[arg-type]
    assert f.expires_at == f.created_at + 7200


@pytest.fixture
def chat_batch_server(settings_factory: Any, tiny_llm: Path) -> Iterator[ServerHandle]:
    settings = quick(llm_settings(settings_factory, tiny_llm))
    settings.batches.chat_chunk_lines = 3
    with start_server(settings) as server:
        yield server


def test_chat_and_completions_batches_answer_as_the_routes(chat_batch_server: ServerHandle) -> None:
    client = make_client(chat_batch_server.base_url, strict=False)
    bodies = [{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": f"ping {'x ' * i}"}],
               "temperature": 0, "max_tokens": 6 + i} for i in range(5)]
    bodies.append({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "two"}], "temperature": 0,
                   "max_tokens": 5, "n": 2})
    lines = [line(f"c{i}", "/v1/chat/completions", b) for i, b in enumerate(bodies)]
    lines.append(line("streamed", "/v1/chat/completions", {**bodies[0], "stream": True}))
    lines.append(line("long", "/v1/chat/completions", {**bodies[0], "max_tokens": 10**6}))
    batch = run(client, "/v1/chat/completions", lines)
    assert batch.status == "completed", batch.errors
    out = {o["custom_id"]: o["response"]["body"] for o in jsonl(client, batch.output_file_id)}
    for i, body in enumerate(bodies):
        live = client.chat.completions.create(**body)
        got = out[f"c{i}"]
        assert got["object"] == "chat.completion" and got["model"] == "gpt-4o-mini"
        assert [c["message"]["content"] for c in got["choices"]] == [c.message.content for c in live.choices]
        assert [c["finish_reason"] for c in got["choices"]] == [c.finish_reason for c in live.choices]
        assert live.usage is not None
        assert (got["usage"]["prompt_tokens"], got["usage"]["completion_tokens"]) == (
            live.usage.prompt_tokens, live.usage.completion_tokens)
    errors = {e["custom_id"]: e["response"] for e in jsonl(client, batch.error_file_id)}
    assert errors["streamed"]["status_code"] == 400 and errors["streamed"]["body"]["error"]["param"] == "stream"
    assert errors["long"]["status_code"] == 400
    assert batch.usage is not None and batch.usage.output_tokens == sum(
        o["usage"]["completion_tokens"] for o in out.values())

    prompts = ["ping", ["a b", "c d e"]]
    cmp_lines = [line(f"p{i}", "/v1/completions", {"model": "davinci-002", "prompt": p, "temperature": 0,
                                                      "max_tokens": 5, "echo": i == 1}) for i, p in enumerate(prompts)]
    done = run(client, "/v1/completions", cmp_lines)
    assert done.status == "completed" and done.error_file_id is None
    for o in jsonl(client, done.output_file_id):
        asked = next(x["body"] for x in cmp_lines if x["custom_id"] == o["custom_id"])
        live = client.completions.create(**asked)
        assert [c["text"] for c in o["response"]["body"]["choices"]] == [c.text for c in live.choices]


def test_cancel_keeps_what_finished(chat_batch_server: ServerHandle) -> None:
    client = make_client(chat_batch_server.base_url, strict=False)
    lines = [line(f"c{i}", "/v1/chat/completions", {"model": "gpt-4o-mini", "temperature": 0, "max_tokens": 64,
                                                     "messages": [{"role": "user", "content": f"go {i}"}]})
             for i in range(60)]
    batch = client.batches.create(input_file_id=upload(client, lines), endpoint="/v1/chat/completions",
                                  completion_window="24h")
    deadline = time.monotonic() + 60
    while (b := client.batches.retrieve(batch.id)).request_counts.completed < 3:  # type: ignore[union-attr]
        assert time.monotonic() < deadline and b.status not in TERMINAL
        time.sleep(0.05)
    cancelling = client.batches.cancel(batch.id)
    assert cancelling.status == "cancelling" and cancelling.cancelling_at
    assert client.batches.cancel(batch.id).status == "cancelling"  # again: as it is
    done = wait(client, batch.id)
    assert done.status == "cancelled" and done.cancelled_at
    finished = jsonl(client, done.output_file_id)
    assert 3 <= len(finished) < 60 and len(finished) == done.request_counts.completed  # type: ignore[union-attr]
    assert [o["custom_id"] for o in finished] == [f"c{i}" for i in range(len(finished))]


def test_images_batch(settings_factory: Any, tiny_sd: Path) -> None:  # noqa: F811
    with start_server(quick(sd_settings(settings_factory, tiny_sd))) as server:
        client = make_client(server.base_url)
        bodies = [{"prompt": "a red circle", "size": "256x256", "response_format": "b64_json", "seed": 3},
                  {"prompt": "a blue square", "size": "256x256", "seed": 4},  # dall-e-2's default: a URL
                  {"prompt": "too big", "size": "4096x4096"}]
        batch = run(client, "/v1/images/generations", [line(f"i{i}", "/v1/images/generations", b)
                                                        for i, b in enumerate(bodies)])
        assert batch.status == "completed" and batch.model == "dall-e-2"
        out = {o["custom_id"]: o["response"]["body"] for o in jsonl(client, batch.output_file_id)}
        seed = bodies[0].pop("seed")  # the route, same seed: the same pixels
        live = client.images.generate(**bodies[0], extra_body={"seed": seed})
        assert np.array_equal(np.asarray(decode(out["i0"]["data"][0]["b64_json"])),
                              np.asarray(decode(live.data[0].b64_json)))
        url = out["i1"]["data"][0]["url"]
        assert url.startswith(server.base_url.removesuffix("/v1"))
        fetched = httpx2.get(url)
        assert fetched.status_code == 200 and fetched.headers["content-type"] == "image/png"
        [error] = jsonl(client, batch.error_file_id)
        assert error["custom_id"] == "i2" and error["response"]["status_code"] == 400
        assert error["response"]["body"]["error"]["param"] == "size"
