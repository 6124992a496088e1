"""Fixtures shared by the fine-tuning and chat tests: a tiny chat model, servers that serve it, datasets."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import openai
import pytest

from inhouse.config import ModelEntry, Settings
from tests.conftest import make_client
from tests.engines.tiny_llm import build_tiny_llm
from tests.harness import ServerHandle, start_server

TERMINAL = ("succeeded", "failed", "cancelled")


@pytest.fixture(scope="session")
def tiny_llm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_llm(tmp_path_factory.mktemp("llm") / "tiny-llm")


def llm_entry(path: Path) -> ModelEntry:
    return ModelEntry(id="tiny-llm", kind="chat", path=str(path), aliases=["gpt-4o-mini", "davinci-002"])


def llm_settings(settings_factory: Any, path: Path, **fine_tuning: Any) -> Settings:
    settings: Settings = settings_factory(models=[llm_entry(path)])
    ft = settings.fine_tuning
    ft.heartbeat_seconds, ft.poll_seconds, ft.lease_seconds = 0.2, 0.1, 5
    for k, v in fine_tuning.items():
        setattr(ft, k, v)
    return settings


@pytest.fixture
def llm_server(settings_factory: Any, tiny_llm: Path) -> Iterator[ServerHandle]:
    with start_server(llm_settings(settings_factory, tiny_llm)) as server:
        yield server


@pytest.fixture
def llm(llm_server: ServerHandle) -> openai.OpenAI:
    # Lenient: the SDK's strict types have no `paused` status; every answer is still checked against the spec.
    return make_client(llm_server.base_url, strict=False)


def chat_line(user: str, answer: str, **extra: Any) -> str:
    return json.dumps({"messages": [{"role": "user", "content": user},
                                    {"role": "assistant", "content": answer, **extra}]})


def pong_file(client: openai.OpenAI, n: int = 12) -> str:
    lines = [chat_line("ping", "pong pong pong") for _ in range(n)]
    return client.files.create(file=("pong.jsonl", "\n".join(lines).encode()), purpose="fine-tune").id


def wait_for(client: openai.OpenAI, job_id: str, statuses: tuple[str, ...] = TERMINAL, timeout: float = 120) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.fine_tuning.jobs.retrieve(job_id)
        if job.status in statuses:
            return job
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} still {job.status}")


def all_events(client: openai.OpenAI, job_id: str) -> list[Any]:
    """Oldest first."""
    return list(reversed(list(client.fine_tuning.jobs.list_events(job_id, limit=100))))


def supervised(**hp: Any) -> dict[str, Any]:
    return {"type": "supervised", "supervised": {"hyperparameters": hp}}


def no_end(engine: Any) -> dict[str, int]:
    """A logit_bias that bans the chat engine's end tokens: a generation then runs to its max_tokens."""
    return {str(t): -100 for t in engine.eos() | {engine.tok.eos_token_id}}


def greedy(client: openai.OpenAI, model: str, text: str = "ping") -> str:
    r = client.chat.completions.create(model=model, messages=[{"role": "user", "content": text}], temperature=0,
                                       max_tokens=8)
    return r.choices[0].message.content or ""


def scrambled(model: Any) -> Any:
    """The saved tiny model's small random weights answer newlines to every prompt, which would pass any batching
    bug; larger ones make each prompt's continuation its own, and sensitive to any mask or cache mistake."""
    import torch

    torch.manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() > 1:
                p.normal_(0, 0.3)
    return model


@cache
def tokenizer(path: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path)


def chat_tokens(path: Path, messages: list[dict[str, Any]], generation_prompt: bool = False) -> int:
    """Tokens of messages rendered with the model's chat template, counted as the server counts them."""
    tok = tokenizer(path)
    text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)
    return len(tok(text, add_special_tokens=False)["input_ids"])


def text_tokens(path: Path, text: str) -> int:
    """Tokens of a plain prompt, counted as the server counts them."""
    return len(tokenizer(path)(text, add_special_tokens=False)["input_ids"])
