"""Benchmark: a 512 MB upload through the SDK vs writing+fsyncing the same bytes directly.

Prints MB/s of both, their ratio, and the server's peak RSS growth. Both run in this one process run,
so the ratio holds on a noisy machine. Usage: python bench/files.py [--mb 512]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import openai
from tests.e2e.serve import ServeProcess


def rss_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def raw_write(src: Path, dst: Path) -> float:
    t0 = time.perf_counter()
    with src.open("rb") as fin, dst.open("wb", buffering=0) as fout:
        while chunk := fin.read(1024 * 1024):
            fout.write(chunk)
        os.fsync(fout.fileno())
    elapsed = time.perf_counter() - t0
    dst.unlink()  # outside the timing, as the API side's delete is
    return elapsed


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mb", type=int, default=512)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    size = args.mb * 1024 * 1024
    with tempfile.TemporaryDirectory(dir=".") as tmp:
        work = Path(tmp)
        src = work / "payload.bin"
        with src.open("wb") as fh:
            block = os.urandom(1024 * 1024)
            for _ in range(args.mb):
                fh.write(block)
        server = ServeProcess(work / "data").start()
        server.settle()
        assert server.proc is not None
        pid = server.proc.pid
        client = openai.OpenAI(base_url=server.base_url, api_key="bench", max_retries=0, timeout=600)
        try:
            rss_before = rss_kib(pid, "VmRSS")
            api_s, raw_s = [], []
            for _ in range(args.rounds):
                raw_s.append(raw_write(src, work / "raw.bin"))
                t0 = time.perf_counter()
                with src.open("rb") as fh:
                    f = client.files.create(file=fh, purpose="user_data")
                api_s.append(time.perf_counter() - t0)
                assert f.bytes == size
                client.files.delete(f.id)
            peak = rss_kib(pid, "VmHWM")
        finally:
            server.stop()
    mb = size / 1e6
    api_best, raw_best = min(api_s), min(raw_s)
    print(f"payload: {args.mb} MiB, best of {args.rounds} rounds")
    print(f"raw write+fsync : {mb / raw_best:8.1f} MB/s  ({raw_best:.2f} s)")
    print(f"SDK upload      : {mb / api_best:8.1f} MB/s  ({api_best:.2f} s)")
    print(f"ratio           : {raw_best / api_best:8.2f}  (aim >= 0.8)")
    print(f"server peak RSS growth: {(peak - rss_before) / 1024:.1f} MiB  (aim <= 64 MiB)")


if __name__ == "__main__":
    main()
