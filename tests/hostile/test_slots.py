"""Reliability 15 and 17: slots and pools that slow clients cannot hold. A stalled upload holds no image slot,
a streamed completion holds its generation slot until it ends, and model work never delays file I/O."""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import openai
import pytest

from tests.api.test_images import png, sd_settings, tiny_sd  # noqa: F401 - tiny_sd is a fixture
from tests.conftest import make_client
from tests.harness import ServerHandle, start_server
from tests.llm import llm_settings

MESSAGES = [{"role": "user", "content": "hello world"}]
BOUNDARY = "slow-boundary"


def _connect(server: ServerHandle) -> socket.socket:
    host, port = server.origin.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=10)


def _stalled_upload(server: ServerHandle) -> socket.socket:
    """Headers and the start of an image part of /v1/images/edits, then nothing more."""
    head = (f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"x.png\"\r\n"
            "Content-Type: image/png\r\n\r\n").encode() + png()[:200]
    s = _connect(server)
    s.sendall((f"POST /v1/images/edits HTTP/1.1\r\nHost: {server.origin.removeprefix('http://')}\r\n"
               f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\n"
               f"Content-Length: {len(head) + 100_000}\r\n\r\n").encode() + head)
    return s


def _raw_stream(server: ServerHandle) -> socket.socket:
    """A streamed chat completion whose answer is never read."""
    body = json.dumps({"model": "tiny-llm", "messages": MESSAGES, "max_tokens": 2, "stream": True}).encode()
    s = _connect(server)
    s.sendall((f"POST /v1/chat/completions HTTP/1.1\r\nHost: {server.origin.removeprefix('http://')}\r\n"
               f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body)
    return s


class Gate:
    """Holds the chat engine's batch at its next forward pass until opened; counts the passes held."""

    def __init__(self, server: ServerHandle) -> None:
        self.opened = threading.Event()
        self.waiting = 0
        engine = server.services.chat_engines._engines["tiny-llm"]
        real = engine.forward

        def gated(*args: Any) -> Any:
            self.waiting += 1
            self.opened.wait(60)
            return real(*args)

        engine.forward = gated  # type: ignore[method-assign]

    def wait_for(self, n: int, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while self.waiting < n:
            assert time.monotonic() < deadline, f"only {self.waiting} of {n} streams started"
            time.sleep(0.02)


@pytest.fixture
def chat_server(settings_factory: Any, tiny_llm: Path) -> Iterator[ServerHandle]:
    settings = llm_settings(settings_factory, tiny_llm, max_queued_generations=1)
    settings.run_worker = False
    with start_server(settings) as server:
        make_client(server.base_url).chat.completions.create(model="tiny-llm", messages=MESSAGES, max_tokens=1)
        yield server  # warm: the engine is loaded and can be gated


def test_stalled_uploads_hold_no_image_slot(settings_factory: Any, tiny_sd: Path) -> None:  # noqa: F811
    settings = sd_settings(settings_factory, tiny_sd)
    assert settings.images.max_queued == 4
    with start_server(settings) as server:
        stalled = [_stalled_upload(server) for _ in range(settings.images.max_queued + 1)]
        try:
            time.sleep(0.5)  # every stalled request has reached its route
            client = make_client(server.base_url, timeout=30)
            r = client.images.edit(image=("x.png", png()), prompt="b", size="256x256", response_format="b64_json")
            assert len(r.data) == 1
        finally:
            for s in stalled:
                s.close()


def test_streamed_completion_holds_its_slot_until_done(chat_server: ServerHandle) -> None:
    client = make_client(chat_server.base_url)
    gate = Gate(chat_server)
    with httpx2.stream("POST", f"{chat_server.base_url}/chat/completions", timeout=30,
                       json={"model": "tiny-llm", "messages": MESSAGES, "max_tokens": 2, "stream": True}) as first:
        assert first.status_code == 200
        lines = first.iter_lines()
        assert next(lines).startswith("data: ")  # the role frame: the stream is under way
        gate.wait_for(1)
        with pytest.raises(openai.RateLimitError):
            client.chat.completions.create(model="tiny-llm", messages=MESSAGES, max_tokens=1)
        with pytest.raises(openai.RateLimitError):  # a second stream is refused with a status, not a frame
            client.chat.completions.create(model="tiny-llm", messages=MESSAGES, max_tokens=1, stream=True)
        gate.opened.set()
        assert [line for line in lines if line][-1] == "data: [DONE]"
    assert client.chat.completions.create(model="tiny-llm", messages=MESSAGES, max_tokens=1).choices


def test_abandoned_stream_gives_its_slot_back(chat_server: ServerHandle) -> None:
    client = make_client(chat_server.base_url)
    gate = Gate(chat_server)
    s = _raw_stream(chat_server)
    gate.wait_for(1)
    s.close()  # the client goes away mid-stream
    deadline = time.monotonic() + 10
    while True:
        try:
            client.chat.completions.create(model="tiny-llm", messages=MESSAGES, max_tokens=1)
            break
        except openai.RateLimitError:
            assert time.monotonic() < deadline, "the abandoned stream still holds its slot"
            time.sleep(0.1)
    gate.opened.set()


def test_file_io_does_not_wait_for_model_threads(settings_factory: Any, tiny_llm: Path) -> None:
    settings = llm_settings(settings_factory, tiny_llm)
    settings.run_worker = False
    with start_server(settings) as server:
        client = make_client(server.base_url, timeout=15)
        client.chat.completions.create(model="tiny-llm", messages=MESSAGES, max_tokens=1)
        gate = Gate(server)
        # More held streams than asyncio's default pool has threads: the model's batch is held at a pass,
        # every stream waits on it.
        streams = [_raw_stream(server) for _ in range(min(32, (os.cpu_count() or 1) + 4) + 2)]
        try:
            gate.wait_for(1)
            time.sleep(0.5)
            f = client.files.create(file=("a.jsonl", b'{"prompt": "a", "completion": "b"}\n'), purpose="fine-tune")
            assert client.files.content(f.id).read() == b'{"prompt": "a", "completion": "b"}\n'
        finally:
            gate.opened.set()
            for s in streams:
                s.close()


def test_image_bytes_in_memory_are_bounded_across_requests(settings_factory: Any, tiny_sd: Path) -> None:  # noqa: F811
    """Slots are taken once a body is in; meanwhile all image uploads together hold at most the byte budget."""
    settings = sd_settings(settings_factory, tiny_sd)
    settings.images.max_buffered_upload_bytes = 1024 * 1024
    with start_server(settings) as server:
        part = (f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"x.png\"\r\n"
                "Content-Type: image/png\r\n\r\n").encode() + b"\x89PNG" + b"\0" * (700 * 1024)
        head = (f"POST /v1/images/edits HTTP/1.1\r\nHost: {server.origin.removeprefix('http://')}\r\n"
                f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\n"
                f"Content-Length: {len(part) + 100_000}\r\n\r\n").encode()
        first = _connect(server)
        first.sendall(head + part)  # 700 KiB held, then the client stalls
        time.sleep(0.5)
        budget = server.services.images.upload_budget
        assert budget.used > 600 * 1024
        second = _connect(server)
        second.sendall(head + part)
        answer = second.recv(65536)
        assert answer.startswith(b"HTTP/1.1 429"), answer[:200]
        first.close()
        second.close()
        deadline = time.monotonic() + 5
        while budget.used:
            assert time.monotonic() < deadline, "a request that ended kept its bytes in the budget"
            time.sleep(0.05)
        client = make_client(server.base_url, timeout=30)
        assert len(client.images.edit(image=("x.png", png()), prompt="b", size="256x256",
                                      response_format="b64_json").data) == 1
