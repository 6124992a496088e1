"""Plain records that the stores keep and every layer passes along (a leaf: it imports nothing of ours); no
behaviour, no HTTP."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Generic, Literal, TypeVar

T = TypeVar("T")

# The states a fine-tuning job and a batch move through; storage/tables.py names each one and groups them.
JobStatus = Literal["validating_files", "queued", "running", "paused", "succeeded", "failed", "cancelled"]
BatchStatus = Literal["validating", "in_progress", "finalizing", "cancelling", "completed", "failed", "cancelled",
                      "expired"]


@dataclass(frozen=True, slots=True)
class Project:
    id: str
    name: str
    created_at: int
    rpm: int | None = None  # requests per minute for all its keys together; None is unlimited
    tpm: int | None = None  # tokens per minute for all its keys together; None is unlimited


@dataclass(frozen=True, slots=True)
class ApiKey:
    id: str
    project_id: str
    key_hash: str
    name: str
    created_at: int
    revoked_at: int | None
    rpm: int | None = None  # requests per minute; None is unlimited
    tpm: int | None = None  # tokens per minute; None is unlimited
    admin: bool = False  # may list projects and keys, and read every project's usage
    last_used_at: int | None = None  # to the usage flush (about a second), not to the request


@dataclass(frozen=True, slots=True)
class FileRecord:
    id: str
    project_id: str
    bytes: int
    created_at: int
    expires_at: int | None
    filename: str
    purpose: str
    status: str
    status_details: str | None
    sha256: str


@dataclass(frozen=True, slots=True)
class UploadRecord:
    id: str
    project_id: str
    filename: str
    purpose: str
    bytes: int
    mime_type: str
    status: str
    created_at: int
    expires_at: int
    file_expires_after: int | None
    file_id: str | None


@dataclass(frozen=True, slots=True)
class UploadPartRecord:
    id: str
    upload_id: str
    created_at: int
    bytes: int
    sha256: str


@dataclass(frozen=True, slots=True)
class ModelRecord:
    """A model created inside Inhouse (a fine-tune), owned by one project."""

    id: str
    project_id: str
    created: int
    owned_by: str
    kind: str
    base_model: str
    artifact_key: str


@dataclass(frozen=True, slots=True)
class IdempotencyRecord:
    scope: str
    key: str
    request_hash: str
    created_at: int
    status_code: int | None
    content_type: str | None
    body: bytes | None


@dataclass(frozen=True, slots=True)
class FineTuningJobRecord:
    id: str
    project_id: str
    created_at: int
    model: str
    base_model: str
    parent_model: str | None
    training_file: str
    validation_file: str | None
    suffix: str | None
    seed: int
    method: dict[str, Any]
    hyperparameters: dict[str, Any]
    status: JobStatus
    error: dict[str, Any] | None
    fine_tuned_model: str | None
    finished_at: int | None
    trained_tokens: int | None
    integrations: list[Any] | None
    metadata: dict[str, str] | None
    result_files: list[str]
    estimated_finish: int | None
    attempts: int
    lease_owner: str | None
    lease_expires_at: int | None


@dataclass(frozen=True, slots=True)
class FineTuningEventRecord:
    id: str
    job_id: str
    created_at: int
    level: str
    message: str
    type: str
    data: dict[str, Any] | None


@dataclass(frozen=True, slots=True)
class FineTuningCheckpointRecord:
    id: str
    job_id: str
    created_at: int
    step_number: int
    epoch: int
    metrics: dict[str, Any]
    fine_tuned_model_checkpoint: str
    artifact_key: str


@dataclass(frozen=True, slots=True)
class RateUsage:
    """One series of a rate limit's use: what one process's bucket for (owner, kind) has taken in all since the
    series began (units; settled estimates lower it), under a limit of `per_minute`."""

    series: str
    owner: str
    kind: str
    per_minute: int
    used: float


@dataclass(frozen=True, slots=True)
class UsageRecord:
    """Counts of one minute, project, key (None: open mode), model name as called, and endpoint (route template).

    Written as increments: storing a row adds its counts to whatever that minute already holds."""

    minute: int
    project_id: str
    api_key_id: str | None
    model: str
    endpoint: str
    requests: int
    input_tokens: int = 0
    output_tokens: int = 0
    images: int = 0
    trained_tokens: int = 0


@dataclass(frozen=True, slots=True)
class UsageTotal:
    """Sums over one time bucket (its start) and one group; a field not grouped by is None."""

    start: int
    project_id: str | None
    api_key_id: str | None
    model: str | None
    endpoint: str | None
    requests: int
    input_tokens: int
    output_tokens: int
    images: int
    trained_tokens: int


@dataclass(frozen=True, slots=True)
class BatchRecord:
    """A batch: its request, lifecycle timestamps, counts and lease. Counts and usage move only with the
    chunks recorded (BatchChunk), in the same transaction."""

    id: str
    project_id: str
    endpoint: str
    input_file_id: str
    completion_window: str
    status: BatchStatus
    created_at: int
    expires_at: int
    metadata: dict[str, str] | None = None
    output_expires_after: dict[str, Any] | None = None
    api_key_id: str | None = None
    model: str | None = None
    in_progress_at: int | None = None
    finalizing_at: int | None = None
    completed_at: int | None = None
    failed_at: int | None = None
    expired_at: int | None = None
    cancelling_at: int | None = None
    cancelled_at: int | None = None
    output_file_id: str | None = None
    error_file_id: str | None = None
    errors: list[dict[str, Any]] | None = None
    request_total: int = 0
    request_completed: int = 0
    request_failed: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    attempts: int = 0
    lease_owner: str | None = None
    lease_expires_at: int | None = None


@dataclass(frozen=True, slots=True)
class BatchChunk:
    """One run of consecutive input lines whose output and error lines are durable in blobs."""

    index: int
    completed: int
    failed: int
    input_tokens: int
    output_tokens: int


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    items: list[T]
    has_more: bool
