"""Benchmark: the scale-out backends. A 512 MiB SDK upload into an S3 blob store vs bare boto3, and files
create/list/retrieve latency on Postgres vs SQLite at 16 concurrent clients.

Both figures start their real components here: SeaweedFS (tests/storage/seaweedfs.py) as the S3 server, pgserver's
Postgres (tests/storage/postgres_server.py) on a unix socket, and `inhouse serve` processes without the in-process
worker, so only the server is timed. Each ratio comes from one run with the two sides alternating round by round,
so drift on a noisy machine hits both alike; the medians of the rounds are printed.

upload: (a) boto3's `upload_file` of the payload file with boto3's default TransferConfig (8 MiB parts, the
S3BlobStore's part size, 10 parts in flight: the figure's baseline), and, for reference, the same with one part in
flight; (b) `client.files.create(file=..., purpose="user_data")` through the official openai SDK to a server whose
blob_url is s3:// on the same SeaweedFS (512 MiB is limits.max_file_bytes exactly: no setting changed; user_data
has no content check). The ratios are the medians of the per-round ratios (each SDK upload against the bare uploads
just before it). The server's VmRSS is sampled every 50 ms during (b); the growth is the peak over the value just
before that upload, and the peak over the idle server's (before the warm-up) is printed too.

files: two servers (SQLite + local blobs, Postgres + local blobs) up at once, used in turn; per round, 16 asyncio
clients share N cycles of create (a 4 KiB file), list (GET /v1/files?limit=20) and retrieve (the file it created).
p50 per kind per round; the medians over rounds, the median of the rounds' ratios Postgres/SQLite, and the CPU per
cycle of each server process and of Postgres's own processes.

Usage: python bench/scale_out.py [--only upload|files] [--mb 512] [--rounds 3] [--files-rounds 3] [--ops 480]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx2
import openai
from tests.e2e.serve import ServeProcess

MIB = 1024 * 1024
# Only the server is timed: no background worker polling the store inside it.
SERVER_ENV = {"INHOUSE_RUN_WORKER": "false", "INHOUSE_LOG_LEVEL": "warning"}


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise KeyError("VmRSS")


class RssSampler:
    """The peak VmRSS of a process, read every `interval` seconds on a thread until stopped."""

    def __init__(self, pid: int, interval: float = 0.05) -> None:
        self.pid, self.interval = pid, interval
        self.peak = rss_kib(pid)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak = max(self.peak, rss_kib(self.pid))

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_kib(self.pid))


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def write_payload(path: Path, mib: int) -> None:
    with path.open("wb") as fh:
        for _ in range(mib):
            fh.write(os.urandom(MIB))


def upload_figure(work: Path, mib: int, rounds: int) -> list[str]:
    from boto3.s3.transfer import TransferConfig
    from tests.storage.seaweedfs import BUCKET, seaweedfs

    from inhouse.storage.s3_blobs import PART_SIZE

    src = work / "payload.bin"
    write_payload(src, mib)
    size = mib * MIB
    s3 = seaweedfs()  # sets AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, which the server's boto3 reads
    bare = s3.client()
    try:
        bare.create_bucket(Bucket=BUCKET)  # type: ignore[attr-defined]
    except Exception as exc:
        if "BucketAlready" not in type(exc).__name__ and "BucketAlready" not in str(exc):
            raise
    sides = {
        "boto3 default": TransferConfig(),  # 8 MiB parts, 10 in flight
        "boto3 1 in flight": TransferConfig(multipart_chunksize=PART_SIZE, max_concurrency=1),
    }

    def bare_upload(config: TransferConfig, n: int) -> float:
        key = f"bench-bare/{n}"
        t0 = time.perf_counter()
        bare.upload_file(str(src), BUCKET, key, Config=config)  # type: ignore[attr-defined]
        elapsed = time.perf_counter() - t0
        bare.delete_object(Bucket=BUCKET, Key=key)  # type: ignore[attr-defined]
        return elapsed

    server = ServeProcess(work / "data-s3", env={**SERVER_ENV, "INHOUSE_BLOB_URL": s3.url()}).start()
    server.settle()
    assert server.proc is not None
    pid = server.proc.pid
    rss_idle = rss_kib(pid)  # before any upload, the warm-up's included
    client = openai.OpenAI(base_url=server.base_url, api_key="bench", max_retries=0, timeout=900)
    times: dict[str, list[float]] = {name: [] for name in [*sides, "SDK upload"]}
    growth: list[float] = []
    peaks: list[int] = []
    server_cpu: list[float] = []
    try:
        # One warm-up upload per side, smaller (first volumes, connections, imports), untimed.
        warm = work / "warm.bin"
        write_payload(warm, 32)
        for config in sides.values():
            bare.upload_file(str(warm), BUCKET, "bench-bare/warm", Config=config)  # type: ignore[attr-defined]
        with warm.open("rb") as fh:
            client.files.delete(client.files.create(file=fh, purpose="user_data").id)
        bare.delete_object(Bucket=BUCKET, Key="bench-bare/warm")  # type: ignore[attr-defined]
        for n in range(rounds):
            for name, config in sides.items():
                times[name].append(bare_upload(config, n))
            before, cpu0 = rss_kib(pid), cpu_seconds(pid)
            with RssSampler(pid) as rss:
                t0 = time.perf_counter()
                with src.open("rb") as fh:
                    f = client.files.create(file=fh, purpose="user_data")
                times["SDK upload"].append(time.perf_counter() - t0)
            growth.append((rss.peak - before) / 1024)
            peaks.append(rss.peak)
            server_cpu.append(cpu_seconds(pid) - cpu0)
            assert f.bytes == size, f.bytes
            client.files.delete(f.id)
            print(f"  round {n + 1}: " + ", ".join(f"{k} {mib / v[-1]:.1f} MiB/s" for k, v in times.items())
                  + f", RSS growth {growth[-1]:.1f} MiB", flush=True)
    finally:
        server.stop()
    med = {name: statistics.median(v) for name, v in times.items()}
    sdk = mib / med["SDK upload"]
    lines = [f"upload: {mib} MiB of random bytes, SeaweedFS on 127.0.0.1, median of {rounds} alternating rounds, "
             f"cores={os.cpu_count()}, S3BlobStore part size {PART_SIZE // MIB} MiB"]
    for name in sides:
        lines.append(f"bare {name:<18}: {mib / med[name]:8.1f} MiB/s  ({med[name]:.2f} s)")
    lines.append(f"SDK files.create       : {sdk:8.1f} MiB/s  ({med['SDK upload']:.2f} s)")
    for name, aim in (("boto3 default", "  (aim >= 0.8)"), ("boto3 1 in flight", "")):
        # Each round's SDK upload against the bare one just before it: the pairs share the machine's mood.
        ratios = [b / a for b, a in zip(times[name], times["SDK upload"], strict=True)]
        lines.append(f"ratio SDK / {name:<17}: {statistics.median(ratios):6.3f}{aim}  (median of rounds "
                     + ", ".join(f"{r:.3f}" for r in ratios) + ")")
    lines.append(f"server RSS growth during upload: max {max(growth):.1f} MiB, rounds "
                 + ", ".join(f"{g:.1f}" for g in growth) + "  (aim <= 64 MiB)")
    lines.append(f"server peak RSS over the idle server's, before any upload: {(max(peaks) - rss_idle) / 1024:.1f} MiB")
    lines.append(f"server CPU per SDK upload: median {statistics.median(server_cpu):.2f} s")
    return lines


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


async def files_round(base: str, clients: int, ops: int, payload: bytes) -> dict[str, list[float]]:
    """`ops` create+list+retrieve cycles shared by `clients` concurrent clients; latencies by kind."""
    lat: dict[str, list[float]] = {"create": [], "list": [], "retrieve": []}
    counter = iter(range(ops))

    async def one(http: httpx2.AsyncClient) -> None:
        for n in counter:
            t = time.perf_counter()
            r = await http.post(f"{base}/files", data={"purpose": "user_data"},
                                files={"file": (f"bench-{n}.txt", payload, "text/plain")})
            lat["create"].append(time.perf_counter() - t)
            r.raise_for_status()
            file_id = r.json()["id"]
            t = time.perf_counter()
            r = await http.get(f"{base}/files", params={"limit": 20})
            lat["list"].append(time.perf_counter() - t)
            r.raise_for_status()
            t = time.perf_counter()
            r = await http.get(f"{base}/files/{file_id}")
            lat["retrieve"].append(time.perf_counter() - t)
            r.raise_for_status()
            assert r.json()["bytes"] == len(payload)

    limits = httpx2.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx2.AsyncClient(timeout=120, limits=limits) as http:
        await asyncio.gather(*(one(http) for _ in range(clients)))
    return lat


def postgres_cpu_seconds(pgdata: Path) -> float:
    """CPU of the Postgres server: the postmaster (its pid is postmaster.pid's first line) and its backends."""
    root = int((pgdata / "postmaster.pid").read_text().split()[0])
    total = cpu_seconds(root)
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == root:
                total += cpu_seconds(int(stat.parent.name))
        except (OSError, ValueError):
            pass  # a backend that exited meanwhile
    return total


def files_figure(work: Path, rounds: int, clients: int, ops: int) -> list[str]:
    from tests.storage import postgres_server

    pg_base = Path(tempfile.mkdtemp(prefix="inhouse-bench-pg-"))
    postgres_server.set_base_dir(pg_base)
    servers: dict[str, ServeProcess] = {}
    payload = os.urandom(4096)
    p50: dict[tuple[str, str], list[float]] = {}
    cpu_ms: dict[str, list[float]] = {}  # CPU per create+list+retrieve cycle: the server, and Postgres's own
    try:
        pg_url = postgres_server.database_url(work / "pg")
        servers["sqlite"] = ServeProcess(work / "data-sqlite", env=SERVER_ENV)
        servers["postgres"] = ServeProcess(work / "data-pg", env={**SERVER_ENV, "INHOUSE_DATABASE_URL": pg_url})
        for server in servers.values():
            server.start()
            asyncio.run(files_round(server.base_url, clients, 2 * clients, payload))  # connections, pool, caches
            server.settle()
        for n in range(rounds):
            for name, server in servers.items():
                assert server.proc is not None
                c0, pg0 = cpu_seconds(server.proc.pid), postgres_cpu_seconds(pg_base / "pgdata")
                lat = asyncio.run(files_round(server.base_url, clients, ops, payload))
                cpu_ms.setdefault(name, []).append(1000 * (cpu_seconds(server.proc.pid) - c0) / ops)
                if name == "postgres":
                    cpu_ms.setdefault("postgres server", []).append(
                        1000 * (postgres_cpu_seconds(pg_base / "pgdata") - pg0) / ops)
                for kind, values in lat.items():
                    p50.setdefault((name, kind), []).append(1000 * pct(values, 0.5))
            print(f"  round {n + 1}: " + ", ".join(f"{b}/{k} {v[-1]:.1f} ms" for (b, k), v in p50.items()),
                  flush=True)
    finally:
        for server in servers.values():
            server.stop()
        postgres_server.stop()
    lines = [f"files: {clients} concurrent clients, {ops} create (4 KiB) + list (limit=20) + retrieve per round, "
             f"p50 per kind, median of {rounds} alternating rounds, cores={os.cpu_count()}",
             f"{'operation':>10} {'sqlite ms':>10} {'postgres ms':>12} {'ratio':>7}  (aim <= 1.5; ratio: median of "
             "the rounds' ratios)"]
    for kind in ("create", "list", "retrieve"):
        lite, pg = p50[("sqlite", kind)], p50[("postgres", kind)]
        ratios = [b / a for a, b in zip(lite, pg, strict=True)]
        lines.append(f"{kind:>10} {statistics.median(lite):>10.1f} {statistics.median(pg):>12.1f} "
                     f"{statistics.median(ratios):>7.3f}  (rounds " + ", ".join(f"{r:.2f}" for r in ratios) + ")")
    lines.append("CPU per cycle: " + ", ".join(f"{name} {statistics.median(v):.2f} ms" for name, v in cpu_ms.items()))
    return lines


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--only", choices=("upload", "files"))
    ap.add_argument("--mb", type=int, default=512, help="upload size in MiB")
    ap.add_argument("--rounds", type=int, default=3, help="upload rounds")
    ap.add_argument("--files-rounds", type=int, default=3)
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--ops", type=int, default=480, help="create+list+retrieve cycles per files round")
    args = ap.parse_args()
    report: list[str] = []
    with tempfile.TemporaryDirectory(dir=".") as tmp:
        work = Path(tmp)
        if args.only in (None, "upload"):
            report += upload_figure(work, args.mb, args.rounds)
        if args.only in (None, "files"):
            report += files_figure(work, args.files_rounds, args.clients, args.ops)
    print("\n".join(report))


if __name__ == "__main__":
    main()
