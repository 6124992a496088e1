"""Test harness: run the app under our uvicorn configuration in a thread; check every answer against the spec."""

from __future__ import annotations

import asyncio
import json
import re
import socket
import threading
import time
from collections.abc import Coroutine, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, TypeVar

import httpx2
import jsonschema
import openai
import uvicorn

from inhouse.app import create_app
from inhouse.config import Settings
from inhouse.server import uvicorn_config
from inhouse.services.container import Services

T = TypeVar("T")

SPEC = Path(__file__).parent / "spec" / "openai_schemas.json"

# (method, path pattern) -> the spec component a 2xx JSON answer must satisfy.
ROUTES: list[tuple[str, re.Pattern[str], str]] = [
    ("POST", re.compile(r"^/v1/files$"), "OpenAIFile"),
    ("GET", re.compile(r"^/v1/files$"), "ListFilesResponse"),
    ("GET", re.compile(r"^/v1/files/[^/]+$"), "OpenAIFile"),
    ("DELETE", re.compile(r"^/v1/files/[^/]+$"), "DeleteFileResponse"),
    ("POST", re.compile(r"^/v1/uploads$"), "Upload"),
    ("POST", re.compile(r"^/v1/uploads/[^/]+/parts$"), "UploadPart"),
    ("POST", re.compile(r"^/v1/uploads/[^/]+/(complete|cancel)$"), "Upload"),
    ("GET", re.compile(r"^/v1/models$"), "ListModelsResponse"),
    ("GET", re.compile(r"^/v1/models/.+$"), "Model"),
    ("DELETE", re.compile(r"^/v1/models/.+$"), "DeleteModelResponse"),
    ("POST", re.compile(r"^/v1/embeddings$"), "CreateEmbeddingResponse"),
    ("POST", re.compile(r"^/v1/fine_tuning/jobs$"), "FineTuningJob"),
    ("GET", re.compile(r"^/v1/fine_tuning/jobs$"), "ListPaginatedFineTuningJobsResponse"),
    ("GET", re.compile(r"^/v1/fine_tuning/jobs/[^/]+$"), "FineTuningJob"),
    ("POST", re.compile(r"^/v1/fine_tuning/jobs/[^/]+/(cancel|pause|resume)$"), "FineTuningJob"),
    ("GET", re.compile(r"^/v1/fine_tuning/jobs/[^/]+/events$"), "ListFineTuningJobEventsResponse"),
    ("GET", re.compile(r"^/v1/fine_tuning/jobs/[^/]+/checkpoints$"), "ListFineTuningJobCheckpointsResponse"),
    ("POST", re.compile(r"^/v1/chat/completions$"), "CreateChatCompletionResponse"),
    ("POST", re.compile(r"^/v1/completions$"), "CreateCompletionResponse"),
    ("POST", re.compile(r"^/v1/images/(generations|edits|variations)$"), "ImagesResponse"),
    ("POST", re.compile(r"^/v1/batches$"), "Batch"),
    ("GET", re.compile(r"^/v1/batches$"), "ListBatchesResponse"),
    ("GET", re.compile(r"^/v1/batches/[^/]+$"), "Batch"),
    ("POST", re.compile(r"^/v1/batches/[^/]+/cancel$"), "Batch"),
    ("GET", re.compile(r"^/v1/organization/usage/(completions|embeddings|images)$"), "UsageResponse"),
    ("GET", re.compile(r"^/v1/organization/projects$"), "ProjectListResponse"),
    ("GET", re.compile(r"^/v1/organization/projects/[^/]+$"), "Project"),
    ("GET", re.compile(r"^/v1/organization/projects/[^/]+/api_keys$"), "ProjectApiKeyListResponse"),
    ("GET", re.compile(r"^/v1/organization/projects/[^/]+/api_keys/[^/]+$"), "ProjectApiKey"),
    # Extensions answer the key object too (with `value` once, on create).
    ("POST", re.compile(r"^/v1/organization/projects/[^/]+/api_keys(/[^/]+)?$"), "ProjectApiKey"),
    ("DELETE", re.compile(r"^/v1/organization/projects/[^/]+/api_keys/[^/]+$"), "ProjectApiKeyDeleteResponse"),
]


@cache
def _schemas() -> dict[str, Any]:
    return dict(json.loads(SPEC.read_text())["schemas"])


def validate(name: str, body: Any) -> None:
    root = {"components": {"schemas": _schemas()}}
    schema = {"$ref": f"#/components/schemas/{name}", "components": root["components"]}
    jsonschema.validate(body, schema, cls=jsonschema.Draft202012Validator)


def check_response(response: httpx2.Response) -> None:
    """Raise if a JSON answer strays from the spec: 2xx by route, every non-2xx as ErrorResponse."""
    response.read()
    ctype = response.headers.get("content-type", "")
    assert response.headers.get("x-request-id", "").startswith("req_"), "every answer carries x-request-id"
    if response.status_code >= 400:
        assert ctype.startswith("application/json"), f"error answered as {ctype}"
        validate("ErrorResponse", response.json())
        return
    if not ctype.startswith("application/json"):
        return
    method, path = response.request.method, response.request.url.path
    for m, pattern, name in ROUTES:
        if m == method and pattern.match(path):
            validate(name, response.json())
            return


def validating_http_client() -> httpx2.Client:
    return openai.DefaultHttpxClient(event_hooks={"response": [check_response]})


@dataclass
class ServerHandle:
    base_url: str
    origin: str
    services: Services
    settings: Settings
    loop: asyncio.AbstractEventLoop  # the server's event loop (see call)
    app: Any = None

    def call(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run `coro` on the server's own event loop: its stores' pools (psycopg's) are bound to that loop, and
        a second loop using them (asyncio.run in the test) fails as soon as it has to wait for a connection."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=60)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def start_server(settings: Settings, app_hook: Any = None) -> Iterator[ServerHandle]:
    port = free_port()
    settings = settings.model_copy(update={"host": "127.0.0.1", "port": port})
    app = create_app(settings)
    if app_hook is not None:
        app_hook(app)
    # The same server configuration as `inhouse serve`, connection limits included.
    config = uvicorn_config(app, settings, log_level="warning")
    server = uvicorn.Server(config)
    loops: list[asyncio.AbstractEventLoop] = []

    async def serve() -> None:
        loops.append(asyncio.get_running_loop())
        await server.serve()

    def run() -> None:  # uvicorn.Server.run, keeping hold of the loop
        with asyncio.Runner(loop_factory=config.get_loop_factory()) as runner:
            runner.run(serve())

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("server did not start")
        time.sleep(0.01)
    origin = f"http://127.0.0.1:{port}"
    try:
        yield ServerHandle(f"{origin}/v1", origin, app.state.services, settings, loops[0], app)
    finally:
        server.should_exit = True
        thread.join(timeout=20)
