"""Benchmark: training tokens/s of a fine-tuning job through the API vs a bare PEFT loop on the same model,
data, batch and LoRA settings, in one run; and the time from create to the first step.
Usage: python bench/fine_tuning.py [--examples 24] [--batch 4]"""

from __future__ import annotations

import argparse
import json
import os
import random
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
from inhouse.engines.causal.adapters import lora_config
from inhouse.engines.causal.data import encode_sft
from inhouse.engines.causal.loading import load_model, load_tokenizer, model_dir
from inhouse.engines.causal.training import ADAPTER, _sft_batch

TOPICS = "rivers mountains cities music science history computers languages oceans forests".split()


def dataset(n: int, seed: int = 0) -> list[dict[str, object]]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        topic = rng.choice(TOPICS)
        answer = " ".join(rng.choice(TOPICS) for _ in range(rng.randint(8, 40)))
        out.append({"messages": [{"role": "user", "content": f"Tell me about {topic} #{i}."},
                                 {"role": "assistant", "content": answer}]})
    return out


def bare_loop(path: Path, examples: list[dict[str, object]], batch: int, lr: float) -> tuple[float, int]:
    """The job's steps by hand, without the service around them: PEFT LoRA, the same seeded shuffle, the same
    loss and token accuracy (`_sft_batch`), gradient clipping at 1.0, AdamW without weight decay.
    Returns (tokens/s after step 1, steps)."""
    from peft import get_peft_model

    tok = load_tokenizer(path)
    torch.manual_seed(0)
    model = get_peft_model(load_model(path, 0), lora_config(8), adapter_name=ADAPTER).train()
    enc = [encode_sft(tok, e, 1024) for e in examples]
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    order = list(range(len(enc)))
    random.Random(0 * 1_000_003 + 0).shuffle(order)  # seed 0, epoch 0: the trainer's order
    tokens, start, steps = 0, 0.0, 0
    for i in range(0, len(order), batch):
        rows = [enc[j] for j in order[i : i + batch]]
        loss, _accuracy, _ = _sft_batch(model, rows, tok.pad_token_id)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        loss.item()  # the job reads the loss for its metrics event
        steps += 1
        if steps == 1:
            start = time.perf_counter()  # step 1 warms up, as it does in the job
        else:
            tokens += sum(len(r.input_ids) for r in rows)
    return tokens / (time.perf_counter() - start), steps


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--examples", type=int, default=96)
    ap.add_argument("--batch", type=int, default=4)
    args = ap.parse_args()
    examples = dataset(args.examples)
    with tempfile.TemporaryDirectory(dir=".") as tmp:
        data = Path(tmp) / "data"
        settings = Settings(data_dir=data)
        entry = next(e for e in settings.models if e.kind == "chat")
        path = model_dir(entry, data / "models").resolve()
        lr = settings.fine_tuning.base_learning_rate * 2.0
        bare_tps, steps = bare_loop(path, examples, args.batch, lr)

        server = ServeProcess(data, env={"INHOUSE_FINE_TUNING__POLL_SECONDS": "0.1"}).start()

        server.settle()
        try:
            client = openai.OpenAI(base_url=server.base_url, api_key="bench", timeout=600)
            f = client.files.create(file=("bench.jsonl", "\n".join(json.dumps(e) for e in examples).encode()),
                                    purpose="fine-tune")
            t0 = time.perf_counter()
            job = client.fine_tuning.jobs.create(
                model=entry.id, training_file=f.id, seed=0,
                method={"type": "supervised", "supervised": {"hyperparameters": {
                    "n_epochs": 1, "batch_size": args.batch, "learning_rate_multiplier": 2.0}}})
            first_step_seen = None
            while True:
                status = client.fine_tuning.jobs.retrieve(job.id).status
                if first_step_seen is None and any(e.type == "metrics" for e in client.fine_tuning.jobs.list_events(
                        job.id, limit=100)):
                    first_step_seen = time.perf_counter()
                if status in ("succeeded", "failed", "cancelled"):
                    break
                time.sleep(1.0)  # light polling: the job shares these 2 cores with this client
            assert status == "succeeded", status
            # The job's own clock: its metrics events' timestamps (whole seconds, so the run is long enough
            # for that to matter little; printed below).
            seen = {e.data["step"]: e.created_at for e in client.fine_tuning.jobs.list_events(job.id, limit=100)
                    if e.type == "metrics" and e.data}
        finally:
            server.stop()
        tok = load_tokenizer(path)
        lengths = [len(encode_sft(tok, e, 1024).input_ids) for e in examples]
    # The job's batch order: the same seeded shuffle the trainer uses for epoch 0.
    order = list(range(len(examples)))
    random.Random(0 * 1_000_003 + 0).shuffle(order)
    per_step = [sum(lengths[j] for j in order[i : i + args.batch]) for i in range(0, len(order), args.batch)]
    api_time = seen[max(seen)] - seen[1]
    api_tps = sum(per_step[1:]) / api_time
    print(f"model {entry.id}, {args.examples} examples, batch {args.batch}, {steps} steps, LoRA r=8")
    print(f"bare PEFT loop     : {bare_tps:7.1f} tokens/s (steps 2..{steps})")
    print(f"job through the API: {api_tps:7.1f} tokens/s (steps 2..{steps}, {api_time} s by its own event "
          "timestamps, +-1 s)")
    print(f"ratio              : {api_tps / bare_tps:7.2f}  (aim >= 0.9)")
    assert first_step_seen is not None
    print(f"create -> first step seen: {first_step_seen - t0:.1f} s (files check, model load, tokenizing; "
          "1 s polling)")


if __name__ == "__main__":
    main()
