"""Benchmark: what batches gain over running their lines one by one, one section per endpoint, each with its
baseline and ratio in one run.

chat: the same N chat prompts (greedy, max_tokens each) on the default chat model, generated one by one with
      CausalEngine.generate (what each line costs alone) and all at once with CausalEngine.generate_batch (what
      a batch's lines run through); tokens/s of both and the ratio (aim >= 2), and whether every text matched;
      then a live request's p50 latency idle and while a batch decodes (aim <= 2x).
embeddings: N lines of one input each on the default embedding model, as a whole batch through the product (input
      file, worker, engine, output file) against a bare loop over the same engine doing the same work (tokenize,
      sort by length, forward in the engine's own batches): texts/s of both and the ratio (aim >= 0.95); then a
      live request's p50 latency idle and while a batch runs (aim <= 2x).
Add a section: a function of (parsed arguments, data directory), registered in SECTIONS.
Usage: python bench/batches.py [--only chat|embeddings] [--prompts 16] [--tokens 64] [--lines 4096] [--rounds 1]
       [--data DIR]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from inhouse.config import Settings
from inhouse.engines.causal.generation import CausalEngine, Generated, SamplingParams
from inhouse.engines.causal.loading import model_dir

QUESTIONS = [
    "Write a long story about a lighthouse keeper and a storm.",
    "What is the capital of France?",
    "Explain how a bicycle stays upright.",
    "List five fruits that are red.",
    "hi",
    "Give me three tips for learning a new language, with an example for each one.",
    "Why is the sky blue?",
    "Summarize the plot of a detective novel you invent, in a few sentences.",
    "How do I boil an egg?",
    "Describe the water cycle to a ten-year-old.",
    "What are the planets of the solar system, in order from the sun?",
    "Translate 'good morning' into Spanish and German.",
    "Write a haiku about autumn leaves.",
    "What is the difference between weather and climate? Answer briefly, then give an example of each.",
    "Name a famous painter.",
    "Suggest a name for a small coffee shop near the sea.",
]


def alternated(runs: dict[str, Callable[[], list[Generated]]], rounds: int
               ) -> dict[str, tuple[float, list[Generated]]]:
    """Median tokens/s of each run and its last answers; the runs take turns round by round, so a load that
    comes and goes on the machine falls on both sides alike."""
    speeds: dict[str, list[float]] = {name: [] for name in runs}
    last: dict[str, list[Generated]] = {}
    for _ in range(rounds):
        for name, run in runs.items():
            t = time.perf_counter()
            last[name] = run()
            speeds[name].append(sum(g.tokens for g in last[name]) / (time.perf_counter() - t))
    return {name: (statistics.median(speeds[name]), last[name]) for name in runs}


def chat(args: argparse.Namespace, data: Path) -> None:
    settings = Settings(data_dir=data)
    entry = next(e for e in settings.models if e.kind == "chat")
    engine = CausalEngine(model_dir(entry, data / "models"), 0)  # converts the packaged GGUF once
    questions = [QUESTIONS[i % len(QUESTIONS)] + ("" if i < len(QUESTIONS) else f" ({i})")
                 for i in range(args.prompts)]
    params = SamplingParams(args.tokens, 0.0, 1.0, (), None)
    rows = [(engine.chat_prompt([{"role": "user", "content": q}]), params) for q in questions]
    engine.generate(rows[0][0], SamplingParams(4, 0.0, 1.0, (), None), 1, None)  # warm-up
    engine.generate_batch(rows[:2], None)

    def one_by_one() -> list[Generated]:
        return [engine.generate(ids, p, 1, None)[0] for ids, p in rows]

    def batched() -> list[Generated]:
        return engine.generate_batch(rows, None)

    got = alternated({"single": one_by_one, "batch": batched}, args.rounds)
    (single_tps, single), (batch_tps, batch) = got["single"], got["batch"]
    same = sum(a == b for a, b in zip(single, batch, strict=True))
    lengths = sorted(len(ids) for ids, _ in rows)
    print(f"chat: model {entry.id}, {len(rows)} prompts of {lengths[0]}..{lengths[-1]} tokens, greedy, max_tokens "
          f"{args.tokens}, {sum(g.tokens for g in batch)} tokens generated, median of {args.rounds}, "
          f"batches of <= {engine.max_batch_rows} rows")
    print(f"one by one (generate)       : {single_tps:6.1f} tokens/s")
    print(f"all at once (generate_batch): {batch_tps:6.1f} tokens/s")
    print(f"ratio                       : {batch_tps / single_tps:6.2f}  (aim >= 2)")
    print(f"same text as one by one     : {same}/{len(rows)}")

    # A live request on the same model, idle and while a batch decodes (it goes ahead of the batch's next step).
    import threading

    live = (engine.chat_prompt([{"role": "user", "content": "Name a colour."}]), SamplingParams(16, 0.0, 1.0, (),
                                                                                                None))

    def latencies(n: int) -> list[float]:
        times = []
        for _ in range(n):
            t0 = time.perf_counter()
            engine.generate(*live, 1, None)
            times.append(time.perf_counter() - t0)
            time.sleep(0.05)
        return times

    idle = latencies(8)
    long_rows = [(ids, SamplingParams(4 * args.tokens, 0.0, 1.0, (), None)) for ids, _ in rows]
    running = threading.Thread(target=engine.generate_batch, args=(long_rows, None))
    running.start()
    time.sleep(1.0)
    busy = latencies(8)
    still = running.is_alive()
    running.join()
    p50_idle, p50_busy = statistics.median(idle), statistics.median(busy)
    print(f"live request (16 tokens) p50 idle {1000 * p50_idle:.0f} ms, while a {len(rows)}-row batch decodes "
          f"{1000 * p50_busy:.0f} ms: {p50_busy / p50_idle:.2f}x  (aim <= 2; batch still running after: {still})")


def embeddings(args: argparse.Namespace, data: Path) -> None:
    """An embeddings batch through the whole product (input file, worker, engine, output file) against a bare
    loop over the same engine (tokenize, sort by length, forward in the engine's own batches); then live
    requests' latency idle and while a batch runs (aim: p50 at most 2x idle)."""
    import asyncio
    import json
    import random

    from inhouse.bootstrap import build_services
    from inhouse.engines.embeddings.encoder import EncoderSpec
    from inhouse.engines.embeddings.engine import EmbeddingOptions, load_encoder
    from inhouse.engines.locate import require_model

    rng = random.Random(7)
    words = ("the a of and to in is was model server vector batch token sentence request queue thread latency "
             "memory storage file embedding search index query answer red blue circle city river music data").split()
    corpus = [" ".join(rng.choice(words) for _ in range(int(min(120, max(3, rng.lognormvariate(2.6, 0.6))))))
              for _ in range(args.lines)]
    settings = Settings(data_dir=data)
    entry = next(m for m in settings.all_models() if m.kind == "embedding" and "text-embedding-3-small" in m.aliases)
    emb = settings.embeddings
    options = EmbeddingOptions(backend=emb.backend, threads=emb.threads, max_batch_tokens=emb.max_batch_tokens,
                               max_batch_size=emb.max_batch_size, max_queued_inputs=emb.max_queued_inputs,
                               cache_dir=data / "cache")

    encoder = load_encoder(EncoderSpec.read(require_model(entry)), options)  # the bare loop's own engine
    encoder.forward([encoder.window(t) for t in encoder.tokenize(corpus[:32])])  # warm up

    def bare() -> float:
        """texts/s of the bare engine loop: the product's batching rule (size and token budget) on sorted ids."""
        t0 = time.perf_counter()
        ids = sorted((encoder.window(t) for t in encoder.tokenize(corpus)), key=len)
        batch: list[list[int]] = []
        for seq in ids:
            if batch and (len(batch) >= emb.max_batch_size or len(seq) * (len(batch) + 1) > emb.max_batch_tokens):
                encoder.forward(batch)
                batch = []
            batch.append(seq)
        encoder.forward(batch)
        return len(corpus) / (time.perf_counter() - t0)

    async def product() -> tuple[list[float], list[float], list[float], list[float]]:
        services = build_services(settings)
        await services.open()
        try:
            project = await services.meta.keys.get_or_create_project("bench")
            spec = {"endpoint": "/v1/embeddings", "completion_window": "24h"}

            async def batch_file() -> str:
                lines = [json.dumps({"custom_id": f"r{i}", "method": "POST", "url": "/v1/embeddings",
                                     "body": {"model": "text-embedding-3-small", "input": t}})
                         for i, t in enumerate(corpus)]
                intake = services.files.begin_create(project.id, "batch")
                await intake.write("\n".join(lines).encode())
                return str((await intake.finish("bench.jsonl", "batch", None)).id)

            async def live(n: int) -> list[float]:
                times = []
                for i in range(n):
                    t0 = time.perf_counter()
                    await services.embeddings.create(project_id=project.id, model="text-embedding-3-small",
                                                     input=corpus[i % 50], encoding_format=None, dimensions=None)
                    times.append(time.perf_counter() - t0)
                    await asyncio.sleep(0.02)
                return times

            await live(1)  # loads the model
            bare_rates, rates = [], []
            for _ in range(args.rounds):  # the two sides take turns, so a noisy spell hits both
                bare_rates.append(bare())
                # The batch alone: past the engine's grace after a live request, when background work is
                # full-size (with live traffic it yields, below).
                await asyncio.sleep(3)
                batch = await services.batches.create(project, {**spec, "input_file_id": await batch_file()})
                t0 = time.perf_counter()
                assert await services.batch_runner.run_next()
                rates.append(len(corpus) / (time.perf_counter() - t0))
                done = await services.meta.batches.get_batch(project.id, batch.id)
                assert done is not None and done.status == "completed" and done.request_completed == len(corpus)
            idle = await live(60)
            # Live requests while another batch runs.
            await services.batches.create(project, {**spec, "input_file_id": await batch_file()})
            running = asyncio.create_task(services.batch_runner.run_next())
            await asyncio.sleep(0.5)
            busy = await live(60)
            await running
            return bare_rates, rates, idle, busy
        finally:
            await services.close()

    bare_rates, rates, idle, busy = asyncio.run(product())
    encoder.close()
    bare_rate, rate = statistics.median(bare_rates), statistics.median(rates)
    ratios = [p / b for p, b in zip(rates, bare_rates, strict=True)]
    p50_idle, p50_busy = statistics.median(idle), statistics.median(busy)
    print(f"embeddings: {len(corpus)} lines of one input each, model {entry.id} (backend {emb.backend}), "
          f"median of {args.rounds} rounds taking turns")
    print(f"bare engine loop (tokenize, sort, forward): {bare_rate:8.1f} texts/s")
    print(f"batch through the product (file to file)  : {rate:8.1f} texts/s")
    print(f"ratio                                     : {statistics.median(ratios):8.3f}  (aim >= 0.95; "
          f"rounds: {', '.join(f'{r:.3f}' for r in ratios)})")
    print(f"live request p50 idle {1000 * p50_idle:.1f} ms, while a batch runs {1000 * p50_busy:.1f} ms: "
          f"{p50_busy / p50_idle:.2f}x  (aim <= 2)")


SECTIONS: dict[str, Callable[[argparse.Namespace, Path], None]] = {"chat": chat, "embeddings": embeddings}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", choices=sorted(SECTIONS), action="append", help="run only these sections")
    ap.add_argument("--prompts", type=int, default=16, help="chat: prompts in the batch")
    ap.add_argument("--tokens", type=int, default=64, help="chat: max_tokens of each prompt")
    ap.add_argument("--lines", type=int, default=4096, help="embeddings: lines in the batch")
    ap.add_argument("--rounds", type=int, default=1, help="timed runs of each side, taking turns (median printed)")
    ap.add_argument("--data", type=Path, help="data directory to reuse (converted models); default: a temporary one")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(dir=".") as tmp:
        data = args.data or Path(tmp) / "data"
        for name in args.only or list(SECTIONS):
            SECTIONS[name](args, data)


if __name__ == "__main__":
    main()
