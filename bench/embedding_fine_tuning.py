"""Benchmark: pairs/s of an embedding model's fine-tuning job through the API vs a bare sentence-transformers
training loop (its MultipleNegativesRankingLoss, AdamW, linear decay, clipping) on the same model, data, batch
and order, in one run.
Usage: python bench/embedding_fine_tuning.py [--pairs 1024] [--batch 32] [--epochs 2]"""

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
from inhouse.engines.embeddings.training import WEIGHT_DECAY, load_trainable
from inhouse.engines.locate import require_model
from inhouse.engines.training import epoch_order, steps_per_epoch

WORDS = ("battery charger cable wireless kitchen garden tent jacket waterproof steel ceramic wooden portable "
         "compact adjustable ergonomic premium durable lightweight rechargeable digital smart outdoor indoor "
         "travel office camping cooking cleaning storage lighting audio video sports fitness").split()


def dataset(n: int, seed: int = 0) -> list[dict[str, str]]:
    """Short queries, longer product texts (5-12 and 20-60 words), all distinct."""
    rng = random.Random(seed)
    return [{"query": f"{i} " + " ".join(rng.choice(WORDS) for _ in range(rng.randint(5, 12))),
             "positive": f"item {i}: " + " ".join(rng.choice(WORDS) for _ in range(rng.randint(20, 60)))}
            for i in range(n)]


def bare_loop(path: Path, rows: list[dict[str, str]], batch: int, epochs: int, lr: float) -> tuple[float, int]:
    """The job's steps by hand with sentence-transformers' own loss class, without the service around them.
    Returns (pairs/s after step 1, steps)."""
    try:  # sentence-transformers 6 moved the losses
        from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss
    except ImportError:
        from sentence_transformers.losses import MultipleNegativesRankingLoss

    torch.manual_seed(0)
    model = load_trainable(path, 0).train()
    loss_fn = MultipleNegativesRankingLoss(model)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=WEIGHT_DECAY)
    per_epoch = steps_per_epoch(len(rows), batch)
    total = per_epoch * epochs
    schedule = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: max(0.0, 1.0 - s / total))
    pairs, start, steps = 0, 0.0, 0
    for epoch in range(epochs):
        order = epoch_order(len(rows), 0, epoch)  # seed 0: the trainer's order
        for b in range(per_epoch):
            chunk = [rows[i] for i in order[b * batch : (b + 1) * batch]]
            features = [model.preprocess([r["query"] for r in chunk]), model.preprocess([r["positive"] for r in chunk])]
            loss = loss_fn(features, None)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            schedule.step()
            loss.item()  # the job reads the loss for its metrics event
            steps += 1
            if steps == 1:
                start = time.perf_counter()  # step 1 warms up, as it does in the job
            else:
                pairs += len(chunk)
    return pairs / (time.perf_counter() - start), steps


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pairs", type=int, default=1024)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--epochs", type=int, default=2)
    args = ap.parse_args()
    rows = dataset(args.pairs)
    with tempfile.TemporaryDirectory(dir=".") as tmp:
        data = Path(tmp) / "data"
        settings = Settings(data_dir=data)
        entry = next(e for e in settings.models if e.kind == "embedding")
        lr = settings.fine_tuning.embedding_base_learning_rate * 2.0
        bare_pps, steps = bare_loop(require_model(entry), rows, args.batch, args.epochs, lr)

        server = ServeProcess(data, env={"INHOUSE_FINE_TUNING__POLL_SECONDS": "0.1"}).start()
        server.settle()
        try:
            client = openai.OpenAI(base_url=server.base_url, api_key="bench", timeout=600)
            f = client.files.create(file=("bench.jsonl", "\n".join(json.dumps(r) for r in rows).encode()),
                                    purpose="fine-tune")
            job = client.fine_tuning.jobs.create(
                model=entry.id, training_file=f.id, seed=0,
                method={"type": "supervised", "supervised": {"hyperparameters": {
                    "n_epochs": args.epochs, "batch_size": args.batch, "learning_rate_multiplier": 2.0}}})
            while (status := client.fine_tuning.jobs.retrieve(job.id).status) not in ("succeeded", "failed",
                                                                                       "cancelled"):
                time.sleep(1.0)  # light polling: the job shares these 2 cores with this client
            assert status == "succeeded", status
            # The job's own clock: its metrics events' timestamps (whole seconds; the run is long enough for
            # that to matter little). The span includes the checkpoint written at the end of each epoch but
            # the last.
            page = client.fine_tuning.jobs.list_events(job.id, limit=100)
            assert not page.has_more, "more steps than one page of events: lower --pairs or --epochs"
            seen = {e.data["step"]: e.created_at for e in page.data if e.type == "metrics" and e.data}
        finally:
            server.stop()
    per_epoch = steps_per_epoch(len(rows), args.batch)
    sizes = [min(args.batch, len(rows) - b * args.batch) for b in range(per_epoch)] * args.epochs
    api_time = seen[max(seen)] - seen[min(seen)]
    api_pps = sum(sizes[min(seen):max(seen)]) / api_time
    print(f"model {entry.id}, {args.pairs} pairs, batch {args.batch}, {args.epochs} epochs, {steps} steps, "
          "every weight trained")
    print(f"bare sentence-transformers loop: {bare_pps:7.2f} pairs/s (steps 2..{steps})")
    print(f"job through the API            : {api_pps:7.2f} pairs/s (steps {min(seen) + 1}..{max(seen)}, "
          f"{api_time} s by its own event timestamps, +-1 s)")
    print(f"ratio                          : {api_pps / bare_pps:7.2f}  (aim >= 0.9)")


if __name__ == "__main__":
    main()
