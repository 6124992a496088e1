"""Small things a network-facing server must get right: private file modes, a signing secret that is whole or
absent, pauses that are not failures, and job errors that name no server path."""

from __future__ import annotations

import os
import stat
import threading
import time
from pathlib import Path
from typing import Any

import openai
import pytest

from inhouse.bootstrap import build_services
from inhouse.storage.secret_file import SECRET_BYTES, load_or_create_secret
from tests.api.test_images import tiny_sd  # noqa: F401 - the session's tiny image pipeline
from tests.conftest import make_client
from tests.harness import ServerHandle, start_server
from tests.llm import all_events, llm_settings, pong_file, supervised, wait_for


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# -- d. files only the server's user can read -------------------------------------------------------------

def test_database_and_secret_files_are_private(server: ServerHandle, client: openai.OpenAI) -> None:
    client.files.create(file=("a.jsonl", b'{"prompt": "a", "completion": "b"}\n'), purpose="fine-tune")
    data = server.settings.data_dir
    db = data / "inhouse.db"
    files = [db, Path(f"{db}-wal"), Path(f"{db}-shm"), data / "secrets" / "image-urls.key"]
    assert all(f.exists() for f in files)
    assert {str(f.name): oct(_mode(f)) for f in files} == {str(f.name): oct(0o600) for f in files}


# -- e. the signing secret: written whole or not at all, never used short ---------------------------------

@pytest.mark.parametrize("content", [b"", b"short"])
def test_short_secret_file_is_refused_at_start(settings_factory: Any, content: bytes) -> None:
    settings = settings_factory()
    key = settings.data_dir / "secrets" / "image-urls.key"
    key.parent.mkdir(parents=True)
    key.write_bytes(content)
    with pytest.raises(RuntimeError, match=r"image-urls\.key"):
        build_services(settings)
    assert key.read_bytes() == content  # left for the operator to look at, not replaced


def test_configured_signing_key_is_shared_and_never_short(settings_factory: Any, tmp_path: Path) -> None:
    """Servers behind one load balancer share images.url_signing_key: a URL one signs, another accepts. A short
    key refuses to start; no key file is made when one is configured."""
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="at least 32 characters"):
        settings_factory(images={"url_signing_key": "x" * 31})
    shared = {"url_signing_key": "k" * 40}
    one = build_services(settings_factory(data_dir=tmp_path / "one", images=shared)).images
    two = build_services(settings_factory(data_dir=tmp_path / "two", images=shared)).images
    other = build_services(settings_factory(data_dir=tmp_path / "three")).images
    expires = int(time.time()) + 60
    sig = one.sign("img_abc", expires)
    assert two.check_signature("img_abc", expires, sig)
    assert not other.check_signature("img_abc", expires, sig)  # its own random key
    assert not (tmp_path / "one" / "secrets" / "image-urls.key").exists()


def test_secret_is_written_atomically(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    key = tmp_path / "secrets" / "k.key"

    def no_space(fd: int) -> None:
        raise OSError(28, "No space left on device")

    with monkeypatch.context() as m:
        m.setattr(os, "fsync", no_space)
        with pytest.raises(OSError, match="No space"):
            load_or_create_secret(key)
    assert list(key.parent.iterdir()) == []  # neither a partial key nor a temp file
    secret = load_or_create_secret(key)
    assert len(secret) == SECRET_BYTES and _mode(key) == 0o600 and _mode(key.parent) == 0o700
    assert load_or_create_secret(key) == secret


def test_racing_processes_share_one_secret(tmp_path: Path) -> None:
    key = tmp_path / "k.key"
    barrier = threading.Barrier(8)
    seen: list[bytes] = []

    def start() -> None:
        barrier.wait()
        seen.append(load_or_create_secret(key))

    threads = [threading.Thread(target=start) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(seen) == 8 and set(seen) == {key.read_bytes()}
    assert [p.name for p in tmp_path.iterdir()] == ["k.key"]


# -- f. pausing is not failing ---------------------------------------------------------------------------

def test_pause_resume_cycles_are_not_failed_attempts(settings_factory: Any, tiny_llm: Path) -> None:
    # One attempt allowed: any pause/resume that counted as one would fail the job.
    with start_server(llm_settings(settings_factory, tiny_llm, max_attempts=1)) as server:
        llm = make_client(server.base_url, strict=False)
        job = llm.fine_tuning.jobs.create(model="gpt-4o-mini", training_file=pong_file(llm, 20), seed=5,
                                          method=supervised(n_epochs=3, batch_size=2))
        for _ in range(2):
            wait_for(llm, job.id, ("running",), timeout=60)
            assert llm.fine_tuning.jobs.pause(job.id).status == "paused"
            time.sleep(0.5)  # the worker sees the pause and lets go of the job
            assert llm.fine_tuning.jobs.resume(job.id).status == "queued"
        done = wait_for(llm, job.id)
        assert done.status == "succeeded", done.error


# -- g. job errors name no server path --------------------------------------------------------------------

def test_job_error_does_not_leak_server_paths(settings_factory: Any, tiny_llm: Path) -> None:
    with start_server(llm_settings(settings_factory, tiny_llm, max_attempts=1)) as server:
        where = server.settings.data_dir.resolve() / "models" / "tiny-llm" / "model.safetensors"

        def broken(*args: Any) -> Any:
            raise FileNotFoundError(2, "No such file or directory", str(where))

        server.services.jobs._train = broken  # type: ignore[method-assign]
        llm = make_client(server.base_url, strict=False)
        job = llm.fine_tuning.jobs.create(model="gpt-4o-mini", training_file=pong_file(llm))
        done = wait_for(llm, job.id)
        assert done.status == "failed" and done.error is not None
        texts = [done.error.message, *(e.message for e in all_events(llm, job.id) if e.level == "error")]
        for text in texts:
            assert str(server.settings.data_dir.resolve()) not in text and "/" not in text, text
        assert "FileNotFoundError" in done.error.message


def test_seeds_past_64_bits_are_400_not_500(llm: openai.OpenAI) -> None:
    """torch takes 64-bit seeds only; a larger one (JSON integers have no bound) must be refused, not crash."""
    for seed in (2**63, -(2**63) - 1, 10**30):
        with pytest.raises(openai.BadRequestError) as bad:
            llm.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}],
                                        max_tokens=2, seed=seed)
        assert bad.value.param == "seed"
        with pytest.raises(openai.BadRequestError) as bad:
            llm.completions.create(model="davinci-002", prompt="hi", max_tokens=2, seed=seed)
        assert bad.value.param == "seed"
    ok = llm.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}], max_tokens=2,
                                     seed=2**63 - 1)
    assert ok.choices[0].finish_reason in ("stop", "length")


def test_image_seed_past_64_bits_is_400(settings_factory: Any, tiny_sd: Path) -> None:  # noqa: F811
    from tests.api.test_images import sd_settings

    with start_server(sd_settings(settings_factory, tiny_sd)) as server:
        client = make_client(server.base_url)
        with pytest.raises(openai.BadRequestError) as bad:
            client.images.generate(prompt="a red circle", size="256x256", extra_body={"seed": 2**64})
        assert bad.value.param == "seed"
