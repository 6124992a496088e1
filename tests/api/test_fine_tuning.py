"""Fine-tuning through the SDK on a tiny chat model built in the test: the whole lifecycle, validation,
cancel, pause/resume, seeds, DPO, and chatting with the result."""

from __future__ import annotations

import csv
import io
import json
import threading
import time
from pathlib import Path
from typing import Any

import httpx2
import openai
import pytest

from inhouse.engines.causal.data import calls_as_text, chat_text
from inhouse.engines.training import Stopped
from tests.conftest import make_client
from tests.harness import ServerHandle, start_server
from tests.llm import (
    all_events,
    chat_line,
    chat_tokens,
    greedy,
    llm_settings,
    pong_file,
    supervised,
    tokenizer,
    wait_for,
)

PING_PONG = [{"role": "user", "content": "ping"}, {"role": "assistant", "content": "pong pong pong"}]


def test_lifecycle(llm_server: ServerHandle, llm: openai.OpenAI, tiny_llm: Path) -> None:
    training = pong_file(llm)
    validation = llm.files.create(file=("v.jsonl", "\n".join(chat_line("ping", "pong pong pong")
                                                                for _ in range(3)).encode()), purpose="fine-tune").id
    base_answer = greedy(llm, "gpt-4o-mini")
    job = llm.fine_tuning.jobs.create(model="gpt-4o-mini", training_file=training, validation_file=validation,
                                      suffix="pong", seed=7, metadata={"team": "qa"},
                                      method=supervised(n_epochs=3, batch_size=2, learning_rate_multiplier=20))
    assert job.status == "validating_files" and job.object == "fine_tuning.job"
    assert job.error is None and job.fine_tuned_model is None and job.finished_at is None
    assert job.hyperparameters.n_epochs == 3 and job.seed == 7 and job.metadata == {"team": "qa"}
    done = wait_for(llm, job.id)
    assert done.status == "succeeded", done.error
    name = done.fine_tuned_model
    assert name == f"ft:gpt-4o-mini:default:pong:{job.id[-8:]}"
    assert done.trained_tokens == 12 * 3 * chat_tokens(tiny_llm, PING_PONG)  # examples x epochs x tokens
    assert done.finished_at and done.estimated_finish is None
    assert (done.hyperparameters.batch_size, done.hyperparameters.learning_rate_multiplier) == (2, 20)

    messages = [e.message for e in all_events(llm, job.id)]
    assert messages[:4] == [f"Created fine-tuning job: {job.id}",
                            f"Validating training file: {training} and validation file: {validation}",
                            "Files validated, moving job to queued state", "Fine-tuning job started"]
    assert messages[-2:] == [f"New fine-tuned model created: {name}", "The job has successfully completed"]
    metrics = [e for e in all_events(llm, job.id) if e.type == "metrics"]
    assert [e.data["step"] for e in metrics] == list(range(1, 19))
    assert "validation loss" in metrics[5].message and "valid_loss" in metrics[5].data
    assert sum(m.startswith("Checkpoint created at step") for m in messages) == 3

    ckpts = list(llm.fine_tuning.jobs.checkpoints.list(job.id))
    assert [c.step_number for c in ckpts] == [18, 12, 6]  # newest first; one per epoch, the last 3 kept
    assert ckpts[0].fine_tuned_model_checkpoint == name
    assert ckpts[1].fine_tuned_model_checkpoint.endswith(":ckpt-step-12")
    assert ckpts[1].metrics.train_loss is not None and ckpts[1].fine_tuning_job_id == job.id

    result = llm.files.retrieve(done.result_files[0])
    assert result.purpose == "fine-tune-results"
    rows = list(csv.reader(io.StringIO(llm.files.content(result.id).read().decode())))
    assert rows[0] == ["step", "train_loss", "train_accuracy", "valid_loss", "valid_mean_token_accuracy"]
    assert len(rows) == 19 and rows[6][3] != "" and rows[1][3] == ""

    assert name in [m.id for m in llm.models.list()]
    assert greedy(llm, name).startswith("pong")  # it learned the distinctive answer
    assert not base_answer.startswith("pong")
    assert greedy(llm, ckpts[1].fine_tuned_model_checkpoint).startswith("pong")  # checkpoints serve too
    listed = llm.fine_tuning.jobs.list(metadata={"team": "qa"})
    assert [j.id for j in listed.data] == [job.id]
    assert llm.fine_tuning.jobs.list(metadata={"team": "other"}).data == []
    assert llm.models.delete(name).deleted
    with pytest.raises(openai.NotFoundError):
        greedy(llm, name)


def test_list_filters_on_metadata_and_on_none(settings_factory: Any, tiny_llm: Path) -> None:
    settings = llm_settings(settings_factory, tiny_llm)
    settings.run_worker = False  # listing only: nothing needs to train
    with start_server(settings) as server:
        client = make_client(server.base_url, strict=False)
        f = pong_file(client)
        tagged = client.fine_tuning.jobs.create(model="gpt-4o-mini", training_file=f, metadata={"team": "qa"})
        plain = client.fine_tuning.jobs.create(model="gpt-4o-mini", training_file=f)
        other = client.fine_tuning.jobs.create(model="gpt-4o-mini", training_file=f, metadata={"team": "ops"})
        assert [j.id for j in client.fine_tuning.jobs.list()] == [other.id, plain.id, tagged.id]
        assert [j.id for j in client.fine_tuning.jobs.list(metadata={"team": "qa"})] == [tagged.id]
        # metadata=null: the jobs that have no metadata.
        assert [j.id for j in client.fine_tuning.jobs.list(extra_query={"metadata": "null"})] == [plain.id]
        raw = httpx2.get(f"{server.base_url}/fine_tuning/jobs?metadata=null")
        assert [j["id"] for j in raw.json()["data"]] == [plain.id]


def test_tool_calls_and_unweighted_turns_train(llm: openai.OpenAI, tiny_llm: Path) -> None:
    call = {"id": "call_1", "type": "function", "function": {"name": "weather", "arguments": "{}"}}
    tools = [{"type": "function", "function": {"name": "weather", "parameters": {"type": "object"}}}]
    messages = [{"role": "user", "content": "ping"}, {"role": "assistant", "tool_calls": [call]},
                {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
                {"role": "assistant", "content": "no", "weight": 0}, {"role": "user", "content": "ping"},
                {"role": "assistant", "content": "pong", "weight": 1}]
    line = json.dumps({"messages": messages, "tools": tools})
    f = llm.files.create(file=("tools.jsonl", "\n".join([line] * 10).encode()), purpose="fine-tune").id
    job = llm.fine_tuning.jobs.create(model="gpt-4o-mini", training_file=f, seed=1,
                                      method=supervised(n_epochs=1, batch_size=5))
    done = wait_for(llm, job.id)
    assert done.status == "succeeded", done.error
    assert [e.data["step"] for e in all_events(llm, job.id) if e.type == "metrics"] == [1, 2]
    # Every example's every token is input, weighted turns or not; a call turn renders as its call's text.
    rendered = [{"role": m["role"], "content": calls_as_text(m)} | ({"tool_call_id": m["tool_call_id"]}
                if "tool_call_id" in m else {}) for m in messages]
    assert rendered[1]["content"] == '<tool_call>{"name": "weather", "arguments": "{}"}</tool_call>'
    # The tiny template ignores tools: they are rendered into the system turn, as serving renders them.
    tok = tokenizer(tiny_llm)
    with_tools = chat_text(tok, rendered, tools, False)
    assert "weather" in with_tools.split("<|im_start|>user")[0]
    assert done.trained_tokens == 10 * len(tok(with_tools, add_special_tokens=False)["input_ids"])


def test_continue_from_fine_tuned_model(llm: openai.OpenAI) -> None:
    f = pong_file(llm)
    first = wait_for(llm, llm.fine_tuning.jobs.create(model="gpt-4o-mini", training_file=f, seed=1,
                                                       method=supervised(n_epochs=1)).id)
    second = llm.fine_tuning.jobs.create(model=first.fine_tuned_model, training_file=f, seed=1,
                                         method=supervised(n_epochs=1))
    done = wait_for(llm, second.id)
    assert done.status == "succeeded", done.error
    assert done.fine_tuned_model.startswith("ft:gpt-4o-mini:default::")


def _bad_file(client: openai.OpenAI, lines: list[str]) -> str:
    return client.files.create(file=("bad.jsonl", "\n".join(lines).encode()), purpose="fine-tune").id


@pytest.mark.parametrize(
    ("lines", "code", "needle"),
    [
        ([chat_line("a", "b")] * 3, "invalid_n_examples", "has 3 example(s), but must have at least 10"),
        ([chat_line("a", "b")] * 11 + [json.dumps({"messages": [{"role": "wizard", "content": "x"}]})],
         "invalid_training_file", "Example 12, message 1"),
        ([chat_line("a", "b")] * 4 + [json.dumps({"messages": [{"content": "x"}]})] + [chat_line("a", "b")] * 6,
         "invalid_training_file", "Example 5, message 1 Discriminator 'role' is missing"),
        ([chat_line("a", "b")] * 10 + [json.dumps({"messages": [{"role": "user", "content": "only"}]})],
         "invalid_training_file", "Example 11 has no assistant message"),
        ([chat_line("a", "b", weight=2)] * 10, "invalid_training_file", "weight"),
        ([json.dumps({"prompt": "p", "completion": "c"})] * 5 + [chat_line("a", "b")] * 5,
         "invalid_training_file", "Example 6 is in the chat format"),
        ([chat_line("a", "b")] * 9 + [json.dumps({"messages": [
            {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,AA"}}]},
            {"role": "assistant", "content": "b"}]})], "invalid_training_file", "Example 10, message 1 contains"),
    ],
    ids=["too-few", "bad-role", "no-role", "no-assistant", "bad-weight", "mixed-formats", "image"],
)
def test_file_problems_fail_the_job(llm: openai.OpenAI, lines: list[str], code: str, needle: str) -> None:
    job = llm.fine_tuning.jobs.create(model="gpt-4o-mini", training_file=_bad_file(llm, lines))
    done = wait_for(llm, job.id)
    assert done.status == "failed" and done.error is not None
    assert done.error.code == code and done.error.param == "training_file"
    assert needle in done.error.message
    events = all_events(llm, job.id)
    assert events[-1].level == "error" and needle in events[-1].message


def test_request_problems_are_400(llm_server: ServerHandle, llm: openai.OpenAI) -> None:
    good = pong_file(llm)
    other = llm.files.create(file=("a.txt", b"x"), purpose="assistants").id
    cases: list[tuple[dict[str, Any], str]] = [
        ({"model": "gpt-nope"}, "model"),
        ({"training_file": "file-missing"}, "training_file"),
        ({"training_file": other}, "training_file"),
        ({"validation_file": good}, "validation_file"),
        ({"suffix": "x" * 65}, "suffix"),
        ({"seed": -1}, "seed"),
        ({"seed": 2**31}, "seed"),
        ({"method": supervised(n_epochs=0)}, "method.supervised.hyperparameters.n_epochs"),
        ({"method": supervised(batch_size=257)}, "method.supervised.hyperparameters.batch_size"),
        ({"method": supervised(learning_rate_multiplier=0)},
         "method.supervised.hyperparameters.learning_rate_multiplier"),
        ({"method": {"type": "dpo", "dpo": {"hyperparameters": {"beta": 3}}}}, "method.dpo.hyperparameters.beta"),
        ({"method": {"type": "reinforcement"}}, "method.type"),
        ({"hyperparameters": {"n_epochs": 51}}, "hyperparameters.n_epochs"),
    ]
    for override, param in cases:
        body = {"model": "gpt-4o-mini", "training_file": good, **override}
        with pytest.raises(openai.BadRequestError) as exc:
            llm.fine_tuning.jobs.create(**body)
        assert exc.value.param == param, (override, exc.value.param)
    assert llm.fine_tuning.jobs.list().data == []
    with pytest.raises(openai.NotFoundError):
        llm.fine_tuning.jobs.retrieve("ftjob-nope")


def test_deprecated_hyperparameters_and_method_wins(llm: openai.OpenAI) -> None:
    f = pong_file(llm)
    legacy = llm.fine_tuning.jobs.create(model="gpt-4o-mini", training_file=f, hyperparameters={"n_epochs": 1})
    both = llm.fine_tuning.jobs.create(model="gpt-4o-mini", training_file=f, hyperparameters={"n_epochs": 4},
                                       method=supervised(n_epochs=1))
    assert wait_for(llm, legacy.id).hyperparameters.n_epochs == 1
    assert wait_for(llm, both.id).hyperparameters.n_epochs == 1
    auto = wait_for(llm, llm.fine_tuning.jobs.create(model="gpt-4o-mini", training_file=f).id)
    assert auto.hyperparameters.n_epochs == 8  # OpenAI's heuristic: 100 // 12 examples


def test_cancel_before_running(settings_factory: Any, tiny_llm: Path) -> None:
    settings = llm_settings(settings_factory, tiny_llm)
    settings.run_worker = False  # nothing claims the job: it stays in validating_files
    with start_server(settings) as server:
        client = make_client(server.base_url, strict=False)
        job = client.fine_tuning.jobs.create(model="gpt-4o-mini", training_file=pong_file(client))
        cancelled = client.fine_tuning.jobs.cancel(job.id)
        assert cancelled.status == "cancelled" and cancelled.finished_at is not None
        with pytest.raises(openai.BadRequestError):
            client.fine_tuning.jobs.cancel(job.id)
        assert [e.message for e in all_events(client, job.id)][-1] == "Fine-tuning job cancelled"
        assert sum(e.message == "Fine-tuning job cancelled" for e in all_events(client, job.id)) == 1


def test_cancel_from_paused_and_queued(settings_factory: Any, tiny_llm: Path) -> None:
    settings = llm_settings(settings_factory, tiny_llm)
    settings.run_worker = False
    with start_server(settings) as server:
        client = make_client(server.base_url, strict=False)
        f = pong_file(client)
        a = client.fine_tuning.jobs.create(model="gpt-4o-mini", training_file=f)
        assert client.fine_tuning.jobs.pause(a.id).status == "paused"
        assert client.fine_tuning.jobs.cancel(a.id).status == "cancelled"
        b = client.fine_tuning.jobs.create(model="gpt-4o-mini", training_file=f)
        client.fine_tuning.jobs.pause(b.id)
        assert client.fine_tuning.jobs.resume(b.id).status == "queued"
        with pytest.raises(openai.BadRequestError):
            client.fine_tuning.jobs.resume(b.id)
        assert client.fine_tuning.jobs.cancel(b.id).status == "cancelled"
        assert [e.message for e in all_events(client, b.id)][-3:] == [
            "Fine-tuning job paused", "Fine-tuning job resumed", "Fine-tuning job cancelled"]


def _long_job(client: openai.OpenAI, seed: int = 3) -> Any:
    return client.fine_tuning.jobs.create(model="gpt-4o-mini", training_file=pong_file(client, 20), seed=seed,
                                          method=supervised(n_epochs=40, batch_size=1))


def _wait_event(client: openai.OpenAI, job_id: str, predicate: Any, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(predicate(e) for e in client.fine_tuning.jobs.list_events(job_id, limit=100)):
            return
        time.sleep(0.05)
    raise AssertionError("event never came")


def test_cancel_while_running_stops_everything(llm: openai.OpenAI) -> None:
    job = _long_job(llm)
    _wait_event(llm, job.id, lambda e: e.type == "metrics")
    assert llm.fine_tuning.jobs.cancel(job.id).status == "cancelled"
    events = all_events(llm, job.id)
    time.sleep(1.5)
    assert all_events(llm, job.id) == events  # nothing written after the cancel event
    assert events[-1].message == "Fine-tuning job cancelled"
    assert llm.fine_tuning.jobs.retrieve(job.id).status == "cancelled"
    with pytest.raises(openai.BadRequestError):
        llm.fine_tuning.jobs.pause(job.id)


class _HeldStep:
    """A trainer whose one step never ends by itself: it only watches should_stop, writing nothing (no step, no
    checkpoint), so the heartbeat is the one way a cancel or pause can reach it, as during a long real step."""

    def __init__(self) -> None:
        self.started, self.stopped = threading.Event(), threading.Event()

    def train(self, run: Any, hooks: Any, resume: Any) -> tuple[bytes, int]:
        self.started.set()
        deadline = time.monotonic() + 60
        while not hooks.should_stop():
            if time.monotonic() > deadline:
                raise RuntimeError("no stop came")
            time.sleep(0.01)
        self.stopped.set()
        raise Stopped()


@pytest.mark.parametrize("action", ["cancel", "pause"])
def test_cancel_and_pause_reach_a_step_in_progress_within_a_heartbeat(settings_factory: Any, tiny_llm: Path,
                                                                      action: str) -> None:
    settings = llm_settings(settings_factory, tiny_llm, heartbeat_seconds=1.0)  # the default
    with start_server(settings) as server:
        held = _HeldStep()
        server.services.jobs.trainer = held
        client = make_client(server.base_url, strict=False)
        job = client.fine_tuning.jobs.create(model="gpt-4o-mini", training_file=pong_file(client))
        assert held.started.wait(60)
        asked = time.monotonic()
        assert getattr(client.fine_tuning.jobs, action)(job.id).status == {"cancel": "cancelled",
                                                                          "pause": "paused"}[action]
        assert held.stopped.wait(10), "the step never saw the stop"
        # Within about a second: the next heartbeat reads the row (a generous bound, for a loaded box).
        assert time.monotonic() - asked < 3 * settings.fine_tuning.heartbeat_seconds


def test_pause_and_resume(llm: openai.OpenAI) -> None:
    job = llm.fine_tuning.jobs.create(model="gpt-4o-mini", training_file=pong_file(llm, 20), seed=5,
                                      method=supervised(n_epochs=6, batch_size=2))
    _wait_event(llm, job.id, lambda e: e.message.startswith("Checkpoint created at step 10"))
    paused = llm.fine_tuning.jobs.pause(job.id)
    assert paused.status == "paused"
    time.sleep(1.0)
    frozen = all_events(llm, job.id)
    time.sleep(1.0)
    assert all_events(llm, job.id) == frozen
    with pytest.raises(openai.BadRequestError):
        llm.fine_tuning.jobs.pause(job.id)
    assert llm.fine_tuning.jobs.resume(job.id).status == "queued"
    done = wait_for(llm, job.id)
    assert done.status == "succeeded", done.error
    steps = [e.data["step"] for e in all_events(llm, job.id) if e.type == "metrics"]
    assert steps == list(range(1, 61))  # no step lost, none logged twice
    assert any(e.message.startswith("Fine-tuning job resumed from the checkpoint") for e in all_events(llm, job.id))


def test_seed_makes_runs_reproducible(llm: openai.OpenAI) -> None:
    f = pong_file(llm)

    def losses(seed: int) -> list[float]:
        job = llm.fine_tuning.jobs.create(model="gpt-4o-mini", training_file=f, seed=seed,
                                          method=supervised(n_epochs=2, batch_size=4))
        assert wait_for(llm, job.id).status == "succeeded"
        return [e.data["train_loss"] for e in all_events(llm, job.id) if e.type == "metrics"]

    a, b, c = losses(11), losses(11), losses(12)
    assert a == b
    assert a != c


def test_dpo(llm: openai.OpenAI) -> None:
    line = json.dumps({"input": {"messages": [{"role": "user", "content": "ping"}]},
                       "preferred_output": [{"role": "assistant", "content": "pong"}],
                       "non_preferred_output": [{"role": "assistant", "content": "no"}]})
    alias = json.dumps({"input": {"messages": [{"role": "user", "content": "ping"}]},
                        "preferred_completion": [{"role": "assistant", "content": "pong"}],
                        "non_preferred_completion": [{"role": "assistant", "content": "no"}]})
    f = llm.files.create(file=("dpo.jsonl", "\n".join([line] * 8 + [alias] * 4).encode()), purpose="fine-tune").id
    job = llm.fine_tuning.jobs.create(model="gpt-4o-mini", training_file=f, seed=3,
                                      method={"type": "dpo", "dpo": {"hyperparameters": {"beta": 0.2, "n_epochs": 2}}})
    done = wait_for(llm, job.id)
    assert done.status == "succeeded", done.error
    assert done.method.type == "dpo" and done.method.dpo.hyperparameters.beta == 0.2
    metrics = [e for e in all_events(llm, job.id) if e.type == "metrics"]
    assert len(metrics) == 24 and all("train_loss" in e.data for e in metrics)
    # A chat-format file is not preference data.
    wrong = llm.fine_tuning.jobs.create(model="gpt-4o-mini", training_file=pong_file(llm),
                                        method={"type": "dpo"})
    failed = wait_for(llm, wrong.id)
    assert failed.status == "failed" and failed.error.code == "invalid_training_file"


def test_list_pagination(llm_server: ServerHandle) -> None:
    client = make_client(llm_server.base_url, strict=False)
    f = pong_file(client)
    ids = [client.fine_tuning.jobs.create(model="gpt-4o-mini", training_file=f,
                                          method=supervised(n_epochs=1)).id for _ in range(3)]
    page = client.fine_tuning.jobs.list(limit=2)
    assert [j.id for j in page.data] == ids[::-1][:2] and page.has_more
    assert [j.id for j in client.fine_tuning.jobs.list(limit=2)] == ids[::-1]
    events = client.fine_tuning.jobs.list_events(ids[0], limit=1)
    assert len(events.data) == 1 and events.has_more


def test_full_fine_tuning_extension(llm_server: ServerHandle, llm: openai.OpenAI) -> None:
    f = pong_file(llm)
    job = llm.fine_tuning.jobs.create(model="gpt-4o-mini", training_file=f, seed=2,
                                      method=supervised(n_epochs=3, batch_size=2, learning_rate_multiplier=200),
                                      extra_body={"inhouse": {"full_fine_tuning": True}})
    done = wait_for(llm, job.id)
    assert done.status == "succeeded", done.error
    assert greedy(llm, done.fine_tuned_model).strip().startswith("pong")  # served from its own full weights
    ckpt = list(llm.fine_tuning.jobs.checkpoints.list(job.id))[1].fine_tuned_model_checkpoint
    assert greedy(llm, ckpt).strip().startswith("pong")  # step 12 of 18: learned already
    assert llm_server.services.chat.full_engines.loaded()  # a model of its own, not an adapter
    # DPO with every weight trained: the reference is a frozen copy of the base.
    line = json.dumps({"input": {"messages": [{"role": "user", "content": "ping"}]},
                       "preferred_output": [{"role": "assistant", "content": "pong"}],
                       "non_preferred_output": [{"role": "assistant", "content": "no"}]})
    dpo_file = llm.files.create(file=("d.jsonl", "\n".join([line] * 10).encode()), purpose="fine-tune").id
    dpo = llm.fine_tuning.jobs.create(model=done.fine_tuned_model, training_file=dpo_file,
                                      method={"type": "dpo", "dpo": {"hyperparameters": {"n_epochs": 1}}},
                                      extra_body={"inhouse": {"full_fine_tuning": True}})
    assert wait_for(llm, dpo.id).status == "succeeded"
    with pytest.raises(openai.BadRequestError):
        llm.fine_tuning.jobs.create(model="gpt-4o-mini", training_file=f,
                                    extra_body={"inhouse": {"full_fine_tuning": "yes"}})
