"""Benchmark: what the connection limits cost. /v1/embeddings through `inhouse serve` (our guarded protocol)
vs the same app, settings and uvicorn options under uvicorn's stock httptools protocol, in one run.

Both servers run at once on one data directory (one ONNX export); rounds alternate between them so drift on
a noisy machine hits both alike, and each figure is the median of its rounds. The loads are the ones most
sensitive to per-request overhead: single-input requests from 1 and from 32 concurrent clients.
Usage: python bench/http_server.py [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.embeddings import http_scenario, make_corpus
from tests.e2e.serve import ServeProcess

# The stock server: everything `inhouse serve` does except the protocol class.
STOCK = """
import uvicorn
from inhouse.app import create_app
from inhouse.cli import _quiet_threads
from inhouse.config import load_settings
from inhouse.server import uvicorn_config
_quiet_threads()
settings = load_settings()
uvicorn.Server(uvicorn_config(create_app(settings), settings, http="httptools")).run()
"""


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    corpus = make_corpus(4096)
    loads = ((1, 1, 300), (32, 1, 2048))
    with tempfile.TemporaryDirectory(dir=".") as tmp:
        data = Path(tmp) / "data"
        servers = {"guarded": ServeProcess(data), "stock": ServeProcess(data, command=[sys.executable, "-c", STOCK])}
        results: dict[tuple[str, int], list[float]] = {}
        try:
            for server in servers.values():  # one at a time: the first exports the ONNX model, the second reuses it
                server.start()
                asyncio.run(http_scenario(server.base_url, corpus, 4, 1, 64, server.proc.pid))  # type: ignore[union-attr]
                server.settle()
            for _ in range(args.rounds):
                for name, server in servers.items():
                    for clients, per_request, requests in loads:
                        r = asyncio.run(http_scenario(server.base_url, corpus, clients, per_request, requests,
                                                      server.proc.pid))  # type: ignore[union-attr]
                        results.setdefault((name, clients), []).append(r["sps"])
        finally:
            for server in servers.values():
                server.stop()
    print(f"/v1/embeddings, single-input requests, median of {args.rounds} alternating rounds, cores={os.cpu_count()}")
    print(f"{'clients':>8} {'guarded req/s':>14} {'stock req/s':>12} {'ratio':>7}")
    for clients, _, _ in loads:
        guarded = statistics.median(results[("guarded", clients)])
        stock = statistics.median(results[("stock", clients)])
        print(f"{clients:>8} {guarded:>14.1f} {stock:>12.1f} {guarded / stock:>7.3f}")


if __name__ == "__main__":
    main()
