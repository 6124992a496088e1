"""GET /metrics: scraped over HTTP and parsed as Prometheus text; counters move with real requests, labels stay
bounded (route templates, never raw paths), and the endpoint is keyed like the API unless metrics.public."""

from __future__ import annotations

import socket
import time
from pathlib import Path
from typing import Any

import httpx2
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from inhouse.engines.embeddings.engine import EmbeddingEngine
from tests.api.test_embeddings import tiny_encoder, tiny_settings  # noqa: F401 - the tiny encoder fixture
from tests.conftest import make_client
from tests.harness import ServerHandle, start_server
from tests.llm import pong_file, supervised, wait_for

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(server: ServerHandle, key: str | None = None) -> Samples:
    headers = {"authorization": f"Bearer {key}"} if key else {}
    r = httpx2.get(f"{server.origin}/metrics", headers=headers)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain")
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(r.text) for s in family.samples}


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def moved(before: Samples, after: Samples, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


def test_a_file_upload_moves_blob_bytes_and_its_route(server: ServerHandle, client: openai.OpenAI) -> None:
    payload = b"metrics are counted in bytes\n" * 100
    before = scrape(server)
    f = client.files.create(file=("m.txt", payload), purpose="assistants")
    assert client.files.content(f.id).read() == payload
    after = scrape(server)
    assert moved(before, after, "inhouse_blob_written_bytes_total") == len(payload)
    assert moved(before, after, "inhouse_blob_read_bytes_total") == len(payload)
    route = {"route": "/v1/files", "method": "POST", "status": "200"}
    assert moved(before, after, "inhouse_http_requests_total", **route) == 1
    assert moved(before, after, "inhouse_http_request_duration_seconds_count", **route) == 1
    assert moved(before, after, "inhouse_http_requests_total", route="/v1/files/{file_id}/content", method="GET",
                 status="200") == 1
    assert value(after, "inhouse_http_requests_in_flight") == 1  # the scrape itself
    assert value(after, "process_resident_memory_bytes") > 0


def test_raw_paths_never_become_labels(server: ServerHandle) -> None:
    before = scrape(server)
    for method, path in [("GET", "/v1/files/file-rawid12345"), ("DELETE", "/v1/files/file-rawid12345"),
                         ("GET", "/v1/fine_tuning/jobs/ftjob-rawid67890/events"), ("GET", "/no/such/rawid-42"),
                         ("PROPFIND", "/v1/files"), ("GET", "/v1/files/")]:
        httpx2.request(method, server.origin + path)
    text = httpx2.get(f"{server.origin}/metrics").text
    assert "rawid" not in text and "PROPFIND" not in text
    after = scrape(server)
    requests = "inhouse_http_requests_total"
    assert moved(before, after, requests, route="/v1/files/{file_id}", method="GET", status="404") == 1
    assert moved(before, after, requests, route="/v1/files/{file_id}", method="DELETE", status="404") == 1
    assert moved(before, after, requests, route="/v1/fine_tuning/jobs/{job_id}/events", method="GET",
                 status="404") == 1
    assert moved(before, after, requests, route="other", method="GET", status="404") == 1
    assert moved(before, after, requests, route="/v1/files", method="other", status="405") == 1
    assert moved(before, after, requests, route="other", method="GET", status="307") == 1  # the slash redirect
    routes = {dict(labels)["route"] for (name, labels), v in after.items()
              if name == requests and v != before.get((name, labels), 0)}
    assert routes == {"/v1/files/{file_id}", "/v1/fine_tuning/jobs/{job_id}/events", "/v1/files", "other",
                      "/metrics"}


def test_embeddings_move_the_batch_histograms(settings_factory: Any, tiny_encoder: Path) -> None:  # noqa: F811
    with start_server(tiny_settings(settings_factory, tiny_encoder)) as server:
        client = make_client(server.base_url)
        start = scrape(server)
        client.embeddings.create(model="tiny-encoder", input="warm up", encoding_format="float")
        before = scrape(server)
        assert moved(start, before, "inhouse_model_load_seconds_count", kind="embedding") == 1
        assert value(before, "inhouse_models_loaded", kind="embedding") == 1
        texts = ["a", "a red circle", "a crimson disc beside a blue square"]
        client.embeddings.create(model="tiny-encoder", input=texts, encoding_format="float")
        after = scrape(server)
        # One request's windows reach the model thread together: one forward of all three, padded to the longest.
        engine: EmbeddingEngine = server.services.embedding_engines.engines()[0]
        tokens = engine.tokenize(texts)
        assert all(len(ids) <= engine.window_tokens for ids in tokens)  # one window each
        lengths = [len(engine.encoder.window(ids)) for ids in tokens]
        assert len(set(lengths)) == 3  # so padding is there to measure
        model = {"model": "tiny-encoder"}
        assert moved(before, after, "inhouse_embedding_batch_inputs_count", **model) == 1
        assert moved(before, after, "inhouse_embedding_batch_inputs_sum", **model) == 3
        assert moved(before, after, "inhouse_embedding_padding_efficiency_count", **model) == 1
        assert moved(before, after, "inhouse_embedding_padding_efficiency_sum", **model) == pytest.approx(
            sum(lengths) / (3 * max(lengths)))
        assert value(after, "inhouse_embedding_queued_inputs", **model) == 0  # answered, so released
        assert moved(before, after, "inhouse_http_requests_total", route="/v1/embeddings", method="POST",
                     status="200") == 1


def test_refusals_are_counted_by_kind(settings_factory: Any) -> None:
    settings = settings_factory()
    settings.fine_tuning.max_queued_generations = 0
    settings.images.max_queued = 0
    settings.http.max_requests = 1
    with start_server(settings) as server:
        client = make_client(server.base_url)
        before = scrape(server)
        with pytest.raises(openai.RateLimitError):
            client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
        with pytest.raises(openai.RateLimitError):
            client.images.generate(prompt="a red circle")
        # A body that never finishes holds the only request slot; the next request gets 503.
        stalled = socket.create_connection(("127.0.0.1", server.settings.port), timeout=10)
        stalled.sendall(b"POST /v1/embeddings HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                        b"Content-Length: 100\r\n\r\n{\"model\": ")
        busy = 0
        deadline = time.monotonic() + 20
        while not busy and time.monotonic() < deadline:
            busy += httpx2.get(f"{server.origin}/healthz").status_code == 503
        stalled.close()
        assert busy == 1
        while time.monotonic() < deadline:  # the slot frees once the server sees the client gone
            r = httpx2.get(f"{server.origin}/metrics")
            if r.status_code == 200:
                break
            busy += r.status_code == 503
        after = scrape(server)
        assert moved(before, after, "inhouse_admissions_refused_total", kind="chat") == 1
        assert moved(before, after, "inhouse_admissions_refused_total", kind="images") == 1
        assert moved(before, after, "inhouse_admissions_refused_total", kind="http") == busy
        assert moved(before, after, "inhouse_http_requests_total", route="/v1/chat/completions", method="POST",
                     status="429") == 1
        assert moved(before, after, "inhouse_http_requests_total", route="/healthz", method="GET", status="503") == 1
        assert value(after, "inhouse_generation_requests_admitted") == 0
        assert value(after, "inhouse_image_requests_admitted") == 0


def test_metrics_need_a_key_once_keys_exist(server: ServerHandle) -> None:
    scrape(server)  # open mode: no key yet, loopback only
    key = server.call(server.services.keys.create("ops")).token
    server.services.keys._required_cache = None
    r = httpx2.get(f"{server.origin}/metrics")
    assert r.status_code == 401 and r.json()["error"]["code"] == "missing_api_key"
    scrape(server, key)


def test_metrics_public_answers_without_a_key(settings_factory: Any) -> None:
    settings = settings_factory()
    settings.metrics.public = True
    with start_server(settings) as server:
        server.call(server.services.keys.create("ops"))
        server.services.keys._required_cache = None
        scrape(server)
        assert httpx2.get(f"{server.base_url}/files").status_code == 401  # only /metrics is opened
        assert httpx2.post(f"{server.origin}/metrics").status_code == 401


def test_training_and_generation_tokens(llm_server: ServerHandle, llm: openai.OpenAI) -> None:
    before = scrape(llm_server)
    job = llm.fine_tuning.jobs.create(model="tiny-llm", training_file=pong_file(llm),
                                      method=supervised(n_epochs=1, batch_size=4))
    job = wait_for(llm, job.id)
    assert job.status == "succeeded" and job.trained_tokens
    trained = scrape(llm_server)
    assert moved(before, trained, "inhouse_training_tokens_total", model="tiny-llm") == job.trained_tokens
    assert moved(before, trained, "inhouse_training_seconds_total", model="tiny-llm") > 0
    assert moved(before, trained, "inhouse_fine_tuning_job_transitions_total", state="running") == 1
    assert moved(before, trained, "inhouse_fine_tuning_job_transitions_total", state="succeeded") == 1
    assert moved(before, trained, "inhouse_fine_tuning_jobs_running") == 0  # back down once the job ended

    base = llm.chat.completions.create(model="tiny-llm", messages=[{"role": "user", "content": "ping"}],
                                       max_tokens=5, temperature=0)
    assert base.usage is not None
    chunks = list(llm.chat.completions.create(model=job.fine_tuned_model or "", stream=True, max_tokens=5,
                                              messages=[{"role": "user", "content": "ping"}],
                                              stream_options={"include_usage": True}))
    tuned = chunks[-1].usage
    assert tuned is not None
    after = scrape(llm_server)
    for label, usage in (("tiny-llm", base.usage), ("fine-tuned", tuned)):
        assert moved(trained, after, "inhouse_generation_tokens_total", model=label) == usage.completion_tokens
        assert moved(trained, after, "inhouse_generation_prompt_tokens_total", model=label) == usage.prompt_tokens
        assert moved(trained, after, "inhouse_generation_seconds_total", model=label) > 0
    assert value(after, "inhouse_generation_requests_admitted") == 0
    assert value(after, "inhouse_models_loaded", kind="chat") == 1
    assert moved(before, after, "inhouse_model_load_seconds_count", kind="chat") == 1
