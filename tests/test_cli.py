"""The CLI and configuration: instant --help, a TOML config file, and `inhouse worker` on its own."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from inhouse.config import CONFIG_FILE_ENV, Settings


def run_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "inhouse.cli", *args], env={**os.environ, **env},
                          capture_output=True, text=True, timeout=60, check=False)


def test_help_does_not_import_heavy_modules() -> None:
    code = ("import sys; from inhouse.cli import main\n"
            "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
            "heavy = [m for m in ('torch', 'transformers', 'onnxruntime', 'fastapi', 'numpy') if m in sys.modules]\n"
            "print('HEAVY', heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True).stdout
    assert "HEAVY []" in out


def test_toml_config_file_and_env_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "inhouse.toml"
    cfg.write_text('port = 9001\nhost = "127.0.0.1"\n[limits]\nmax_file_bytes = 1234\n[embeddings]\nmax_inputs = 7\n')
    monkeypatch.setenv(CONFIG_FILE_ENV, str(cfg))
    monkeypatch.setenv("INHOUSE_PORT", "9002")
    settings = Settings()
    assert settings.limits.max_file_bytes == 1234 and settings.embeddings.max_inputs == 7
    assert settings.port == 9002  # the environment wins over the file
    shown = run_cli("config", "show", env={CONFIG_FILE_ENV: str(cfg), "INHOUSE_DATA_DIR": str(tmp_path / "d")})
    assert '"max_file_bytes": 1234' in shown.stdout


def test_worker_runs_alone_and_stops_on_sigterm(tmp_path: Path) -> None:
    env = {"INHOUSE_DATA_DIR": str(tmp_path / "d"), "INHOUSE_SWEEP_INTERVAL_SECONDS": "0.2"}
    assert run_cli("migrate", env=env).returncode == 0
    db = sqlite3.connect(tmp_path / "d" / "inhouse.db")
    db.execute("INSERT INTO projects (id, name, created_at) VALUES ('proj_1', 'p', 0)")
    db.execute("INSERT INTO uploads VALUES ('upload_1', 'proj_1', 'f', 'assistants', 3, 'text/plain', 'pending', 0, 1,"
               " NULL, NULL)")
    db.commit()
    proc = subprocess.Popen([sys.executable, "-m", "inhouse.cli", "worker"], env={**os.environ, **env})
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            status = db.execute("SELECT status FROM uploads WHERE id = 'upload_1'").fetchone()[0]
            if status == "expired":
                break
            time.sleep(0.1)
        assert status == "expired"  # the standalone worker swept the shared database
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
