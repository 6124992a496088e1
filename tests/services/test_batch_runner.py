"""The batch runner with a clock of the test's own: expiry keeps what finished and lists the rest as
batch_expired; a batch whose workers keep dying fails after bounded attempts; the sweeper removes the chunks
a crash left behind once their batch is over, and never those of an open batch."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from inhouse.bootstrap import build_services
from inhouse.records import Project
from inhouse.services.batch_lines import LineOutcome
from inhouse.services.blob_keys import chunk_key
from tests.api.test_embeddings import tiny_encoder, tiny_settings  # noqa: F401 - the session's tiny encoder


@contextlib.asynccontextmanager
async def opened(settings: Any) -> AsyncIterator[tuple[Any, Project]]:
    """The services of `settings`, open, and a project."""
    services = build_services(settings)
    await services.open()
    try:
        yield services, await services.meta.keys.get_or_create_project("p")
    finally:
        await services.close()


async def create(services: Any, project: Project, file_id: str) -> Any:
    return await services.batches.create(project, {"input_file_id": file_id, "endpoint": "/v1/embeddings",
                                                   "completion_window": "24h"})


async def _file(services: Any, project: Project, lines: list[dict[str, Any]]) -> str:
    data = "\n".join(json.dumps(x) for x in lines).encode()
    intake = services.files.begin_create(project.id, "batch")
    await intake.write(data)
    return str((await intake.finish("b.jsonl", "batch", None)).id)


def _lines(n: int) -> list[dict[str, Any]]:
    return [{"custom_id": f"r{i}", "method": "POST", "url": "/v1/embeddings",
             "body": {"model": "text-embedding-3-small", "input": f"text {i}"}} for i in range(n)]


async def _read(services: Any, file_id: str) -> list[dict[str, Any]]:
    data = b"".join([c async for c in services.blobs.read(f"files/{file_id}")])
    return [json.loads(x) for x in data.decode().splitlines()]


def test_expiry_keeps_what_finished(settings_factory: Any, tiny_encoder: Path) -> None:  # noqa: F811
    settings = tiny_settings(settings_factory, tiny_encoder)
    settings.batches.embedding_chunk_lines = 3

    async def body() -> None:
        async with opened(settings) as (services, project):
            batch = await create(services, project, await _file(services, project, _lines(10)))
            runner = services.batch_runner
            real_run = runner.lines.run
            chunks_run = 0

            async def run_then_expire(*args: Any) -> list[LineOutcome]:
                nonlocal chunks_run
                chunks_run += 1
                if chunks_run == 2:  # the window closes while the second chunk runs
                    runner.clock = lambda: batch.expires_at
                return await real_run(*args)

            runner.lines.run = run_then_expire  # type: ignore[method-assign]
            assert await runner.run_next()
            done = await services.meta.batches.get_batch(project.id, batch.id)
            assert done is not None and done.status == "expired" and done.expired_at == batch.expires_at
            assert (done.request_total, done.request_completed, done.request_failed) == (10, 6, 0)
            assert done.output_file_id and done.error_file_id
            assert [o["custom_id"] for o in await _read(services, done.output_file_id)] == [f"r{i}" for i in range(6)]
            expired = await _read(services, done.error_file_id)
            assert [e["custom_id"] for e in expired] == [f"r{i}" for i in range(6, 10)]
            assert all(e["response"] is None and e["error"]["code"] == "batch_expired" for e in expired)
            assert await services.blobs.list_keys("batches") == []

    asyncio.run(body())


def test_batch_that_keeps_losing_its_worker_fails(settings_factory: Any, tiny_encoder: Path) -> None:  # noqa: F811
    settings = tiny_settings(settings_factory, tiny_encoder)

    async def body() -> None:
        async with opened(settings) as (services, project):
            batch = await create(services, project, await _file(services, project, _lines(2)))
            now = int(time.time())
            for i in range(settings.fine_tuning.max_attempts - 1):  # workers that claim it and die
                assert (await services.meta.batches.claim_batch(f"ghost-{i}", now + 100 * i, 1)) is not None
            runner = services.batch_runner
            runner.clock = lambda: now + 1000

            async def crash(*args: Any) -> list[LineOutcome]:
                raise RuntimeError("the engine died")

            runner.lines.run = crash  # type: ignore[method-assign]
            assert await runner.run_next()
            done = await services.meta.batches.get_batch(project.id, batch.id)
            assert done is not None and done.status == "failed" and done.errors
            assert done.errors[0]["code"] == "batch_failed"
            # A batch whose every claim ended with its worker gone (no error to catch) fails at the next claim.
            again = await create(services, project, await _file(services, project, _lines(2)))
            for i in range(settings.fine_tuning.max_attempts):
                assert (await services.meta.batches.claim_batch(f"dead-{i}", now + 2000 + 100 * i, 1)) is not None
            runner.clock = lambda: now + 5000
            assert await runner.run_next()
            gone = await services.meta.batches.get_batch(project.id, again.id)
            assert gone is not None and gone.status == "failed" and gone.errors
            assert gone.errors[0]["code"] == "max_attempts_exceeded"

    asyncio.run(body())


def test_sweeper_removes_chunks_of_finished_batches_only(settings_factory: Any, tiny_encoder: Path) -> None:  # noqa: F811
    settings = tiny_settings(settings_factory, tiny_encoder)

    async def body() -> None:
        async with opened(settings) as (services, project):
            spec = {"input_file_id": await _file(services, project, _lines(1)), "endpoint": "/v1/embeddings",
                    "completion_window": "24h"}
            still_open = await services.batches.create(project, spec)
            over = await services.batches.create(project, spec)
            await services.batches.cancel(project, over.id)
            assert await services.batch_runner.run_next()  # the oldest open batch first: still_open completes
            assert await services.batch_runner.run_next()  # then the cancelled one is finished
            reopened = await services.batches.create(project, spec)
            for b in (over, reopened):
                writer = services.blobs.writer(chunk_key(b.id, 0, "out"))
                await writer.write(b"{}\n")
                await writer.commit()
                old = time.time() - 2 * settings.stale_temp_seconds
                os.utime(settings.data_dir / "blobs" / chunk_key(b.id, 0, "out"), (old, old))
            assert (await services.meta.batches.get_batch(project.id, still_open.id)).status == "completed"  # type: ignore[union-attr]
            assert (await services.meta.batches.get_batch(project.id, over.id)).status == "cancelled"  # type: ignore[union-attr]
            await services.maintenance.sweep()
            assert await services.blobs.list_keys("batches") == [chunk_key(reopened.id, 0, "out")]

    asyncio.run(body())


async def _raw_file(services: Any, project: Project, data: bytes) -> str:
    """A batch file stored as it is, past the upload's own JSONL check (as a file from an older server might be)."""
    from inhouse.ids import new_id

    file_id = new_id("file")
    writer = services.blobs.writer(f"files/{file_id}")
    await writer.write(data)
    size, sha = await writer.commit()
    await services.files.insert(services.files.build_record(file_id, project.id, size, sha, "b.jsonl", "batch", None))
    return file_id


def test_files_refused_for_their_size_count_or_json(settings_factory: Any, tiny_encoder: Path) -> None:  # noqa: F811
    settings = tiny_settings(settings_factory, tiny_encoder)
    settings.batches.max_requests = 3

    async def body() -> None:
        async with opened(settings) as (services, project):
            good = [json.dumps(x).encode() for x in _lines(2)]
            cases = {
                "invalid_json_line": (b"\n".join([good[0], b'{"custom_id": "x", nope', good[1]]), 2),
                "too_many_requests": (b"\n".join(json.dumps(x).encode() for x in _lines(5)), None),
            }
            for code, (data, line_no) in cases.items():
                batch = await create(services, project, await _raw_file(services, project, data))
                assert await services.batch_runner.run_next()
                done = await services.meta.batches.get_batch(project.id, batch.id)
                assert done is not None and done.status == "failed" and done.errors, code
                assert (done.errors[0]["code"], done.errors[0]["line"]) == (code, line_no)
                assert done.output_file_id is None and done.request_completed == 0
            services.settings.limits.max_batch_file_bytes = 10  # a file from before the limit was lowered
            batch = await create(services, project, await _raw_file(services, project, good[0]))
            assert await services.batch_runner.run_next()
            done = await services.meta.batches.get_batch(project.id, batch.id)
            assert done is not None and done.status == "failed" and done.errors
            assert done.errors[0]["code"] == "file_too_large"

    asyncio.run(body())


def test_input_deleted_mid_batch_fails_it_keeping_what_finished(settings_factory: Any,
                                                                 tiny_encoder: Path) -> None:  # noqa: F811
    settings = tiny_settings(settings_factory, tiny_encoder)
    settings.batches.embedding_chunk_lines = 2

    async def body() -> None:
        async with opened(settings) as (services, project):
            file_id = await _file(services, project, _lines(6))
            batch = await create(services, project, file_id)
            runner = services.batch_runner
            real_run = runner.lines.run

            calls = 0

            async def run_then_lose(*args: Any) -> list[LineOutcome]:
                nonlocal calls
                calls += 1
                if calls == 2:  # the first chunk is recorded; the owner deletes the input; this attempt dies
                    await services.files.delete(project.id, file_id)
                    raise RuntimeError("the worker died")
                return await real_run(*args)

            runner.lines.run = run_then_lose  # type: ignore[method-assign]
            assert await runner.run_next()
            assert (await services.meta.batches.get_batch(project.id, batch.id)).status == "in_progress"  # type: ignore[union-attr]
            assert await runner.run_next()  # the next attempt finds the input gone
            done = await services.meta.batches.get_batch(project.id, batch.id)
            assert done is not None and done.status == "failed" and done.errors
            assert done.errors[0]["code"] == "invalid_input_file"
            assert done.output_file_id and [o["custom_id"] for o in await _read(services, done.output_file_id)] == [
                "r0", "r1"]

    asyncio.run(body())
