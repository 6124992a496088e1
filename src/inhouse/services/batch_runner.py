"""The worker side of batches: claim one under a lease, check its input file line by line, run its lines chunk
by chunk (each chunk's output and error lines durable in blobs before the row that records it, so a resumed
batch skips what finished and writes no line twice), then assemble the output and error files.

States: validating -> in_progress -> finalizing -> completed; failed (bad input file); cancelling -> cancelled
and expired (both keep what finished). Cancel reaches a running batch through its heartbeat."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from inhouse import observability
from inhouse.config import Settings
from inhouse.ids import new_id, now
from inhouse.records import BatchChunk, BatchRecord, BatchStatus, FileRecord
from inhouse.services.batch_lines import BatchLines, output_lines, unrun_line
from inhouse.services.blob_keys import BATCHES, chunk_batch_id, chunk_key, file_blob_key
from inhouse.services.checks import LineSplitter, LineTooLong, json_dict
from inhouse.services.files import ExpiresAfter, FilesService
from inhouse.services.usage import UsageService
from inhouse.services.usage_report import BATCH
from inhouse.storage.base import BlobStore, MetadataStore
from inhouse.storage.tables import (
    BATCH_CANCELLED,
    BATCH_CANCELLING,
    BATCH_COMPLETED,
    BATCH_EXPIRED,
    BATCH_FAILED,
    BATCH_FINALIZING,
    BATCH_IN_PROGRESS,
    BATCH_VALIDATING,
)

log = logging.getLogger(__name__)
_BOM = b"\xef\xbb\xbf"


def _custom_id(raw: bytes) -> str | None:
    """A line's custom_id, or None when it has none (a batch that expired before its file was checked)."""
    try:
        request = json.loads(raw, object_pairs_hook=json_dict)
    except (ValueError, RecursionError):
        return None
    custom_id = request.get("custom_id") if isinstance(request, dict) else None
    return custom_id if isinstance(custom_id, str) else None


@dataclass
class _Held:
    """A batch this worker runs; the heartbeat sets `stop` when it is cancelled or the lease is lost."""

    batch: BatchRecord
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    status: str | None = None  # as the last heartbeat saw it; None: the lease is lost


@dataclass
class _Scan:
    total: int = 0
    model: str | None = None
    errors: list[dict[str, Any]] = field(default_factory=list)
    error_count: int = 0


class BatchRunner:
    def __init__(self, settings: Settings, meta: MetadataStore, blobs: BlobStore, files: FilesService,
                 lines: BatchLines, usage: UsageService, clock: Callable[[], int] = now) -> None:
        self.settings = settings
        self.cfg = settings.batches
        self.jobs = settings.fine_tuning  # leases, heartbeats and attempts as for fine-tuning jobs
        self.meta = meta
        self.blobs = blobs
        self.files = files
        self.lines = lines
        self.usage = usage
        self.clock = clock
        self.owner = f"worker-{secrets.token_hex(6)}"

    # -- the lease -----------------------------------------------------------------------------------------
    async def run_next(self) -> bool:
        """Claim and run one batch; False when none was waiting."""
        batch = await self.meta.batches.claim_batch(self.owner, self.clock(), self.jobs.lease_seconds)
        if batch is None:
            return False
        held = _Held(batch, status=batch.status)
        beat = asyncio.create_task(self._heartbeat(held))
        try:
            await self._run(held)
        except Exception:
            log.exception("batch %s failed", batch.id)
            if batch.attempts >= self.jobs.max_attempts:
                await self._finish(held, BATCH_FAILED, errors=[{
                    "code": "batch_failed", "line": None, "param": None,
                    "message": "The batch failed with an internal error; the server log has the details."}])
            else:
                await self.meta.batches.release_batch(batch.id, self.owner)  # another attempt resumes it
        finally:
            held.stop.set()
            beat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await beat
        return True

    async def _heartbeat(self, held: _Held) -> None:
        while not held.stop.is_set():
            await asyncio.sleep(self.jobs.heartbeat_seconds)
            held.status = await self.meta.batches.heartbeat_batch(held.batch.id, self.owner, self.clock(),
                                                                  self.jobs.lease_seconds)
            if held.status in (None, BATCH_CANCELLING):
                held.stop.set()

    # -- one batch -----------------------------------------------------------------------------------------
    async def _run(self, held: _Held) -> None:
        batch = held.batch
        if batch.attempts > self.jobs.max_attempts and batch.status != BATCH_CANCELLING:
            # Every earlier claim ended with its worker gone (a line that kills the process, say): stop here.
            await self._finish(held, BATCH_FAILED, errors=[{
                "code": "max_attempts_exceeded", "line": None, "param": None,
                "message": f"The batch was interrupted {batch.attempts - 1} times and will not be retried."}])
            return
        if batch.status == BATCH_CANCELLING:
            await self._finish(held, BATCH_CANCELLED)
            return
        if batch.status == BATCH_FINALIZING:
            await self._finish(held, BATCH_COMPLETED)
            return
        if self.clock() >= batch.expires_at:
            await self._finish(held, BATCH_EXPIRED)
            return
        if batch.status == BATCH_VALIDATING:
            scan = await self._scan(batch)
            if scan.errors:
                await self._finish(held, BATCH_FAILED, errors=scan.errors)
                return
            fields = {"status": BATCH_IN_PROGRESS, "in_progress_at": self.clock(), "request_total": scan.total,
                      "model": scan.model}
            if not await self.meta.batches.batch_update(batch.id, self.owner, fields, allowed=(BATCH_VALIDATING,)):
                await self.meta.batches.release_batch(batch.id, self.owner)  # cancelled meanwhile: finished by a claim
                return
            batch = held.batch = await self._reload(batch)
        if await self.meta.files.get_file(batch.project_id, batch.input_file_id, self.clock()) is None:
            await self._finish(held, BATCH_FAILED, errors=[{
                "code": "invalid_input_file", "line": None, "param": "input_file_id",
                "message": f"The input file {batch.input_file_id} was deleted while the batch ran."}])
            return
        done = {c.index for c in await self.meta.batches.batch_chunks(batch.id)}
        expired = False
        async with contextlib.aclosing(self._chunks(batch)) as chunks:
            async for index, raw in chunks:
                if index in done:
                    continue
                if held.stop.is_set():
                    break
                if self.clock() >= batch.expires_at:
                    expired = True
                    break
                if not await self._run_chunk(batch, index, raw):
                    return  # the lease is lost: whoever holds the batch now goes on
        if held.status is None:
            return
        await self._finish(held, BATCH_EXPIRED if expired else BATCH_CANCELLED if held.status == BATCH_CANCELLING
                           else BATCH_COMPLETED)

    async def _reload(self, batch: BatchRecord) -> BatchRecord:
        fresh = await self.meta.batches.get_batch_any(batch.id)
        assert fresh is not None
        return fresh

    async def _run_chunk(self, batch: BatchRecord, index: int, raw: list[bytes]) -> bool:
        """A chunk's lines run, their answers made durable, then the chunk recorded (counts, tokens, usage);
        False when the lease is lost."""
        requests = [json.loads(line, object_pairs_hook=json_dict) for line in raw]
        outcomes = await self.lines.run(batch.project_id, batch.endpoint, [r["body"] for r in requests])
        printed = output_lines([r["custom_id"] for r in requests], outcomes)
        out = [text for text, outcome in zip(printed, outcomes, strict=True) if outcome.ok]
        err = [text for text, outcome in zip(printed, outcomes, strict=True) if not outcome.ok]
        completed, failed = len(out), len(err)
        input_tokens = sum(o.input_tokens for o in outcomes)
        output_tokens = sum(o.output_tokens for o in outcomes)
        for kind, lines in (("out", out), ("err", err)):
            writer = self.blobs.writer(chunk_key(batch.id, index, kind))
            await writer.write("".join(line + "\n" for line in lines).encode())
            await writer.commit()  # durable before the row that records the chunk
        ok = await self.meta.batches.add_batch_chunk(batch.id, self.owner, BatchChunk(
            index, completed, failed, input_tokens, output_tokens))
        if ok:  # each answered line is usage of the key that created the batch, as a batch's line
            for outcome in outcomes:
                if outcome.ok:
                    await self.usage.record(batch.project_id, batch.api_key_id, batch.model or "",
                                            BATCH + batch.endpoint, outcome.input_tokens, outcome.output_tokens,
                                            outcome.images)
            observability.BATCH_LINES.labels(batch.endpoint, "completed").inc(completed)
            observability.BATCH_LINES.labels(batch.endpoint, "failed").inc(failed)
        return ok

    # -- reading the input file ------------------------------------------------------------------------------
    async def _raw_lines(self, batch: BatchRecord) -> AsyncIterator[bytes]:
        """The input file's non-blank lines (without the BOM of a first line)."""
        splitter = LineSplitter(self.settings.limits.max_jsonl_line_bytes)
        first = True
        async for data in self.blobs.read(file_blob_key(batch.input_file_id)):
            if first and data:
                data, first = data.removeprefix(_BOM), False
            for line in splitter.feed(data):
                if line.strip():
                    yield line
        for line in splitter.close():
            if line.strip():
                yield line

    def _chunk_lines(self, endpoint: str) -> int:
        if endpoint == "/v1/embeddings":
            return self.cfg.embedding_chunk_lines
        if endpoint == "/v1/images/generations":
            return self.cfg.image_chunk_lines
        return self.cfg.chat_chunk_lines

    async def _chunks(self, batch: BatchRecord) -> AsyncGenerator[tuple[int, list[bytes]]]:
        """Consecutive lines, at most the endpoint's chunk of lines and `chunk_bytes` of them (what a chunk
        holds in memory: its inputs, their tokens, their answers). The cut depends on the file alone, so every
        attempt cuts the same chunks."""
        size = max(1, self._chunk_lines(batch.endpoint))
        chunk: list[bytes] = []
        held = 0
        index = 0
        async for line in self._raw_lines(batch):
            chunk.append(line)
            held += len(line)
            if len(chunk) == size or held >= self.cfg.chunk_bytes:
                yield index, chunk
                chunk, held, index = [], 0, index + 1
        if chunk:
            yield index, chunk

    async def _scan(self, batch: BatchRecord) -> _Scan:
        """Every line checked as OpenAI checks a batch file; errors carry their line number."""
        scan = _Scan()
        f = await self.meta.files.get_file(batch.project_id, batch.input_file_id, self.clock())

        def error(code: str, message: str, line: int | None = None, param: str | None = None) -> None:
            scan.error_count += 1
            if len(scan.errors) < self.cfg.max_listed_errors:
                scan.errors.append({"code": code, "message": message, "param": param, "line": line})

        if f is None:
            error("invalid_input_file", f"The input file {batch.input_file_id} no longer exists.",
                  param="input_file_id")
            return scan
        cap = self.settings.limits.max_batch_file_bytes
        if f.bytes > cap:
            error("file_too_large", f"The input file has {f.bytes} bytes; a batch takes at most {cap}.",
                  param="input_file_id")
            return scan
        seen: set[str] = set()
        models: set[str] = set()
        number = 0
        try:
            async for raw in self._raw_lines(batch):
                number += 1
                if number > self.cfg.max_requests:
                    error("too_many_requests", f"The input file has more than {self.cfg.max_requests} requests; "
                          "split it into several batches.")
                    break
                self._check_line(batch, raw, number, seen, models, error)
        except LineTooLong:
            error("invalid_json_line", f"Line {number + 1} is longer than "
                  f"{self.settings.limits.max_jsonl_line_bytes} bytes.", number + 1)
        if number == 0 and not scan.errors:
            error("empty_file", "The input file has no requests.", param="input_file_id")
        if len(models) > 1:
            error("mixed_models", f"The requests name {len(models)} different models "
                  f"({', '.join(sorted(models)[:5])}); a batch runs one model.", None, "body.model")
        scan.total = number
        scan.model = next(iter(models)) if len(models) == 1 else None
        return scan

    @staticmethod
    def _check_line(batch: BatchRecord, raw: bytes, number: int, seen: set[str], models: set[str],
                    error: Callable[..., None]) -> None:
        try:
            request = json.loads(raw, object_pairs_hook=json_dict)
        except (ValueError, RecursionError):
            error("invalid_json_line", f"Line {number} is not valid JSON.", number)
            return
        if not isinstance(request, dict):
            error("invalid_json_line", f"Line {number} is not a JSON object.", number)
            return
        custom_id = request.get("custom_id")
        if not isinstance(custom_id, str) or not custom_id:
            error("missing_custom_id", f"Line {number} has no 'custom_id' (a non-empty string).", number,
                  "custom_id")
        elif len(custom_id) > 512:
            error("invalid_custom_id", f"Line {number}: 'custom_id' is longer than 512 characters.", number,
                  "custom_id")
        elif custom_id in seen:
            error("duplicate_custom_id", f"Line {number}: the custom_id '{custom_id}' is used by an earlier "
                  "line; each request needs its own.", number, "custom_id")
        else:
            seen.add(custom_id)
        if request.get("method") != "POST":
            error("invalid_method", f"Line {number}: 'method' must be 'POST'.", number, "method")
        if request.get("url") != batch.endpoint:
            error("invalid_url", f"Line {number}: 'url' is {request.get('url')!r}, but the batch's endpoint is "
                  f"{batch.endpoint!r}.", number, "url")
        body = request.get("body")
        if not isinstance(body, dict):
            error("missing_body", f"Line {number} has no 'body' object.", number, "body")
            return
        model = body.get("model", "dall-e-2" if batch.endpoint == "/v1/images/generations" else None)
        if isinstance(model, str):
            models.add(model)

    # -- the end ---------------------------------------------------------------------------------------------
    async def _finish(self, held: _Held, status: BatchStatus, errors: list[dict[str, Any]] | None = None) -> None:
        """Move the batch to its terminal `status`, with the output and error files of what ran."""
        batch = held.batch
        at = self.clock()
        if status == BATCH_COMPLETED and batch.status != BATCH_FINALIZING and not await self.meta.batches.batch_update(
                batch.id, self.owner, {"status": BATCH_FINALIZING, "finalizing_at": at}, allowed=(BATCH_IN_PROGRESS,)):
            await self.meta.batches.release_batch(batch.id, self.owner)  # cancelled at the last moment: a claim ends it
            return
        files: list[FileRecord] = []
        fields: dict[str, Any] = {"status": status, f"{status}_at": at}
        if errors:
            fields["errors"] = errors
        # Whatever finished is kept, however the batch ends (a batch that failed its checks ran nothing).
        chunks = [c.index for c in await self.meta.batches.batch_chunks(batch.id)]
        out = await self._assemble(batch, chunks, "out")
        err = await self._assemble(batch, chunks, "err", unrun=(
            "batch_expired", "This request could not be executed before the completion window expired.")
            if status == BATCH_EXPIRED else None)
        for kind, made in (("output", out), ("error", err)):
            if made is not None:
                files.append(made)
                fields[f"{kind}_file_id"] = made.id
        if not await self.meta.batches.finish_batch(batch.id, self.owner, fields=fields, files=files):
            for f in files:
                await self.blobs.delete(file_blob_key(f.id))
            return
        observability.BATCH_TRANSITIONS.labels(status).inc()
        for key in await self.blobs.list_keys(BATCHES):
            if chunk_batch_id(key) == batch.id:
                await self.blobs.delete(key)

    async def _assemble(self, batch: BatchRecord, indexes: list[int], kind: str,
                        unrun: tuple[str, str] | None = None) -> FileRecord | None:
        """One file of every recorded chunk's `kind` lines in input order (plus, when `unrun` is given, an
        error line for each request of a chunk never run); None when it would be empty."""
        file_id = new_id("file")
        writer = self.blobs.writer(file_blob_key(file_id))
        wrote = 0
        try:
            for index in indexes:
                async for data in self.blobs.read(chunk_key(batch.id, index, kind)):
                    await writer.write(data)
                    wrote += len(data)
            if unrun is not None:
                recorded = set(indexes)
                async with contextlib.aclosing(self._chunks(batch)) as chunks:
                    async for index, raw in chunks:
                        if index in recorded:
                            continue
                        text = "".join(unrun_line(custom_id, *unrun) + "\n" for custom_id in map(_custom_id, raw)
                                       if custom_id is not None)
                        await writer.write(text.encode())
                        wrote += len(text)
            if not wrote:
                await writer.abort()
                return None
            size, sha256 = await writer.commit()
        except BaseException:
            await writer.abort()
            raise
        expires = batch.output_expires_after
        name = f"{batch.id}_{'output' if kind == 'out' else 'error'}.jsonl"
        return self.files.build_record(file_id, batch.project_id, size, sha256, name, "batch_output",
                                       ExpiresAfter(**expires) if expires else None)
