"""The contract of fine-tuning jobs, their events and checkpoints: claimed by workers under leases."""

from __future__ import annotations

from typing import Any, Protocol

from inhouse.records import (
    FineTuningCheckpointRecord,
    FineTuningEventRecord,
    FineTuningJobRecord,
    ModelRecord,
    Page,
)


class JobStore(Protocol):
    """A job is active (`tables.JOB_ACTIVE`: claimable, and held by one worker at a time), paused (held by none
    until resumed) or terminal (`tables.JOB_TERMINAL`: for good). A worker holds a job under a lease (`lease_owner`
    until `lease_expires_at`); an active job with no live lease is claimable again (`attempts` counts the claims).
    Every worker write is guarded by the lease: once a worker lost its job (cancelled, paused, or claimed by another
    after its lease ran out), it can write nothing more. `fields` name columns of `tables.JOB_UPDATABLE`; any other
    is a bug (ValueError, nothing written)."""

    async def insert_job(self, job: FineTuningJobRecord, events: list[FineTuningEventRecord]) -> None:
        """Store a new job with its first events, in one transaction (a duplicate id or unknown project: the
        backend's integrity error)."""
        ...

    async def set_job_api_key(self, job_id: str, api_key_id: str) -> None:
        """Remember which key created the job: its training counts as that key's usage
        (`UsageStore.settle_training_usage`)."""
        ...

    async def get_job(self, project_id: str, job_id: str) -> FineTuningJobRecord | None:
        """The project's job; None if the project has none by that id."""
        ...

    async def get_job_any(self, job_id: str) -> FineTuningJobRecord | None:
        """The job whatever its project (for the worker, which acts for no caller); None if there is none."""
        ...

    async def list_jobs(
        self, project_id: str, *, after: str | None, limit: int, metadata: dict[str, str] | None,
        no_metadata: bool = False,
    ) -> Page[FineTuningJobRecord]:
        """The project's jobs, newest first; `after` is a job id of the same project (an unknown one gives an
        empty page). `metadata`: only jobs whose metadata holds every pair, keys and values compared literally
        (dots and quotes included); `no_metadata`: only jobs with none."""
        ...

    async def transition_job(
        self, project_id: str, job_id: str, *, allowed: tuple[str, ...], fields: dict[str, Any],
        event: FineTuningEventRecord | None,
    ) -> tuple[FineTuningJobRecord | None, bool]:
        """Set `fields` (and add `event`) only if the job's status is in `allowed`, tested and written in one
        transaction: of two racing transitions out of one state, exactly one happens. Answers the job as it is
        afterwards (None if the project has none by that id) and whether this call changed it. Ignores leases:
        this is the user's cancel or pause, which the holder learns at its next heartbeat."""
        ...

    async def claim_job(self, owner: str, now: int, lease_s: int) -> FineTuningJobRecord | None:
        """The oldest active job with no live lease (none, or one that ended before `now`), now leased to `owner`
        until now + lease_s with `attempts` + 1; None when there is none. Two claimers, in one process or many,
        never get the same job."""
        ...

    async def heartbeat_job(self, job_id: str, owner: str, now: int, lease_s: int,
                            fields: dict[str, Any] | None = None) -> str | None:
        """Renew `owner`'s lease to now + lease_s, setting `fields` along, while the job is active; answers its
        status (one that is not active, e.g. cancelled, tells the worker to stop: nothing is renewed then), or None
        when `owner` does not hold the lease (a pause clears it). A lease that ran out but was not claimed by another
        is still `owner`'s."""
        ...

    async def worker_update(self, job_id: str, owner: str, *, fields: dict[str, Any] | None = None,
                            events: list[FineTuningEventRecord] | None = None) -> bool:
        """Set `fields` and add `events` if `owner` holds the lease and the job is not terminal, in one
        transaction; False, writing nothing, otherwise."""
        ...

    async def release_job(self, job_id: str, owner: str) -> None:
        """Give `owner`'s lease up (another worker may claim the job at once); nothing if `owner` does not hold
        it."""
        ...

    async def finish_job_success(self, job_id: str, owner: str, *, fields: dict[str, Any], model: ModelRecord,
                                 events: list[FineTuningEventRecord]) -> bool:
        """Insert the fine-tuned model's row (its artifact already durable), set `fields` (the succeeded state),
        add `events` and clear the lease, in one transaction: the model appears in /v1/models exactly when the job
        succeeds. False, writing nothing, if `owner` does not hold the lease or the job is terminal."""
        ...

    async def list_events(self, job_id: str, *, after: str | None, limit: int) -> Page[FineTuningEventRecord]:
        """The job's events, newest first; `after` is an event id of the same job."""
        ...

    async def last_metric_step(self, job_id: str) -> int:
        """The highest `step` among the job's metrics events; 0 when it has none (a resumed run logs on from
        there, so every step is logged once)."""
        ...

    async def add_checkpoint(self, owner: str, checkpoint: FineTuningCheckpointRecord,
                             event: FineTuningEventRecord, keep: int) -> list[str] | None:
        """Record a checkpoint (its bytes already durable) with its event, and drop the job's oldest checkpoints
        beyond the newest `keep`, in one transaction; answers the artifact keys of the dropped ones (their bytes
        are the caller's to delete, after this), or None, writing nothing, when `owner` lost the lease."""
        ...

    async def list_checkpoints(self, job_id: str, *, after: str | None,
                               limit: int) -> Page[FineTuningCheckpointRecord]:
        """The job's checkpoints, newest first; `after` is a checkpoint id of the same job."""
        ...

    async def checkpoint_by_name(self, project_id: str, name: str) -> FineTuningCheckpointRecord | None:
        """The checkpoint whose `fine_tuned_model_checkpoint` is `name`, if its job is the project's; else None."""
        ...

    async def referenced_artifacts(self) -> set[str]:
        """The artifact keys every checkpoint and every model row names, read at one moment: a checkpoint blob
        not among them (and older than a write can take) is an orphan the sweeper may delete."""
        ...
