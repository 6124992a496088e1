"""Long and many streams: every stream completes, whatever the others ask and however long it takes."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import openai
import pytest

from tests.api.test_chat import MESSAGES
from tests.conftest import make_client
from tests.harness import ServerHandle, start_server
from tests.llm import llm_settings, no_end, pong_file, supervised, wait_for


def test_eight_concurrent_streams_of_three_models_all_complete(llm: openai.OpenAI, llm_server: ServerHandle) -> None:
    """The base and two fine-tuned models (LoRA adapters), streamed at once, each run to its max_tokens."""
    training = pong_file(llm)
    models = ["tiny-llm"]
    for seed in (1, 2):
        job = llm.fine_tuning.jobs.create(model="tiny-llm", training_file=training, seed=seed,
                                          method=supervised(n_epochs=1, batch_size=4))
        models.append(wait_for(llm, job.id).fine_tuned_model)
    engine_ready = llm.chat.completions.create(model="tiny-llm", messages=MESSAGES, max_tokens=1)
    assert engine_ready.choices
    engine = llm_server.services.chat_engines._engines["tiny-llm"]
    banned = no_end(engine)
    texts: dict[int, str] = {}
    usage: dict[int, int] = {}
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            text = ""
            for chunk in llm.chat.completions.create(
                    model=models[i % 3], messages=MESSAGES, temperature=0, max_tokens=40 + i, stream=True,
                    stream_options={"include_usage": True}, logit_bias=banned):
                if chunk.choices:
                    text += chunk.choices[0].delta.content or ""
                if chunk.usage is not None:
                    usage[i] = chunk.usage.completion_tokens
            texts[i] = text
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    assert usage == {i: 40 + i for i in range(8)}  # every stream ran to its max_tokens


def test_a_stream_may_outlast_the_request_body_deadline(settings_factory: Any, tiny_llm: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """The body deadline (http.body_timeout_seconds) is for a client that stalls sending its request; once the
    body is in, a streamed answer runs as long as it takes."""
    settings = llm_settings(settings_factory, tiny_llm)
    settings.http.body_timeout_seconds = 0.5
    settings.run_worker = False
    with start_server(settings) as server:
        client = make_client(server.base_url)
        client.chat.completions.create(model="tiny-llm", messages=MESSAGES, max_tokens=1)
        engine = server.services.chat_engines._engines["tiny-llm"]
        real = engine.forward

        def slow(*args: object) -> object:
            time.sleep(0.05)
            return real(*args)

        monkeypatch.setattr(engine, "forward", slow)
        banned = no_end(engine)
        started = time.monotonic()
        chunks = list(client.chat.completions.create(model="tiny-llm", messages=MESSAGES, max_tokens=30, stream=True,
                                                     stream_options={"include_usage": True}, logit_bias=banned))
        assert time.monotonic() - started > 1.0  # twice the deadline
        assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 30
