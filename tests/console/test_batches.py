"""Batches in the console: create one with the form (its file uploaded there), watch its bar reach `completed`
with its counts, download its output and error files, see a failed batch's per-line errors and the form's errors,
page through the list, and cancel a running batch whose bar moves while the page polls it (and stops polling
once it ends or the page is left)."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from tests.api.test_embeddings import tiny_encoder, tiny_settings  # noqa: F401 - fixture
from tests.conftest import make_client
from tests.console.conftest import create_key, open_console, shoot
from tests.harness import ServerHandle, start_server

expect = pytest.importorskip("playwright.sync_api", reason="needs Playwright: pip install playwright").expect

MODEL = "text-embedding-3-small"
CHUNK_LINES = 2  # small chunks: the counts (and the bar) move many times while a batch runs
LONG_BATCH = 20_000  # embedding lines: runs long enough to watch its bar move, then cancel it


@pytest.fixture
def batch_server(settings_factory: Any, tiny_encoder: Path) -> Iterator[ServerHandle]:  # noqa: F811 - fixture
    settings = tiny_settings(settings_factory, tiny_encoder)
    settings.fine_tuning.poll_seconds, settings.fine_tuning.heartbeat_seconds = 0.05, 0.1  # picked up at once
    settings.batches.embedding_chunk_lines = CHUNK_LINES
    with start_server(settings) as server:
        yield server


def line(custom_id: str, text: Any, url: str = "/v1/embeddings") -> dict[str, Any]:
    return {"custom_id": custom_id, "method": "POST", "url": url, "body": {"model": MODEL, "input": text}}


def jsonl(lines: list[Any]) -> bytes:
    return ("\n".join(x if isinstance(x, str) else json.dumps(x) for x in lines) + "\n").encode()


def upload(client: openai.OpenAI, lines: list[Any], name: str = "batch.jsonl") -> str:
    return client.files.create(file=(name, jsonl(lines)), purpose="batch").id


def batch_polls(requests: list[str], batch_id: str) -> int:
    """How many times the page asked for this batch (GET /batches/{id}, not its list or cancel)."""
    return sum(bool(re.fullmatch(rf"GET /batches/{batch_id}(\?.*)?", r)) for r in requests)


def test_create_a_batch_watch_it_complete_and_download_its_files(page: Any, batch_server: ServerHandle,
                                                                 tmp_path: Path) -> None:
    key = create_key(batch_server)
    client = make_client(batch_server.base_url, api_key=key)
    lines = [line(f"doc-{i}", f"sentence {i} about vector storage") for i in range(10)]
    lines.insert(4, line("empty", ""))  # the route refuses it: a 400 in the error file, the others go on
    lines.insert(8, line("number", 5))
    open_console(page, batch_server, key, "/batches")
    page.get_by_text("No batches yet").wait_for()
    assert page.locator("nav a[aria-current='page']").inner_text() == "Batches"
    requests: list[str] = []
    page.on("request", lambda r: requests.append(f"{r.method} {r.url.split('/v1', 1)[-1]}"))
    page.get_by_role("link", name="New batch").click()

    # The file is uploaded in the form (purpose batch); the endpoint follows its first line's url.
    form = page.get_by_role("form", name="New batch")
    expect(form.get_by_role("button", name="Create batch")).to_be_disabled()  # no batch file yet
    form.get_by_label("Or upload a JSONL file").set_input_files(
        files=[{"name": "requests.jsonl", "mimeType": "application/jsonl", "buffer": jsonl(lines)}])
    expect(form.get_by_text("Set from the file’s first line.")).to_be_visible()
    assert form.get_by_label("Endpoint").input_value() == "/v1/embeddings"
    [uploaded] = client.files.list(purpose="batch").data
    assert uploaded.filename == "requests.jsonl" and client.files.content(uploaded.id).read() == jsonl(lines)
    assert form.get_by_label("Input file").input_value() == uploaded.id
    assert form.get_by_label("Completion window").input_value() == "24h"
    form.get_by_label("Metadata").fill("team=search\nrun = nightly")
    form.get_by_role("button", name="Create batch").click()

    page.get_by_role("heading", name="Batch batch_").wait_for()
    batch_id = page.url.rsplit("/", 1)[-1]
    page.evaluate("window.sameDocument = true")  # gone if anything reloads the page
    expect(page.locator("#batch-status")).to_have_text("completed")
    done = client.batches.retrieve(batch_id)
    assert done.status == "completed" and done.input_file_id == uploaded.id and done.endpoint == "/v1/embeddings"
    assert done.metadata == {"team": "search", "run": "nightly"}
    assert done.request_counts is not None
    assert (done.request_counts.total, done.request_counts.completed, done.request_counts.failed) == (12, 10, 2)
    bar = page.get_by_role("progressbar", name="Requests done")
    expect(bar).to_have_attribute("aria-valuenow", "12")
    expect(bar).to_have_attribute("aria-valuetext", "12 of 12 requests done: 10 completed, 2 failed")
    assert [page.locator(f"#count-{k}").inner_text() for k in ("total", "completed", "failed")] == ["12", "10", "2"]
    assert page.evaluate("window.sameDocument") is True

    steps = page.locator("#batch-timeline li").evaluate_all("ls => ls.map(l => l.dataset.step)")
    assert steps == ["created_at", "in_progress_at", "finalizing_at", "completed_at"]
    assert page.locator("#input-file").inner_text() == f"requests.jsonl {uploaded.id}"
    assert page.locator("#batch-metadata").inner_text().split() == ["team", "search", "run", "nightly"]
    assert done.usage is not None and done.usage.input_tokens > 0
    usage = page.locator("section", has=page.get_by_role("heading", name="Usage")).inner_text()
    assert f"Input tokens\n{done.usage.input_tokens:,}" in usage
    assert page.get_by_role("button", name="Cancel batch").count() == 0
    assert page.locator("#batch-errors").count() == 0  # per-line failures are in the error file, not `errors`

    # The output and error files, downloaded with the key: the same bytes the API gives.
    for button, file_id, ids in (("Download output", done.output_file_id, [x["custom_id"] for x in lines][:4]),
                                 ("Download errors", done.error_file_id, ["empty", "number"])):
        assert file_id is not None
        with page.expect_download() as info:
            page.get_by_role("button", name=button).click()
        assert info.value.suggested_filename == f"{batch_id}_{'output' if 'output' in button else 'error'}.jsonl"
        saved = tmp_path / info.value.suggested_filename
        info.value.save_as(saved)
        assert saved.read_bytes() == client.files.content(file_id).read()
        got = [json.loads(x)["custom_id"] for x in saved.read_text().splitlines()]
        assert got[:len(ids)] == ids
    out = [json.loads(x) for x in (tmp_path / f"{batch_id}_output.jsonl").read_text().splitlines()]
    assert len(out) == 10 and all(o["response"]["status_code"] == 200 for o in out)
    assert len(out[0]["response"]["body"]["data"][0]["embedding"]) > 0

    # A finished batch is not polled any more.
    polls = batch_polls(requests, batch_id)
    page.wait_for_timeout(2500)  # more than two poll intervals
    assert batch_polls(requests, batch_id) == polls
    shoot(page, "batches")

    page.get_by_role("link", name="All batches").click()
    row = page.locator("#batches-table tr", has_text=batch_id)
    expect(row).to_contain_text("completed")
    expect(row).to_contain_text("/v1/embeddings")
    expect(row).to_contain_text("12 of 12")


def test_failed_batch_errors_form_errors_and_paging(page: Any, batch_server: ServerHandle) -> None:
    client = make_client(batch_server.base_url)
    good = line("a", "x")
    bad = upload(client, [good, {"method": "POST", "url": "/v1/embeddings", "body": {"model": MODEL, "input": "y"}},
                          good, line("b", "z", url="/v1/chat/completions"), {**line("c", "w"), "method": "GET"}],
                 "bad.jsonl")
    failed = client.batches.create(input_file_id=bad, endpoint="/v1/embeddings", completion_window="24h")
    open_console(page, batch_server, route=f"/batches/{failed.id}")
    expect(page.locator("#batch-status")).to_have_text("failed")
    rows = page.locator("#batch-errors tbody tr")
    expect(rows).to_have_count(4)
    got = [r.split("\t")[:2] for r in rows.evaluate_all("rs => rs.map(r => r.innerText)")]
    assert got == [["2", "missing_custom_id"], ["3", "duplicate_custom_id"], ["4", "invalid_url"],
                   ["5", "invalid_method"]]
    messages = [e.message for e in client.batches.retrieve(failed.id).errors.data]  # type: ignore[union-attr]
    assert rows.nth(2).locator("td").nth(2).inner_text() == messages[2]
    assert "None: no request was answered" in page.locator("section", has_text="Results").inner_text()
    expect(page.get_by_role("progressbar", name="Requests done")).to_have_attribute("aria-valuetext", "—")

    # The form shows the server's refusal as the other forms do: message and param. Here the file chosen when
    # the form loaded is deleted before it is sent.
    doomed = upload(client, [good], "doomed.jsonl")
    page.goto(f"{batch_server.origin}/console/#/batches/new?input_file_id={doomed}")
    form = page.get_by_role("form", name="New batch")
    expect(form.get_by_label("Input file")).to_have_value(doomed)
    client.files.delete(doomed)
    form.get_by_role("button", name="Create batch").click()
    error = form.get_by_role("alert")
    expect(error).to_have_text(f"Invalid 'input_file_id': '{doomed}'. No such file. (input_file_id)")
    form.get_by_label("Input file").select_option(bad)
    form.get_by_label("Metadata").fill("no equals sign")
    form.get_by_role("button", name="Create batch").click()
    expect(error).to_have_text("Metadata line 1 is not key=value.")
    form.get_by_label("Metadata").fill(f"{'k' * 65}=v")
    form.get_by_role("button", name="Create batch").click()
    expect(error).to_have_text("metadata keys must be at most 64 characters. (metadata)")
    assert len(client.batches.list().data) == 1

    # Newest first, 10 a page, `after` cursors for the next page.
    one = upload(client, [good], "one.jsonl")
    ids = [failed.id] + [client.batches.create(input_file_id=one, endpoint="/v1/embeddings",
                                               completion_window="24h").id for _ in range(11)]
    page.get_by_role("navigation").get_by_role("link", name="Batches").click()
    page.get_by_label("Per page").select_option("10")
    table = page.locator("#batches-table tbody tr")
    expect(table).to_have_count(10)
    assert table.evaluate_all("rs => rs.map(r => r.dataset.id)") == ids[::-1][:10]
    previous, following = page.get_by_role("button", name="Previous page"), page.get_by_role("button", name="Next page")
    assert previous.is_disabled()
    following.click()
    expect(table).to_have_count(2)
    assert table.evaluate_all("rs => rs.map(r => r.dataset.id)") == ids[1::-1]
    expect(following).to_be_disabled()
    expect(table.last).to_contain_text("failed")
    previous.click()
    expect(table).to_have_count(10)
    # The list refreshes itself while a batch on it moves: every one ends completed without a reload.
    for row in table.all():
        expect(row).to_contain_text("completed")
        expect(row).to_contain_text("1 of 1")


def test_cancel_a_running_batch_whose_bar_moves(page: Any, batch_server: ServerHandle) -> None:
    client = make_client(batch_server.base_url)
    fid = upload(client, [line(f"doc-{i}", f"text number {i} " * (1 + i % 7)) for i in range(LONG_BATCH)])
    batch = client.batches.create(input_file_id=fid, endpoint="/v1/embeddings", completion_window="24h")
    requests: list[str] = []
    page.on("request", lambda r: requests.append(f"{r.method} {r.url.split('/v1', 1)[-1]}"))
    open_console(page, batch_server, route=f"/batches/{batch.id}")
    expect(page.locator("#batch-status")).to_have_text("in progress")
    page.evaluate("window.sameDocument = true")
    expect(page.locator("#count-total")).to_have_text(f"{LONG_BATCH:,}")
    # The bar moves with each poll, without a reload.
    bar = page.get_by_role("progressbar", name="Requests done")
    seen = [int(bar.get_attribute("aria-valuenow"))]
    deadline = time.monotonic() + 30
    while len(set(seen)) < 3:
        assert time.monotonic() < deadline, seen
        page.wait_for_timeout(200)
        seen.append(int(bar.get_attribute("aria-valuenow")))
    assert seen == sorted(seen) and seen[-1] < LONG_BATCH, seen
    assert page.evaluate("window.sameDocument") is True
    assert page.get_by_role("progressbar", name="Requests done").locator(".meter-completed").evaluate(
        "s => parseFloat(s.style.width)") > 0

    # Leaving the page stops its polling; the list shows the batch moving.
    page.get_by_role("link", name="All batches").click()
    row = page.locator("#batches-table tr", has_text=batch.id)
    expect(row).to_contain_text("in progress")
    polls = batch_polls(requests, batch.id)
    page.wait_for_timeout(2500)
    assert batch_polls(requests, batch.id) == polls

    page.go_back()
    page.get_by_role("button", name="Cancel batch").click()  # confirm() is accepted by the fixture
    expect(page.locator("#batch-status")).to_have_text("cancelled")
    expect(page.get_by_role("button", name="Cancel batch")).to_have_count(0)
    done = client.batches.retrieve(batch.id)
    assert done.status == "cancelled" and done.request_counts is not None
    finished = done.request_counts.completed
    assert seen[-1] <= finished < LONG_BATCH
    expect(page.locator("#count-completed")).to_have_text(f"{finished:,}")
    steps = page.locator("#batch-timeline li").evaluate_all("ls => ls.map(l => l.dataset.step)")
    assert steps == ["created_at", "in_progress_at", "cancelling_at", "cancelled_at"]
    assert done.output_file_id is not None
    assert len(client.files.content(done.output_file_id).text.splitlines()) == finished
    with page.expect_download() as info:
        page.get_by_role("button", name="Download output").click()
    assert len(Path(info.value.path()).read_text().splitlines()) == finished
