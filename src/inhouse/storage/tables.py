"""The tables every SQL backend shares: column lists, JSON and updatable columns, and the job and batch states
that leases guard, defined once (the migrations create these tables, per dialect)."""

from __future__ import annotations

import json
from dataclasses import fields as dataclass_fields
from typing import Any

from inhouse.records import BatchRecord, BatchStatus, JobStatus

# files, uploads, keys, projects, models
FILE_COLS = "id, project_id, bytes, created_at, expires_at, filename, purpose, status, status_details, sha256"
UPLOAD_COLS = (
    "id, project_id, filename, purpose, bytes, mime_type, status, created_at, expires_at, "
    "file_expires_after, file_id"
)
KEY_COLS = "id, project_id, key_hash, name, created_at, revoked_at, rpm, tpm, admin, last_used_at"
PROJECT_COLS = "id, name, created_at, rpm, tpm"
MODEL_COLS = "id, project_id, created, owned_by, kind, base_model, artifact_key"

# fine-tuning jobs, events, checkpoints; a worker may hold a job in any state but the terminal ones
JOB_COLS = (
    "id, project_id, created_at, model, base_model, parent_model, training_file, validation_file, suffix, seed, "
    "method, hyperparameters, status, error, fine_tuned_model, finished_at, trained_tokens, integrations, "
    "metadata, result_files, estimated_finish, attempts, lease_owner, lease_expires_at"
)
JOB_JSON = {"method", "hyperparameters", "error", "integrations", "metadata", "result_files"}
JOB_UPDATABLE = {
    "status", "error", "fine_tuned_model", "finished_at", "trained_tokens", "result_files", "estimated_finish",
    "hyperparameters", "lease_owner", "lease_expires_at", "attempts",
}
JOB_VALIDATING_FILES: JobStatus = "validating_files"
JOB_QUEUED: JobStatus = "queued"
JOB_RUNNING: JobStatus = "running"
JOB_PAUSED: JobStatus = "paused"  # held by no worker until resumed
JOB_SUCCEEDED: JobStatus = "succeeded"
JOB_FAILED: JobStatus = "failed"
JOB_CANCELLED: JobStatus = "cancelled"
JOB_ACTIVE: tuple[JobStatus, ...] = (JOB_VALIDATING_FILES, JOB_QUEUED, JOB_RUNNING)  # claimable, and held by a worker
JOB_TERMINAL: tuple[JobStatus, ...] = (JOB_SUCCEEDED, JOB_FAILED, JOB_CANCELLED)
JOB_ACTIVE_SQL = f"status IN ({', '.join(repr(s) for s in JOB_ACTIVE)})"
EVENT_COLS = "id, job_id, created_at, level, message, type, data"
CKPT_COLS = "id, job_id, created_at, step_number, epoch, metrics, fine_tuned_model_checkpoint, artifact_key"

# batches; a worker may hold a batch in the open states, the others are terminal
BATCH_NAMES = [f.name for f in dataclass_fields(BatchRecord)]
BATCH_COLS = ", ".join(BATCH_NAMES)
BATCH_JSON = {"metadata", "output_expires_after", "errors"}
BATCH_UPDATABLE = {
    "status", "model", "in_progress_at", "finalizing_at", "completed_at", "failed_at", "expired_at",
    "cancelling_at", "cancelled_at", "output_file_id", "error_file_id", "errors", "request_total",
    "lease_owner", "lease_expires_at",
}
BATCH_VALIDATING: BatchStatus = "validating"
BATCH_IN_PROGRESS: BatchStatus = "in_progress"
BATCH_FINALIZING: BatchStatus = "finalizing"
BATCH_CANCELLING: BatchStatus = "cancelling"
BATCH_COMPLETED: BatchStatus = "completed"
BATCH_FAILED: BatchStatus = "failed"
BATCH_CANCELLED: BatchStatus = "cancelled"
BATCH_EXPIRED: BatchStatus = "expired"
BATCH_OPEN: tuple[BatchStatus, ...] = (BATCH_VALIDATING, BATCH_IN_PROGRESS, BATCH_FINALIZING, BATCH_CANCELLING)

# usage
FINE_TUNING_ENDPOINT = "/v1/fine_tuning/jobs"
USAGE_GROUPABLE = ("project_id", "api_key_id", "model", "endpoint")
NO_KEY = ""  # the key column of open-mode usage (part of the primary key, so never NULL)


def dump_json(value: Any) -> str | None:
    return None if value is None else json.dumps(value, separators=(",", ":"))


def update_sql(table: str, row_id: str, fields: dict[str, Any], *, updatable: set[str], json_fields: set[str],
               mark: str) -> tuple[str, list[Any]]:
    """The UPDATE of one row's `fields` (JSON ones dumped) with `mark` as the driver's placeholder; a field
    outside `updatable` is a bug: ValueError. `fields` must not be empty."""
    bad = set(fields) - updatable
    if bad:
        raise ValueError(f"not updatable: {bad}")
    cols = ", ".join(f"{k} = {mark}" for k in fields)
    values = [dump_json(v) if k in json_fields else v for k, v in fields.items()]
    return f"UPDATE {table} SET {cols} WHERE id = {mark}", [*values, row_id]
