"""Reliability 10/11/15: big inputs cost bounded memory and never stall the event loop, and every structure a
request stores or echoes is capped.

The server runs in a thread of this process, so memory is the process's peak RSS (VmHWM, reset through
/proc/self/clear_refs after a warm-up), and a stalled event loop shows as a slow GET /healthz."""

from __future__ import annotations

import asyncio
import gc
import json
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx2
import openai
import pytest

from inhouse.engines.causal.generation import CausalEngine
from inhouse.errors import InvalidRequest
from inhouse.services.checks import JsonlCheck
from inhouse.services.fine_tuning_data import DataInvalid, parse_dataset
from tests.harness import ServerHandle
from tests.llm import pong_file, wait_for

MB = 1024 * 1024
# A realistic training line (~200 bytes): many of them make a big file of many small JSON objects.
LINE = json.dumps({"messages": [{"role": "system", "content": "You answer in one word."},
                                {"role": "user", "content": "What colour is the sky on a clear day? " * 2},
                                {"role": "assistant", "content": "Blue."}]}).encode() + b"\n"
BAD_LAST = b'{"messages": [{"role": "wizard", "content": "x"}, {"role": "assistant", "content": "y"}]}\n'


# -- helpers ------------------------------------------------------------------------------------------------
def _status(field: str) -> int:
    with open("/proc/self/status") as fh:
        for row in fh:
            if row.startswith(field + ":"):
                return int(row.split()[1]) * 1024
    raise AssertionError(f"no {field} in /proc/self/status")


def reset_peak() -> int:
    """Reset the process's peak RSS to its current RSS (Linux >= 4.0) and return that baseline."""
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")
    return _status("VmRSS")


def peak_growth(baseline: int) -> float:
    return (_status("VmHWM") - baseline) / MB


def big_jsonl(path: Path, size: int, last: bytes = b"") -> Path:
    """About `size` bytes of training lines, written in 1 MiB blocks (never whole in memory)."""
    block = LINE * (MB // len(LINE))
    with path.open("wb") as fh:
        for _ in range(size // len(block)):
            fh.write(block)
        fh.write(last)
    return path


def huge_line(n_messages: int = 330_000) -> bytes:
    """One ~15 MB chat example made of many small objects: the JSON parse of it takes a long time."""
    messages = [{"role": "user" if i % 2 == 0 else "assistant", "content": f"word {i}"} for i in range(n_messages)]
    return json.dumps({"messages": messages}).encode() + b"\n"


class HealthProbe:
    """Polls GET /healthz from a thread; `worst` is the slowest answer while it ran."""

    def __init__(self, server: ServerHandle) -> None:
        self.url = server.origin + "/healthz"
        self.latencies: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with httpx2.Client(timeout=30) as http:
            while not self._stop.is_set():
                t = time.perf_counter()
                assert http.get(self.url).status_code == 200
                self.latencies.append(time.perf_counter() - t)
                time.sleep(0.005)

    def __enter__(self) -> HealthProbe:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def worst(self) -> float:
        return max(self.latencies)


@pytest.fixture
def frozen_heap() -> Iterator[None]:
    """The server shares this process's heap with pytest, torch and the tiny model: a full garbage collection
    of it takes ~0.3 s whatever code runs. Freeze it, as a long-running server would after start-up, so that
    the probe measures the event loop and not the collector."""
    gc.collect()
    gc.freeze()
    yield
    gc.unfreeze()


def bad_request(call: Any, **kwargs: Any) -> openai.BadRequestError:
    with pytest.raises(openai.BadRequestError) as exc:
        call(**kwargs)
    return exc.value


# -- 1. line splitting is linear ------------------------------------------------------------------------------
def test_jsonl_check_is_linear_on_a_long_line_in_small_chunks() -> None:
    line = b'{"a": "' + b"x" * (15 * MB) + b'"}\n'
    check = JsonlCheck(16 * MB)
    t = time.perf_counter()
    for i in range(0, len(line), 512):  # ~30,000 small chunks
        check.feed(line[i : i + 512])
    check.close()
    assert time.perf_counter() - t < 2.0


def test_jsonl_check_rejects_an_over_long_line_as_soon_as_it_is_seen() -> None:
    check = JsonlCheck(1 * MB)
    check.feed(LINE)
    for _ in range(4):
        check.feed(b"x" * (MB // 4))  # exactly at the cap: still fine
    with pytest.raises(InvalidRequest, match="Line 2: is longer than"):
        check.feed(b"x")


def _chunks(data: bytes, size: int) -> AsyncIterator[bytes]:
    async def gen() -> AsyncIterator[bytes]:
        for i in range(0, len(data), size):
            yield data[i : i + size]

    return gen()


def _dataset(data: bytes, chunk: int, **kw: Any) -> Any:
    args: dict[str, Any] = {"param": "training_file", "method": "supervised", "max_line": 16 * MB,
                            "min_examples": 10, **kw}
    return asyncio.run(parse_dataset(_chunks(data, chunk), **args))


def test_dataset_lines_are_linear_on_many_lines_in_a_big_chunk() -> None:
    data = LINE * (4 * MB // len(LINE))  # ~20,000 lines in one 4 MiB chunk
    t = time.perf_counter()
    ds = _dataset(data, 4 * MB)
    assert time.perf_counter() - t < 3.0
    assert len(ds.examples) == data.count(b"\n")


def test_dataset_lines_are_linear_on_a_long_line_in_small_chunks() -> None:
    long_line = json.dumps({"messages": [{"role": "user", "content": "x" * (8 * MB)},
                                         {"role": "assistant", "content": "y"}]}).encode() + b"\n"
    t = time.perf_counter()
    ds = _dataset(long_line + LINE * 10, 1024)
    assert time.perf_counter() - t < 3.0
    assert len(ds.examples) == 11


def test_dataset_names_an_over_long_example() -> None:
    with pytest.raises(DataInvalid, match="Example 2 is longer than"):
        _dataset(LINE + b"x" * (2 * MB) + b"\n" + LINE * 10, 64 * 1024, max_line=MB)


# -- 2. memory does not grow with the file -------------------------------------------------------------------
def test_upload_of_a_large_jsonl_file_holds_little_memory(server: ServerHandle, client: openai.OpenAI,
                                                          tmp_path: Path) -> None:
    path = big_jsonl(tmp_path / "big.jsonl", 64 * MB)
    client.files.create(file=("warm.jsonl", LINE * 20), purpose="fine-tune")  # warm up every code path
    baseline = reset_peak()
    with path.open("rb") as fh:  # streamed from disk by the SDK
        f = client.files.create(file=fh, purpose="fine-tune")
    growth = peak_growth(baseline)
    assert f.bytes == path.stat().st_size and f.status == "processed"
    assert growth < 64, f"peak RSS grew by {growth:.0f} MiB validating a {f.bytes / MB:.0f} MiB file"


def test_job_validation_of_a_large_file_holds_little_memory(llm_server: ServerHandle, llm: openai.OpenAI,
                                                            tmp_path: Path) -> None:
    path = big_jsonl(tmp_path / "big.jsonl", 32 * MB, last=BAD_LAST)  # fails at its very end: no training
    warm = wait_for(llm, llm.fine_tuning.jobs.create(
        model="gpt-4o-mini", training_file=llm.files.create(file=("w.jsonl", LINE * 20 + BAD_LAST),
                                                            purpose="fine-tune").id).id)
    assert warm.status == "failed"
    with path.open("rb") as fh:
        f = llm.files.create(file=fh, purpose="fine-tune")
    baseline = reset_peak()
    job = wait_for(llm, llm.fine_tuning.jobs.create(model="gpt-4o-mini", training_file=f.id).id)
    growth = peak_growth(baseline)
    assert job.status == "failed" and job.error is not None
    n = path.read_bytes().count(b"\n")
    assert f"Example {n}" in job.error.message and "unrecognized role" in job.error.message
    assert growth < 64, f"peak RSS grew by {growth:.0f} MiB validating a {f.bytes / MB:.0f} MiB training file"


# -- 3. JSON parsing never stalls the event loop -------------------------------------------------------------
def test_a_15mb_line_does_not_stall_healthz(llm_server: ServerHandle, llm: openai.OpenAI, tmp_path: Path,
                                            request: pytest.FixtureRequest) -> None:
    path = tmp_path / "huge.jsonl"
    path.write_bytes(huge_line() + LINE * 5 + BAD_LAST)
    assert path.stat().st_size > 14 * MB
    llm.files.create(file=("warm.jsonl", LINE * 20), purpose="fine-tune")
    request.getfixturevalue("frozen_heap")  # after the setup's own garbage
    with HealthProbe(llm_server) as upload_probe, path.open("rb") as fh:
        f = llm.files.create(file=fh, purpose="fine-tune")
    with HealthProbe(llm_server) as job_probe:
        job = wait_for(llm, llm.fine_tuning.jobs.create(model="gpt-4o-mini", training_file=f.id).id)
    assert job.status == "failed" and "Example 7" in (job.error.message if job.error else "")
    assert len(upload_probe.latencies) > 3 and len(job_probe.latencies) > 3
    worst = {"upload": round(upload_probe.worst, 3), "job validation": round(job_probe.worst, 3)}
    assert max(worst.values()) < 0.25, f"slowest GET /healthz (s): {worst}"


# -- 4. caps on what a fine-tuning job stores and echoes -----------------------------------------------------
WANDB = {"type": "wandb", "wandb": {"project": "p"}}


CAPS: list[tuple[dict[str, Any], str]] = [
    # No integration runs here: any is refused, and an oversized one is not echoed back.
    ({"integrations": [WANDB] * 6}, "integrations"),
    ({"integrations": "wandb"}, "integrations"),
    ({"integrations": [{"type": "wandb", "wandb": {"project": "p" * 10_000}}]}, "integrations"),
    ({"integrations": [{**WANDB, "junk": "j" * 100_000}]}, "integrations"),
    ({"metadata": {f"k{i}": "v" for i in range(17)}}, "metadata"),
    ({"metadata": {"k" * 65: "v"}}, "metadata"),
    ({"metadata": {"k": "v" * 513}}, "metadata"),
    ({"metadata": {"k": 1}}, "metadata"),
    ({"metadata": ["k"]}, "metadata"),
    ({"suffix": "s" * 65}, "suffix"),
    ({"suffix": ""}, "suffix"),
]


def test_fine_tuning_job_caps(llm: openai.OpenAI) -> None:
    training = pong_file(llm)
    for override, param in CAPS:
        err = bad_request(llm.fine_tuning.jobs.create, model="gpt-4o-mini", training_file=training, **override)
        assert err.param == param, (override, err.message)
        assert len(err.message) < 500  # the error does not echo the oversized value
    assert llm.fine_tuning.jobs.list().data == []


def test_fine_tuning_job_stores_metadata_and_suffix_within_caps(llm: openai.OpenAI) -> None:
    job = llm.fine_tuning.jobs.create(model="gpt-4o-mini", training_file=pong_file(llm), integrations=[],
                                      metadata={f"k{i}": "v" * 512 for i in range(16)}, suffix="s" * 64)
    assert job.metadata is not None and len(job.metadata) == 16 and not job.integrations
    llm.fine_tuning.jobs.cancel(job.id)


# -- 5. caps on chat prompts, checked before tokenizing, and tokenizing off the event loop --------------------
def _user(text: str) -> list[Any]:
    return [{"role": "user", "content": text}]


def test_chat_rejects_too_many_messages(llm: openai.OpenAI) -> None:
    err = bad_request(llm.chat.completions.create, model="gpt-4o-mini", messages=_user("hi") * 2049, max_tokens=1)
    assert err.param == "messages"
    err = bad_request(llm.completions.create, model="gpt-4o-mini", prompt=["hi"] * 2049, max_tokens=1)
    assert err.param == "prompt"


@pytest.fixture
def tokenized(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """Records, for each prompt the engine tokenizes, whether it ran on the event loop's thread."""
    on_loop: list[bool] = []

    def spy(name: str) -> None:
        real = getattr(CausalEngine, name)

        def wrapped(self: CausalEngine, *args: Any) -> Any:
            try:
                asyncio.get_running_loop()
                on_loop.append(True)
            except RuntimeError:
                on_loop.append(False)
            return real(self, *args)

        monkeypatch.setattr(CausalEngine, name, wrapped)

    spy("chat_prompt")
    spy("text_prompt")
    return on_loop


def test_chat_rejects_a_prompt_over_the_context_before_tokenizing(llm: openai.OpenAI,
                                                                  tokenized: list[bool]) -> None:
    huge = "ping pong " * 1_000_000  # 10 MB: far more than the 512-token context of the tiny model can hold
    for stream in (False, True):
        err = bad_request(llm.chat.completions.create, model="gpt-4o-mini", messages=_user(huge), max_tokens=1,
                          stream=stream)
        assert err.param == "messages" and err.code == "context_length_exceeded", err.message
        err = bad_request(llm.completions.create, model="gpt-4o-mini", prompt=["hi", huge], max_tokens=1,
                          stream=stream)
        assert err.param == "prompt" and err.code == "context_length_exceeded", err.message
    assert tokenized == []  # not even the short "hi": every prompt is checked before any is tokenized


def test_chat_rejects_prompt_tokens_over_the_context(llm: openai.OpenAI, tokenized: list[bool]) -> None:
    text = "ping pong " * 400  # under the character bound, over 512 tokens
    err = bad_request(llm.chat.completions.create, model="gpt-4o-mini", messages=_user(text), max_tokens=1)
    assert err.param == "messages" and err.code == "context_length_exceeded"
    assert "512" in err.message
    err = bad_request(llm.completions.create, model="gpt-4o-mini", prompt=text, max_tokens=1)
    assert err.param == "prompt" and err.code == "context_length_exceeded"
    assert tokenized == [False, False], "tokenizing ran on the event loop"


def test_chat_within_the_context_still_answers_off_the_loop(llm: openai.OpenAI, tokenized: list[bool]) -> None:
    reply = llm.chat.completions.create(model="gpt-4o-mini", messages=_user("ping pong " * 40), max_tokens=4)
    assert reply.usage is not None and 0 < reply.usage.prompt_tokens < 512
    chunks = list(llm.completions.create(model="gpt-4o-mini", prompt="ping", max_tokens=2, stream=True))
    assert chunks
    assert tokenized == [False, False], "tokenizing ran on the event loop"


def test_an_asked_max_tokens_must_fit_beside_the_prompt(llm: openai.OpenAI) -> None:
    text = "ping pong " * 100  # a prompt that fits the tiny model's 512-token context with little room left
    fits = llm.chat.completions.create(model="gpt-4o-mini", messages=_user(text), max_tokens=1)
    assert fits.usage is not None
    room = 512 - fits.usage.prompt_tokens
    assert 0 < room < 512
    err = bad_request(llm.chat.completions.create, model="gpt-4o-mini", messages=_user(text), max_tokens=room + 1)
    assert err.code == "context_length_exceeded" and f"{room + 1} in the completion" in err.message
    assert llm.chat.completions.create(model="gpt-4o-mini", messages=_user(text), max_tokens=room).choices
    err = bad_request(llm.completions.create, model="gpt-4o-mini", prompt=text, max_tokens=511, stream=True)
    assert err.code == "context_length_exceeded"
