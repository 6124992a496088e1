"""Benchmark: chat-completion tokens/s through the API vs raw `generate` on the same model, prompt and
greedy settings, in one run. Usage: python bench/chat.py [--tokens 64] [--rounds 3]"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import openai
import torch
from tests.e2e.serve import ServeProcess

from inhouse.config import Settings
from inhouse.engines.causal.loading import load_model, load_tokenizer, model_dir

MESSAGES = [{"role": "user", "content": "Write a long story about a lighthouse keeper and a storm."}]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(dir=".") as tmp:
        data = Path(tmp) / "data"
        settings = Settings(data_dir=data)
        entry = next(e for e in settings.models if e.kind == "chat")
        path = model_dir(entry, data / "models")  # converts the packaged GGUF once
        tok = load_tokenizer(path)
        model = load_model(path, 0)
        text = tok.apply_chat_template(MESSAGES, tokenize=False, add_generation_prompt=True)
        ids = torch.tensor([tok(text, add_special_tokens=False)["input_ids"]])
        raw = []
        for _ in range(args.rounds + 1):
            t = time.perf_counter()
            with torch.inference_mode():
                out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=False,
                                     max_new_tokens=args.tokens, pad_token_id=tok.pad_token_id)
            raw.append((out.shape[1] - ids.shape[1]) / (time.perf_counter() - t))
        del model
        server = ServeProcess(data).start()
        server.settle()
        api = []
        try:
            client = openai.OpenAI(base_url=server.base_url, api_key="bench", timeout=600)
            for _ in range(args.rounds + 1):
                t = time.perf_counter()
                r = client.chat.completions.create(model=entry.id, messages=MESSAGES, temperature=0,
                                                   max_tokens=args.tokens)
                api.append(r.usage.completion_tokens / (time.perf_counter() - t))
        finally:
            server.stop()
    raw_tps, api_tps = statistics.median(raw[1:]), statistics.median(api[1:])  # first round warms up
    print(f"model {entry.id}, greedy, {args.tokens} new tokens, median of {args.rounds}")
    print(f"raw generate     : {raw_tps:6.1f} tokens/s")
    print(f"chat completions : {api_tps:6.1f} tokens/s (over HTTP, tokenizing and templating included)")
    print(f"ratio            : {api_tps / raw_tps:6.2f}  (aim >= 0.9)")


if __name__ == "__main__":
    main()
