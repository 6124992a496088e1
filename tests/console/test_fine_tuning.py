"""Fine-tuning in the console: create a job from an uploaded file with the form, watch its loss curve gain points
while it trains (polled, no reload), pause and resume it with the buttons, see checkpoints and events, then chat
with the fine-tuned model, streamed."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from tests.api.test_embedding_fine_tuning import HELD_OUT_TEMPLATES, TRAIN_TEMPLATES, catalogue, pairs, upload
from tests.conftest import make_client
from tests.console.conftest import create_key, open_console, shoot
from tests.harness import ServerHandle
from tests.llm import all_events, pong_file, wait_for

expect = pytest.importorskip("playwright.sync_api", reason="needs Playwright: pip install playwright").expect

N_EXAMPLES, EPOCHS, BATCH = 20, 6, 2
STEPS = N_EXAMPLES * EPOCHS // BATCH


def test_create_a_job_and_watch_it_train(page: Any, console_server: ServerHandle) -> None:
    key = create_key(console_server)
    client = make_client(console_server.base_url, api_key=key, strict=False)
    training = pong_file(client, N_EXAMPLES)
    open_console(page, console_server, key, "/fine-tuning")
    page.get_by_text("No fine-tuning jobs yet").wait_for()
    page.get_by_role("link", name="New job").click()

    form = page.get_by_role("form", name="New fine-tuning job")
    form.get_by_label("Base model").select_option("gpt-4o-mini")
    form.get_by_label("Training file").select_option(training)
    form.get_by_label("Suffix").fill("console")
    form.get_by_label("Epochs").fill(str(EPOCHS))
    form.get_by_label("Batch size").fill(str(BATCH))
    form.get_by_label("Learning rate multiplier").fill("4")
    shoot(page, "fine-tuning-new")
    form.get_by_role("button", name="Create job").click()

    page.get_by_role("heading", name="Fine-tuning job ftjob-").wait_for()
    job_id = page.url.rsplit("/", 1)[-1]
    job = client.fine_tuning.jobs.retrieve(job_id)
    assert job.model == "gpt-4o-mini" and job.training_file == training
    assert job.hyperparameters.n_epochs == EPOCHS and job.hyperparameters.batch_size == BATCH
    page.evaluate("window.sameDocument = true")  # gone if anything reloads the page

    # A few steps in, pause from the console: the curve holds what was trained so far.
    wait_for_metrics(client, job_id, 5)
    page.get_by_role("button", name="Pause").click()
    expect(page.locator("#job-status")).to_have_text("paused")
    trained = len([e for e in all_events(client, job_id) if e.type == "metrics"])
    assert 5 <= trained < STEPS
    expect(page.locator("#metric-charts g.series[data-name='Training loss']")).to_have_attribute(
        "data-points", str(trained))
    shoot(page, "fine-tuning-job-paused")

    # Resume: the same curve grows to every step, without a reload.
    page.get_by_role("button", name="Resume").click()
    expect(page.locator("#job-status")).to_have_text("succeeded", timeout=120_000)
    expect(page.locator("#metric-charts g.series[data-name='Training loss']")).to_have_attribute(
        "data-points", str(STEPS))
    assert page.evaluate("window.sameDocument") is True
    done = client.fine_tuning.jobs.retrieve(job_id)
    assert done.status == "succeeded" and done.fine_tuned_model
    facts = page.locator("dl.facts").inner_text()
    assert done.fine_tuned_model in facts
    # Token accuracy is drawn too, and every checkpoint with its metrics.
    assert page.locator("#metric-charts figure", has_text="Token accuracy").locator("g.series").count() >= 1
    checkpoints = client.fine_tuning.jobs.checkpoints.list(job_id).data
    table = page.locator("section", has=page.get_by_role("heading", name="Checkpoints")).locator("tbody tr")
    expect(table).to_have_count(len(checkpoints))
    assert checkpoints[0].fine_tuned_model_checkpoint in table.first.inner_text()
    events = page.locator("#events-table tbody tr")
    expect(events.first).to_contain_text("The job has successfully completed")
    assert "Fine-tuning job paused" in page.locator("#events-table").inner_text()
    assert page.get_by_role("button", name="Pause").count() == 0
    assert page.get_by_role("button", name="Cancel job").count() == 0
    with page.expect_download() as saved:
        page.get_by_role("button", name=f"Download {done.result_files[0]}").click()
    assert saved.value.suggested_filename == "step_metrics.csv"
    assert Path(saved.value.path()).read_text().startswith("step,train_loss,")
    shoot(page, "fine-tuning-job")
    shoot(page, "fine-tuning-job-narrow", narrow=True)

    page.get_by_role("link", name="All jobs").click()
    row = page.locator("tr", has_text=job_id)
    expect(row).to_contain_text("succeeded")
    expect(row).to_contain_text(done.fine_tuned_model)
    shoot(page, "fine-tuning-jobs")

    # Chat with the new model, streamed into the page.
    page.go_back()
    page.get_by_role("link", name="Try it").click()
    page.get_by_role("heading", name="Chat").wait_for()
    assert page.get_by_label("Model").input_value() == done.fine_tuned_model
    page.get_by_label("Temperature").fill("0")
    page.get_by_label("Max tokens").fill("8")
    page.get_by_label("Message", exact=True).fill("ping")
    page.keyboard.press("Enter")
    reply = page.locator("#transcript li.assistant[data-done='true'] .text")
    reply.wait_for()
    expected = client.chat.completions.create(model=done.fine_tuned_model, temperature=0, max_tokens=8,
                                              messages=[{"role": "user", "content": "ping"}])
    assert reply.inner_text() == expected.choices[0].message.content
    shoot(page, "chat")


def wait_for_metrics(client: Any, job_id: str, n: int) -> int:
    """Until the job has logged `n` steps; the number logged by then."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        count = len([e for e in client.fine_tuning.jobs.list_events(job_id, limit=100) if e.type == "metrics"])
        if count >= n:
            return count
        time.sleep(0.05)
    raise AssertionError(f"{job_id} logged fewer than {n} steps")


def test_cancel_a_queued_job(page: Any, console_server: ServerHandle) -> None:
    client = make_client(console_server.base_url, strict=False)
    job = client.fine_tuning.jobs.create(model="gpt-4o-mini", training_file=pong_file(client), seed=1)
    client.fine_tuning.jobs.pause(job.id)
    open_console(page, console_server, route=f"/fine-tuning/{job.id}")
    page.get_by_role("button", name="Cancel job").click()  # confirm() is accepted by the fixture
    expect(page.locator("#job-status")).to_have_text("cancelled")
    assert wait_for(client, job.id).status == "cancelled"
    expect(page.get_by_role("button", name="Resume")).to_have_count(0)


def test_an_embedding_job_draws_its_retrieval_metrics(page: Any, console_server: ServerHandle) -> None:
    client = make_client(console_server.base_url, strict=False)
    items = catalogue(8)
    train = upload(client, pairs(items, TRAIN_TEMPLATES), "pairs.jsonl")
    valid = upload(client, pairs(items, HELD_OUT_TEMPLATES), "held-out.jsonl")
    open_console(page, console_server, route="/fine-tuning/new")
    form = page.get_by_role("form", name="New fine-tuning job")
    form.get_by_label("Base model").select_option("text-embedding-3-small")
    form.get_by_label("Training file").select_option(train)
    form.get_by_label("Validation file").select_option(valid)
    form.get_by_label("Epochs").fill("2")
    form.get_by_role("button", name="Create job").click()
    expect(page.locator("#job-status")).to_have_text("succeeded", timeout=120_000)
    job_id = page.url.rsplit("/", 1)[-1]
    steps = [e.data for e in all_events(client, job_id) if e.type == "metrics"]
    charts = page.locator("#metric-charts")
    expect(charts.locator("g.series[data-name='Training loss']")).to_have_attribute("data-points", str(len(steps)))
    validated = sum("valid_loss" in s for s in steps)
    assert validated >= 1
    expect(charts.locator("g.series[data-name='Validation loss']")).to_have_attribute("data-points", str(validated))
    retrieval = charts.locator("figure", has_text="Accuracy and MRR")
    names = retrieval.locator("g.series").evaluate_all("gs => gs.map(g => g.dataset.name)")
    assert names == ["Training accuracy", "Validation accuracy@1", "Validation MRR@10"]
