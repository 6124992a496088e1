"""Batches, the caller's side: create (checked as OpenAI checks), list, retrieve and cancel. The worker's side
is services/batch_runner.py."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from inhouse.errors import InvalidRequest, NotFound
from inhouse.ids import new_id, now
from inhouse.records import BatchRecord, Page, Project
from inhouse.services.fine_tuning import check_metadata
from inhouse.storage.base import MetadataStore
from inhouse.storage.tables import BATCH_CANCELLING, BATCH_IN_PROGRESS, BATCH_VALIDATING

# The endpoints a batch may target here (OpenAI's list also has /v1/responses, /v1/moderations,
# /v1/images/edits and /v1/videos, which this server does not batch).
ENDPOINTS = ("/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/images/generations")
WINDOW_SECONDS = {"24h": 24 * 3600}
EXPIRY_SECONDS = (3600, 30 * 24 * 3600)  # output_expires_after.seconds, as the spec bounds it


def _not_found(batch_id: str) -> NotFound:
    return NotFound(f"No batch found with id '{batch_id}'.", param="batch_id")


def check_expires_after(value: Any) -> dict[str, Any] | None:
    if value is None:
        return None
    lo, hi = EXPIRY_SECONDS
    if not isinstance(value, dict) or value.get("anchor") != "created_at":
        raise InvalidRequest("output_expires_after.anchor must be 'created_at'.", param="output_expires_after.anchor")
    seconds = value.get("seconds")
    if isinstance(seconds, bool) or not isinstance(seconds, int) or not lo <= seconds <= hi:
        raise InvalidRequest(f"output_expires_after.seconds must be an integer between {lo} and {hi}.",
                             param="output_expires_after.seconds")
    return {"anchor": "created_at", "seconds": seconds}


class BatchesService:
    def __init__(self, meta: MetadataStore, clock: Callable[[], int] = now) -> None:
        self.meta = meta
        self.clock = clock

    async def create(self, project: Project, body: dict[str, Any], api_key_id: str | None = None) -> BatchRecord:
        """A new batch in `validating`; its lines are checked by the worker that claims it (the file may be
        200 MB), so a bad file fails the batch with per-line errors rather than this request."""
        for name in ("input_file_id", "endpoint", "completion_window"):
            if not isinstance(body.get(name), str) or not body[name]:
                raise InvalidRequest(f"Missing required parameter: '{name}'.", param=name)
        endpoint, window, file_id = body["endpoint"], body["completion_window"], body["input_file_id"]
        if endpoint not in ENDPOINTS:
            raise InvalidRequest(f"Invalid value for 'endpoint': '{endpoint}'. This server batches "
                                 f"{', '.join(ENDPOINTS)}.", param="endpoint", code="invalid_value")
        if window not in WINDOW_SECONDS:
            raise InvalidRequest(f"Invalid value for 'completion_window': '{window}'. Supported values are: "
                                 "'24h'.", param="completion_window", code="invalid_value")
        metadata = check_metadata(body.get("metadata"))
        expires_after = check_expires_after(body.get("output_expires_after"))
        created = self.clock()
        f = await self.meta.files.get_file(project.id, file_id, created)
        if f is None:
            raise InvalidRequest(f"Invalid 'input_file_id': '{file_id}'. No such file.", param="input_file_id",
                                 code="invalid_file")
        if f.purpose != "batch":
            raise InvalidRequest(f"File {file_id} has purpose {f.purpose!r}; a batch needs 'batch'.",
                                 param="input_file_id", code="invalid_file_purpose")
        batch = BatchRecord(
            id=new_id("batch"), project_id=project.id, endpoint=endpoint, input_file_id=file_id,
            completion_window=window, status=BATCH_VALIDATING, created_at=created,
            expires_at=created + WINDOW_SECONDS[window], metadata=metadata, output_expires_after=expires_after,
            api_key_id=api_key_id)
        await self.meta.batches.insert_batch(batch)
        return batch

    async def retrieve(self, project: Project, batch_id: str) -> BatchRecord:
        batch = await self.meta.batches.get_batch(project.id, batch_id)
        if batch is None:
            raise _not_found(batch_id)
        return batch

    async def list(self, project: Project, *, after: str | None, limit: int) -> Page[BatchRecord]:
        if not 1 <= limit <= 100:
            raise InvalidRequest("limit must be between 1 and 100.", param="limit")
        return await self.meta.batches.list_batches(project.id, after=after, limit=limit)

    async def cancel(self, project: Project, batch_id: str) -> BatchRecord:
        """`cancelling` at once; the worker that holds (or next claims) the batch stops, writes what finished
        and moves it to `cancelled`. Cancelling a cancelling batch answers it as it is."""
        batch, changed = await self.meta.batches.transition_batch(
            project.id, batch_id, allowed=(BATCH_VALIDATING, BATCH_IN_PROGRESS),
            fields={"status": BATCH_CANCELLING, "cancelling_at": self.clock()})
        if batch is None:
            raise _not_found(batch_id)
        if not changed and batch.status != BATCH_CANCELLING:
            raise InvalidRequest(f"Cannot cancel a batch with status '{batch.status}'.", param="batch_id",
                                 code="invalid_state")
        return batch
