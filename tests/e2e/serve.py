"""Start and stop a real `inhouse serve` process on 127.0.0.1 for end-to-end tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx2

from tests.harness import free_port


class ServeProcess:
    def __init__(self, data_dir: Path, env: dict[str, str] | None = None, port: int | None = None,
                 command: list[str] | None = None) -> None:
        self.data_dir = data_dir
        self.command = command or [sys.executable, "-m", "inhouse.cli", "serve"]
        self.port = port or free_port()
        self.env = {**os.environ, "INHOUSE_DATA_DIR": str(data_dir), "INHOUSE_PORT": str(self.port),
                    "INHOUSE_HOST": "127.0.0.1", **(env or {})}
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = data_dir.parent / f"serve-{self.port}.log"

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self, timeout: float = 60) -> ServeProcess:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(self.command, env=self.env,
                                         stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {self.log.read_text()[-2000:]}")
            try:
                if httpx2.get(f"http://127.0.0.1:{self.port}/readyz", timeout=1).status_code == 200:
                    return self
            except httpx2.TransportError:
                pass
            time.sleep(0.05)
        raise RuntimeError("server did not become ready")

    def settle(self, timeout: float = 60) -> None:
        """Wait until the process is idle (start-up work such as the worker's import warm-up is done),
        so a benchmark does not time the server's own boot."""
        assert self.proc is not None
        ticks = os.sysconf("SC_CLK_TCK")

        def cpu() -> float:
            fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()  # type: ignore[union-attr]
            return (int(fields[11]) + int(fields[12])) / ticks

        deadline = time.monotonic() + timeout
        last = cpu()
        while time.monotonic() < deadline:
            time.sleep(1.0)
            now = cpu()
            if now - last < 0.05:
                return
            last = now

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
