"""Usage through the SDK's admin usage API: real embeddings, chat, completions, images and a fine-tune move it,
grouped by key and model, scoped to the caller's project, bucketed and paged as OpenAI does."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import openai
import pytest

from inhouse.services.keys import CreatedKey
from tests.api.test_embeddings import tiny_encoder, tiny_settings  # noqa: F401 - the tiny encoder fixture
from tests.api.test_images import png, sd_settings, tiny_sd  # noqa: F401 - tiny_sd is a fixture
from tests.conftest import make_client
from tests.harness import ServerHandle, start_server
from tests.llm import llm_settings, pong_file, supervised, wait_for

MODEL = "text-embedding-3-small"


@pytest.fixture
def emb_server(settings_factory: Any, tiny_encoder: Path) -> Iterator[ServerHandle]:  # noqa: F811
    with start_server(tiny_settings(settings_factory, tiny_encoder)) as server:
        yield server


def new_key(server: ServerHandle, project: str, **kw: Any) -> CreatedKey:
    created: CreatedKey = server.call(server.services.keys.create(project, **kw))
    server.services.keys._required_cache = None  # the first key closes open mode now, not within 5 s
    return created


def admin_api(server: ServerHandle, key: CreatedKey) -> Any:
    """The SDK's admin usage resource, authenticated with `key` (the SDK sends it as its admin key)."""
    return make_client(server.base_url, api_key="unused", admin_api_key=key.token).admin.organization.usage


def results(page: Any) -> list[dict[str, Any]]:
    return [r.model_dump() for bucket in page.data for r in bucket.results]


def by(rows: list[dict[str, Any]], *fields: str, counts: tuple[str, ...] = ("input_tokens", "num_model_requests")
       ) -> dict[tuple[Any, ...], tuple[int, ...]]:
    return {tuple(r[f] for f in fields): tuple(r[c] for c in counts) for r in rows}


def embed(client: openai.OpenAI, text: Any, model: str = MODEL) -> int:
    """The tokens one real embeddings request used, as its answer says."""
    return client.embeddings.create(model=model, input=text, encoding_format="float").usage.prompt_tokens


def test_embeddings_usage_by_key_and_model(emb_server: ServerHandle) -> None:
    start = int(time.time()) - 60
    a1, a2, b = new_key(emb_server, "team-a"), new_key(emb_server, "team-a"), new_key(emb_server, "team-b")
    admin = new_key(emb_server, "ops", admin=True)
    project_a, project_b = a1.project.id, b.project.id
    c1, c2, cb = (make_client(emb_server.base_url, api_key=k.token) for k in (a1, a2, b))
    t1 = [embed(c1, ["alpha beta", "gamma"]), embed(c1, "red circle on the square")]
    t1_tiny = embed(c1, "omega", "tiny-encoder")
    t2 = embed(c2, [1, 2, 3, 4])
    tb = embed(cb, "delta")
    with pytest.raises(openai.NotFoundError):
        embed(c1, "x", "no-such-model")  # a failed request is not usage

    page = admin_api(emb_server, a1).embeddings(start_time=start, group_by=["api_key_id", "model"])
    assert page.object == "page" and not page.has_more and page.next_page is None
    [bucket] = page.data  # one day, the default width
    assert bucket.start_time == start and bucket.end_time == start + 86400
    rows = results(page)
    assert {r["object"] for r in rows} == {"organization.usage.embeddings.result"}
    assert {r["project_id"] for r in rows} == {project_a}  # a key sees its own project, named in every result
    assert by(rows, "api_key_id", "model") == {
        (a1.key.id, MODEL): (sum(t1), 2), (a1.key.id, "tiny-encoder"): (t1_tiny, 1), (a2.key.id, MODEL): (t2, 1)}

    whole = results(admin_api(emb_server, a2).embeddings(start_time=start))
    assert by(whole, "project_id", "api_key_id", "model") == {(project_a, None, None): (sum(t1) + t1_tiny + t2, 4)}
    only = results(admin_api(emb_server, a1).embeddings(start_time=start, api_key_ids=[a2.key.id], models=[MODEL]))
    assert by(only, "api_key_id") == {(None,): (t2, 1)}
    with pytest.raises(openai.PermissionDeniedError):
        admin_api(emb_server, a1).embeddings(start_time=start, project_ids=[project_b])

    # An admin key reads every project's usage, or the ones it names.
    everyone = results(admin_api(emb_server, admin).embeddings(start_time=start, group_by=["project_id"]))
    assert by(everyone, "project_id") == {(project_a,): (sum(t1) + t1_tiny + t2, 4), (project_b,): (tb, 1)}
    named = results(admin_api(emb_server, admin).embeddings(start_time=start, project_ids=[project_b]))
    assert by(named, "project_id") == {(project_b,): (tb, 1)}
    # Other kinds of usage did not move.
    assert results(admin_api(emb_server, admin).completions(start_time=start)) == []


def test_buckets_pages_and_bad_parameters(emb_server: ServerHandle) -> None:
    key = new_key(emb_server, "team-a")
    client = make_client(emb_server.base_url, api_key=key.token)
    tokens = embed(client, "alpha")
    now = int(time.time())
    start = now - now % 60 - 240  # five whole minutes, the last one now
    usage = admin_api(emb_server, key)
    seen, pages, page = [], 0, None
    while True:
        answer = usage.embeddings(start_time=start, end_time=start + 300, bucket_width="1m", limit=2,
                                  **({"page": page} if page else {}))
        seen += [(b.start_time, b.end_time, [r.input_tokens for r in b.results]) for b in answer.data]
        pages += 1
        if not answer.has_more:
            assert answer.next_page is None
            break
        page = answer.next_page
    assert pages == 3
    assert [s[:2] for s in seen] == [(start + 60 * i, start + 60 * (i + 1)) for i in range(5)]
    assert [s[2] for s in seen] == [[], [], [], [], [tokens]]  # every bucket in range, empty ones too

    url = f"{emb_server.base_url}/organization/usage/embeddings"
    headers = {"authorization": f"Bearer {key.token}"}
    for params, param in [({}, "start_time"), ({"start_time": "soon"}, "start_time"),
                          ({"start_time": start, "bucket_width": "1w"}, "bucket_width"),
                          ({"start_time": start, "bucket_width": "1m", "limit": 1441}, "limit"),
                          ({"start_time": start, "group_by": "user_id"}, "group_by"),
                          ({"start_time": start, "user_ids": "u"}, "user_ids"),
                          ({"start_time": start, "page": "page_12"}, "page"),
                          ({"start_time": start, "end_time": start}, "start_time"),
                          ({"start_time": 10**18}, "start_time"),
                          ({"start_time": start, "colour": "red"}, "colour")]:
        r = httpx2.get(url, params=params, headers=headers)
        assert r.status_code == 400 and r.json()["error"]["param"] == param, (params, r.text)


def test_chat_and_completions_usage(settings_factory: Any, tiny_llm: Path) -> None:
    start = int(time.time()) - 60
    with start_server(llm_settings(settings_factory, tiny_llm)) as server:
        key = new_key(server, "team")
        client = make_client(server.base_url, api_key=key.token)
        messages: Any = [{"role": "user", "content": "hello"}]
        plain = client.chat.completions.create(model="gpt-4o-mini", messages=messages, max_tokens=4).usage
        chunks = list(client.chat.completions.create(model="gpt-4o-mini", messages=messages, max_tokens=3,
                                                     stream=True, stream_options={"include_usage": True}))
        streamed = chunks[-1].usage
        legacy = client.completions.create(model="davinci-002", prompt=["one", "two"], max_tokens=2, n=2).usage
        assert plain is not None and streamed is not None and legacy is not None
        page = admin_api(server, key).completions(start_time=start, group_by=["model"], bucket_width="1h")
        rows = results(page)
        assert {r["object"] for r in rows} == {"organization.usage.completions.result"}
        assert by(rows, "model", counts=("input_tokens", "output_tokens", "num_model_requests")) == {
            ("gpt-4o-mini",): (plain.prompt_tokens + streamed.prompt_tokens,
                               plain.completion_tokens + streamed.completion_tokens, 2),
            ("davinci-002",): (legacy.prompt_tokens, legacy.completion_tokens, 1)}
        assert {r["project_id"] for r in rows} == {key.project.id}
        assert results(admin_api(server, key).completions(start_time=start, batch=True)) == []  # none is a batch


def test_images_usage(settings_factory: Any, tiny_sd: Path) -> None:  # noqa: F811
    start = int(time.time()) - 60
    with start_server(sd_settings(settings_factory, tiny_sd)) as server:
        key = new_key(server, "team")
        client = make_client(server.base_url, api_key=key.token)
        client.images.generate(prompt="a red circle", size="256x256", n=2, response_format="b64_json")
        client.images.create_variation(image=("v.png", png(mode="RGB")), n=1, size="256x256",
                                       response_format="b64_json")
        usage = admin_api(server, key)
        rows = results(usage.images(start_time=start, group_by=["source", "model"]))
        assert {r["object"] for r in rows} == {"organization.usage.images.result"}
        assert by(rows, "source", "model", counts=("images", "num_model_requests")) == {
            ("image.generation", "dall-e-2"): (2, 1), ("image.variation", "dall-e-2"): (1, 1)}
        only = results(usage.images(start_time=start, sources=["image.variation"]))
        assert by(only, "source", counts=("images", "num_model_requests")) == {(None,): (1, 1)}


def test_fine_tune_trained_tokens(settings_factory: Any, tiny_llm: Path) -> None:
    start = int(time.time()) - 60
    with start_server(llm_settings(settings_factory, tiny_llm)) as server:
        key = new_key(server, "team")
        client = make_client(server.base_url, api_key=key.token, strict=False)  # the SDK has no `paused` status
        job = client.fine_tuning.jobs.create(model="gpt-4o-mini", training_file=pong_file(client),
                                             method=supervised(n_epochs=1, batch_size=4))
        done = wait_for(client, job.id)
        assert done.status == "succeeded" and done.trained_tokens
        r = httpx2.get(f"{server.base_url}/organization/usage/fine_tuning",
                       params=[("start_time", start), ("group_by[]", "api_key_id"), ("group_by[]", "model")],
                       headers={"authorization": f"Bearer {key.token}"})
        assert r.status_code == 200, r.text
        [bucket] = r.json()["data"]
        assert bucket["results"] == [{"object": "organization.usage.fine_tuning.result",
                                      "trained_tokens": done.trained_tokens, "num_jobs": 1,
                                      "project_id": key.project.id, "api_key_id": key.key.id,
                                      "model": "gpt-4o-mini"}]
        # Counted once, however often it is read.
        again = httpx2.get(f"{server.base_url}/organization/usage/fine_tuning", params={"start_time": start},
                           headers={"authorization": f"Bearer {key.token}"}).json()
        assert again["data"][0]["results"][0]["trained_tokens"] == done.trained_tokens


def test_batch_lines_are_usage_of_the_batch_key(settings_factory: Any, tiny_llm: Path) -> None:
    """A batch's answered lines count for the key that created it, flagged batch=true; its refused lines do not."""
    from tests.api.test_batches import jsonl, line, quick, run

    start = int(time.time()) - 60
    with start_server(quick(llm_settings(settings_factory, tiny_llm))) as server:
        key = new_key(server, "team")
        client = make_client(server.base_url, api_key=key.token, strict=False)
        live = client.chat.completions.create(model="gpt-4o-mini", max_tokens=3,
                                              messages=[{"role": "user", "content": "live"}]).usage
        bodies: list[Any] = [{"model": "gpt-4o-mini", "max_tokens": 4, "messages": [{"role": "user", "content": c}]}
                             for c in ("one", "two")]
        bodies.append({**bodies[0], "temperature": 9})  # refused: 400
        batch = run(client, "/v1/chat/completions", [line(f"c{i}", "/v1/chat/completions", b)
                                                     for i, b in enumerate(bodies)])
        assert batch.status == "completed" and batch.request_counts.failed == 1
        out = [o["response"]["body"]["usage"] for o in jsonl(client, batch.output_file_id)]
        page = admin_api(server, key).completions(start_time=start, group_by=["batch", "api_key_id"],
                                                  bucket_width="1h")
        assert live is not None
        assert by(results(page), "batch", "api_key_id", counts=("input_tokens", "output_tokens",
                                                                "num_model_requests")) == {
            (False, key.key.id): (live.prompt_tokens, live.completion_tokens, 1),
            (True, key.key.id): (sum(u["prompt_tokens"] for u in out), sum(u["completion_tokens"] for u in out), 2)}
        only = results(admin_api(server, key).completions(start_time=start, batch=True))
        assert [r["num_model_requests"] for r in only] == [2]
