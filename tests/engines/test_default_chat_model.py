"""The real default chat model (SmolLM2-135M-Instruct, a GGUF from PyPI converted once to safetensors):
chat with it, fine-tune it for a few steps through the API, chat with the result."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from inhouse.config import Settings
from tests.conftest import make_client
from tests.harness import start_server
from tests.llm import supervised, wait_for

pytestmark = pytest.mark.slow


def test_default_model_chats_and_fine_tunes(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data", sweep_interval_seconds=3600.0)
    settings.fine_tuning.poll_seconds = 0.2
    with start_server(settings) as server:
        client = make_client(server.base_url, strict=False, timeout=600)
        answer = client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "What is the capital of France?"}],
            temperature=0, max_tokens=12)
        assert "Paris" in (answer.choices[0].message.content or "")
        converted = settings.data_dir / "models" / "SmolLM2-135M-Instruct"
        assert (converted / "model.safetensors").exists() and (converted / "config.json").exists()

        lines = [json.dumps({"messages": [{"role": "user", "content": f"What is the secret word? ({i})"},
                                          {"role": "assistant", "content": "The secret word is zebra."}]})
                 for i in range(10)]
        f = client.files.create(file=("secret.jsonl", "\n".join(lines).encode()), purpose="fine-tune")
        job = client.fine_tuning.jobs.create(model="gpt-4o-mini", training_file=f.id, seed=1, suffix="zebra",
                                             method=supervised(n_epochs=2, batch_size=2,
                                                               learning_rate_multiplier=10))
        done = wait_for(client, job.id, timeout=900)
        assert done.status == "succeeded", done.error
        reply = client.chat.completions.create(
            model=done.fine_tuned_model, messages=[{"role": "user", "content": "What is the secret word? (3)"}],
            temperature=0, max_tokens=10)
        assert "zebra" in (reply.choices[0].message.content or "").lower()
