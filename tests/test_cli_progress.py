"""Long CLI work shows progress on a terminal and stays quiet elsewhere: `inhouse files upload` (one request,
or the Uploads API in parts) and `inhouse models prepare` (first-use conversion and ONNX export ahead)."""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import pty
import struct
import subprocess
import sys
import termios
from pathlib import Path
from typing import Any

from inhouse.config import ModelEntry
from tests.api.test_embeddings import tiny_encoder  # noqa: F401 - the tiny encoder fixture
from tests.conftest import make_client
from tests.harness import start_server


def cli(*args: str, env: dict[str, str], terminal: bool = False) -> tuple[int, str, str]:
    """Run `inhouse ARGS`; with terminal=True its stderr is a pseudo-terminal, as in a person's shell."""
    cmd = [sys.executable, "-m", "inhouse.cli", *args]
    full_env = {**os.environ, **env}
    if not terminal:
        done = subprocess.run(cmd, env=full_env, capture_output=True, text=True, timeout=300, check=False)
        return done.returncode, done.stdout, done.stderr
    leader, follower = pty.openpty()
    # A sized terminal, as a person's is (an unsized one reads as 0 rows, where tqdm draws nothing).
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    proc = subprocess.Popen(cmd, env=full_env, stdout=subprocess.PIPE, stderr=follower)
    os.close(follower)
    seen = b""
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # the terminal closed: the process is done with it
            break
        if not chunk:
            break
        seen += chunk
    out = proc.stdout.read().decode() if proc.stdout else ""
    os.close(leader)
    return proc.wait(60), out, seen.decode(errors="replace")


def test_files_upload_small_and_in_parts(settings_factory: Any, tmp_path: Path) -> None:
    small = tmp_path / "train.jsonl"
    small.write_text('{"prompt": "a", "completion": "b"}\n' * 100)
    big = tmp_path / "big.jsonl"
    line = json.dumps({"prompt": "x" * 200, "completion": "y" * 200}) + "\n"
    big.write_text(line * (40 * 1024 * 1024 // len(line) + 1))  # > 32 MB: the Uploads API
    with start_server(settings_factory()) as server:
        env = {"OPENAI_BASE_URL": server.base_url, "OPENAI_API_KEY": "unused"}
        code, out, err = cli("files", "upload", str(small), "--purpose", "fine-tune", env=env)
        assert code == 0, err
        first = json.loads(out)
        assert first["object"] == "file" and first["bytes"] == small.stat().st_size
        assert err == ""  # not a terminal: no bar, nothing else

        code, out, err = cli("files", "upload", str(big), "--purpose", "fine-tune", "--part-mb", "16", env=env,
                             terminal=True)
        assert code == 0, err
        second = json.loads(out)
        assert "big.jsonl" in err and "100%" in err  # the bar, drawn on the terminal
        client = make_client(server.base_url)
        assert client.files.retrieve(second["id"]).bytes == big.stat().st_size
        body = client.files.content(second["id"]).read()
        assert hashlib.sha256(body).digest() == hashlib.sha256(big.read_bytes()).digest()
        assert "through the Uploads API in 3 parts" in err  # 40 MB in parts of at most 16 MB

        code, _, err = cli("files", "upload", str(small), "--purpose", "nonsense", env=env)
        assert code == 1 and "upload refused: 400" in err


def test_models_prepare_exports_ahead(tmp_path: Path, tiny_encoder: Path) -> None:  # noqa: F811
    entry = ModelEntry(id="tiny-encoder", kind="embedding", path=str(tiny_encoder))
    env = {"INHOUSE_DATA_DIR": str(tmp_path / "data"), "INHOUSE_MODELS": json.dumps([entry.model_dump()])}
    code, out, err = cli("models", "prepare", env=env, terminal=True)
    assert code == 0, err
    assert out.startswith("tiny-encoder: onnx backend ready (")
    assert "tiny-encoder" in err and "1/1" in err  # the bar over models
    assert list((tmp_path / "data" / "cache" / "onnx").glob("*/model.onnx"))
    code, out, err = cli("models", "prepare", env=env)
    assert code == 0 and out.startswith("tiny-encoder: onnx backend ready") and err == ""
    code, _, err = cli("models", "prepare", "nope", env=env)
    assert code == 1 and "no configured model named nope" in err
