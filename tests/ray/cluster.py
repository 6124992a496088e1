"""A local multi-node Ray cluster for the Ray tests, run inside a private network namespace.

Ray binds the machine's real address when it has one (and then 127.0.0.1 is not enough), so every scenario runs
under `unshare -n`, where only loopback exists: `run_scenario` (the pytest side) starts a scenario module there;
the module uses `RayCluster` (a head and nodes, each `ray start` in its own session, so a node dies by killing
its session: raylet, its workers, its agents) and `ray_server` (an Inhouse server whose worker runs jobs as Ray
tasks). Every session a scenario starts is written to a file, so the pytest side can kill them even when the
scenario itself was killed.

Another Ray test (a batch, say) is a scenario module plus a test:

    # tests/ray/scenario_batch.py, run as `python -m tests.ray.scenario_batch OUT ...`
    from tests.conftest import make_client  # first: tests.llm and tests.conftest import each other
    from tests.ray.cluster import ray_cluster, ray_server, ray_settings

    with ray_cluster(out, {"node2": {"num_cpus": 2}}) as cluster:
        with ray_server(ray_settings(out / "data", cluster, models=[...])) as server:
            client = make_client(server.base_url)
            ...  # run the batch; write what happened to out / "result.json"

    # tests/ray/test_ray_batches.py
    def test_...(tmp_path):
        skip_without_netns()
        result = run_scenario("tests.ray.scenario_batch", tmp_path, timeout=300)
        assert ...
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
RAY = Path(sys.executable).parent / "ray"
ENV = {"RAY_USAGE_STATS_ENABLED": "0", "OMP_WAIT_POLICY": "PASSIVE", "HF_HUB_OFFLINE": "1",
       "TOKENIZERS_PARALLELISM": "false"}


# -- the pytest side ---------------------------------------------------------------------------------------------
def skip_without_netns() -> None:
    """Skip (with the reason) where Ray or a private network namespace is not available."""
    pytest.importorskip("ray", reason="the ray extra is not installed: pip install -e '.[ray]'")
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        pytest.skip("needs unshare(1) and ip(8) to give the Ray cluster a private network namespace")
    probe = subprocess.run(["unshare", "-n", "sh", "-c", "ip link set lo up"], capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(f"`unshare -n` is not permitted here ({probe.stderr.strip()}): the Ray tests need a private "
                    "network namespace (root, or a user namespace) so Ray never binds the machine's address")


def run_scenario(module: str, out: Path, *args: str, timeout: float) -> dict[str, Any]:
    """Run `python -m module OUT ARGS` in a private network namespace with only loopback up; the JSON the
    scenario wrote to OUT/result.json. Every Ray session it started is killed afterwards, whatever happened."""
    out.mkdir(parents=True, exist_ok=True)
    cmd = ["unshare", "-n", "sh", "-c", 'ip link set lo up && exec "$0" "$@"', sys.executable, "-m", module,
           str(out), *args]
    try:
        proc = subprocess.run(cmd, cwd=ROOT, env={**os.environ, **ENV}, capture_output=True, text=True,
                              timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        raise AssertionError(f"{module} ran past {timeout} s; its output:\n{_text(exc.stdout)}{_text(exc.stderr)}"
                             ) from None
    finally:
        kill_sessions(read_sessions(out))
    result = out / "result.json"
    assert proc.returncode == 0 and result.exists(), (
        f"{module} exited {proc.returncode}; its output:\n{proc.stdout[-20000:]}{proc.stderr[-20000:]}")
    data: dict[str, Any] = json.loads(result.read_text())
    return data


def _text(data: bytes | str | None) -> str:
    return data.decode(errors="replace") if isinstance(data, bytes) else (data or "")


# -- sessions ----------------------------------------------------------------------------------------------------
def read_sessions(out: Path) -> list[int]:
    path = out / "sessions"
    return [int(line) for line in path.read_text().split()] if path.exists() else []


def session_pids(sid: int) -> list[int]:
    """Every live process of session `sid` (field 6 of /proc/PID/stat), zombies excluded."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        if fields[0] != "Z" and int(fields[3]) == sid:
            pids.append(int(entry.name))
    return pids


def kill_sessions(sids: list[int], timeout: float = 10) -> None:
    """SIGKILL every process of these sessions (a session is one `ray start` and all it spawned) until none
    is left."""
    deadline = time.monotonic() + timeout
    while True:
        pids = [pid for sid in sids for pid in session_pids(sid)]
        if not pids:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"processes {pids} of sessions {sids} survived SIGKILL")
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.05)


# -- the scenario side (inside the namespace) --------------------------------------------------------------------
@dataclass
class RayCluster:
    """Ray nodes on this machine's loopback, each `ray start` in a session of its own; `stop` kills them all."""

    out: Path
    port: int = 6379
    sessions: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        # Ray's sockets live under its temp dir and a Unix socket path has ~107 bytes: keep it short.
        self.temp_dir = Path(tempfile.mkdtemp(prefix="ray", dir="/tmp"))

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _start(self, name: str, args: list[str], timeout: float = 120) -> None:
        log = (self.out / f"{name}.log").open("w")
        # `ray start` returns once its node is up; what it started stays in the session it leads.
        proc = subprocess.Popen([str(RAY), "start", "--node-ip-address=127.0.0.1", "--disable-usage-stats",
                                 *args], stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                env={**os.environ, **ENV})
        self.sessions[name] = proc.pid
        with (self.out / "sessions").open("a") as f:
            f.write(f"{proc.pid}\n")
        try:
            rc = proc.wait(timeout)
        except subprocess.TimeoutExpired:
            rc = None
        if rc != 0:
            raise RuntimeError(f"`ray start` of {name} ended {rc}; see {self.out / f'{name}.log'}")

    def start_head(self, num_cpus: int = 0, resources: dict[str, float] | None = None) -> None:
        """The head: GCS and a raylet; by default no CPU, so no job task can land on it."""
        self._start("head", ["--head", f"--port={self.port}", f"--num-cpus={num_cpus}", "--include-dashboard=false",
                             f"--temp-dir={self.temp_dir}", f"--resources={json.dumps(resources or {})}"])

    def add_node(self, name: str, num_cpus: int = 2, resources: dict[str, float] | None = None) -> None:
        self._start(name, [f"--address={self.address}", f"--num-cpus={num_cpus}", f"--temp-dir={self.temp_dir}/{name}",
                           f"--resources={json.dumps(resources or {})}"])

    def kill(self, name: str) -> None:
        """The node dies at once, as a machine would: SIGKILL to its raylet, workers and agents."""
        kill_sessions([self.sessions[name]])

    def stop(self) -> None:
        kill_sessions(list(self.sessions.values()))
        shutil.rmtree(self.temp_dir, ignore_errors=True)


@contextlib.contextmanager
def ray_cluster(out: Path, nodes: dict[str, dict[str, Any]]) -> Iterator[RayCluster]:
    """A head with no CPU plus `nodes` (name -> add_node keywords); every process killed on the way out."""
    cluster = RayCluster(out)
    try:
        cluster.start_head()
        for name, options in nodes.items():
            cluster.add_node(name, **options)
        yield cluster
    finally:
        cluster.stop()


def alive_nodes() -> dict[str, dict[str, Any]]:
    """Node id -> resources of every live node, from this process's Ray connection (the server's worker's)."""
    import ray

    return {n["NodeID"]: n["Resources"] for n in ray.nodes() if n["Alive"]}


def wait(what: str, check: Any, timeout: float, every: float = 0.05) -> Any:
    """Poll `check()` until it returns something truthy; bounded."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def ray_settings(data_dir: Path, cluster: RayCluster, **overrides: Any) -> Any:
    """Settings of a server whose worker runs jobs as Ray tasks on `cluster`, with a short lease."""
    from inhouse.config import Settings

    settings = Settings(data_dir=data_dir, sweep_interval_seconds=3600.0, executor="ray",
                        ray_address=cluster.address, **overrides)
    ft = settings.fine_tuning
    ft.heartbeat_seconds, ft.poll_seconds, ft.lease_seconds = 0.2, 0.2, 3
    return settings


@contextlib.contextmanager
def ray_server(settings: Any) -> Iterator[Any]:
    """An Inhouse server (tests.harness.start_server) whose in-process worker is the Ray dispatcher; yields the
    handle once the worker has joined the cluster."""
    from tests.harness import start_server

    with start_server(settings) as server:
        import ray

        wait("the worker to join the Ray cluster", ray.is_initialized, 60)
        yield server
