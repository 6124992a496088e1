"""The contract of usage: counts per minute, project, key, model and endpoint, and their sums per bucket."""

from __future__ import annotations

from typing import Protocol

from inhouse.records import RateUsage, UsageRecord, UsageTotal


class UsageStore(Protocol):
    """Usage rows are increments written in batches by each process; each is counted exactly once."""

    async def add_usage(self, rows: list[UsageRecord], last_used: dict[str, int]) -> None:
        """Add each row's counts to the stored row of its (minute, project, key, model, endpoint), creating it,
        and raise each key's `last_used_at` to the time given (never lower it). One transaction: all or nothing,
        so a failed call may be retried with the same rows without counting anything twice. Two processes adding
        to the same rows at once both count (they wait for each other; they never deadlock)."""
        ...

    async def usage_totals(
        self, *, endpoints: tuple[str, ...], start: int, end: int, width: int, group_by: frozenset[str],
        project_ids: tuple[str, ...] | None = None, api_key_ids: tuple[str, ...] | None = None,
        models: tuple[str, ...] | None = None,
    ) -> list[UsageTotal]:
        """Sums of the rows of `endpoints` whose minute starts in [start, end), per bucket (`start + k * width`,
        the bucket its minute falls in) and per value of each field in `group_by` (among `project_id`,
        `api_key_id`, `model`, `endpoint`; other fields come back None). A filter of None matches everything,
        an empty one nothing. Only buckets with rows appear, ordered by bucket start, then group values."""
        ...

    async def settle_training_usage(self) -> int:
        """Count every succeeded job's `trained_tokens` not counted yet: one row at the minute of its
        `finished_at`, for its project, the key that created it, its `model` as asked, endpoint
        `/v1/fine_tuning/jobs`, one request. The job is marked counted in the same transaction, so each job
        counts exactly once however often (and from however many processes) this runs. Returns how many."""
        ...

    async def exchange_rate_usage(self, mine: list[RateUsage], now: int, *, window: int,
                                  keep: int) -> list[RateUsage]:
        """Store each of `mine` (replacing its series' row, stamped `now`) in one transaction, deleting the rows
        not updated since `now - keep`; then return every series updated at or after `now - window`, this
        caller's included. With `mine` empty nothing is written. A series' `used` is replaced, never added to,
        so a retried call changes nothing."""
        ...
