"""Rate limits per key and per project: requests and tokens per minute, as token buckets in this process's memory.

Each limit is a bucket of `limit` units that refills continuously at `limit` per minute. A request takes one
request unit, and its estimated tokens before any costly work, from every bucket it is under (its key's and its
project's, shared by all the project's keys); the estimate is corrected with the real count afterwards. The state
is per process, and shared through the database: each process stores, about once a second, what each of its
buckets took (a running total per series), reads the other processes' totals, and takes their growth from its
own buckets. With several servers a limit then holds for them all together, to within what they take in one
exchange's time (docs/usage.md).
"""

from __future__ import annotations

import itertools
import math
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

from inhouse.errors import Overloaded
from inhouse.records import RateUsage
from inhouse.services.keys import Caller

Kind = Literal["requests", "tokens"]
MAX_BUCKETS = 100_000  # two per limited key or project; past it full (idle) buckets go first, then the oldest
# Exchanges read the series updated in the last SYNC_WINDOW_S; a series unchanged for SERIES_IDLE_S (and stored)
# ends, and the bucket's next use starts a new one, so a series never comes back after leaving the window
# (SERIES_IDLE_S < SYNC_WINDOW_S). Rows idle for SYNC_KEEP_S are deleted. Use older than a minute is refilled
# anyway, so what the window leaves out never matters.
SYNC_WINDOW_S = 120
SYNC_KEEP_S = 600
SERIES_IDLE_S = 60.0
_LABEL = {"requests": "requests per min (RPM)", "tokens": "tokens per min (TPM)"}


class RateLimitExceeded(Overloaded):
    """429 in OpenAI's shape: `type` names the limit that was hit ("requests" or "tokens")."""

    def __init__(self, kind: Kind, message: str, retry_after_s: float) -> None:
        super().__init__(message, retry_after_s=retry_after_s, code="rate_limit_exceeded")
        self.type = kind


@dataclass(frozen=True, slots=True)
class Limit:
    """One limit a request is under: the bucket's owner (a key id or a project id; their prefixes, `key_` and
    `proj_`, keep the two apart in one table), units per minute, and where it is set ("" for the key's own
    limit, " in project proj_…" for its project's), which the 429's message names."""

    owner: str
    per_minute: int
    where: str = ""


def limits_of(caller: Caller, kind: Kind) -> tuple[Limit, ...]:
    """The limits of `kind` a caller's requests are under: its key's, then its project's; none in open mode."""
    if caller.key_id is None:
        return ()
    key, project = (caller.rpm, caller.project_rpm) if kind == "requests" else (caller.tpm, caller.project_tpm)
    out: list[Limit] = []
    if key:
        out.append(Limit(caller.key_id, key))
    if project:
        out.append(Limit(caller.project.id, project, f" in project {caller.project.id}"))
    return tuple(out)


@dataclass(slots=True)
class _Bucket:
    limit: int
    level: float  # units available now; negative when a request used more than it was estimated to
    at: float

    def refill(self, now: float) -> None:
        self.level = min(float(self.limit), self.level + (now - self.at) * self.limit / 60)
        self.at = now

    def seconds_until(self, level: float) -> float:
        return max(0.0, (level - self.level) * 60 / self.limit)


def duration(seconds: float) -> str:
    """OpenAI's (Go's) way of writing a wait: 120ms, 7.66s, 6m0s, 1h2m3s."""
    if seconds <= 0:
        return "0s"
    if seconds < 1:
        return f"{max(1, round(seconds * 1000))}ms"
    if seconds < 60:
        return f"{seconds:.3f}".rstrip("0").rstrip(".") + "s"
    minutes, secs = divmod(math.ceil(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes}m{secs}s"


def estimate_tokens(value: object) -> int:
    """OpenAI's estimate before the work: a quarter of the characters of every string, plus one per token id
    (an int), through lists and dicts; at least 1."""
    chars, ids = 0, 0
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            chars += len(item)
        elif isinstance(item, bool):
            continue
        elif isinstance(item, int):
            ids += 1
        elif isinstance(item, list | tuple):
            stack.extend(item)
        elif isinstance(item, dict):
            stack.extend(item.values())
    return max(1, math.ceil(chars / 4) + ids)


@dataclass(slots=True)
class _Series:
    """What this process's bucket for one (owner, kind) took since the series began, and what was last stored."""

    name: str
    per_minute: int
    used: float = 0.0
    stored: float | None = None
    changed_at: float = 0.0


class RateLimiter:
    def __init__(self, clock: Callable[[], float] = time.monotonic, max_buckets: int = MAX_BUCKETS,
                 process: str | None = None) -> None:
        self.clock = clock
        self.max_buckets = max_buckets
        self._buckets: dict[tuple[str, Kind], _Bucket] = {}
        # Sharing with other processes (outgoing / incoming): series names start with this process's name.
        self.process = process or "rl" + secrets.token_hex(6)
        self._numbers = itertools.count()
        self._series: dict[tuple[str, Kind], _Series] = {}
        self._seen: dict[str, float] = {}  # other processes' series -> the total already taken from our buckets
        self._exchanged = False

    def _used(self, owner: str, kind: Kind, per_minute: int, units: float) -> None:
        """Add `units` (negative: given back) to this process's series for the bucket."""
        series = self._series.get((owner, kind))
        if series is None:
            if len(self._series) >= self.max_buckets:  # oldest first: it is the likeliest to be idle
                del self._series[next(iter(self._series))]
            series = self._series[(owner, kind)] = _Series(f"{self.process}-{next(self._numbers)}", per_minute)
        series.used += units
        series.per_minute = per_minute
        series.changed_at = self.clock()

    def outgoing(self) -> list[RateUsage]:
        """The series to store: those changed since last stored. Ends the series idle for SERIES_IDLE_S that are
        stored already."""
        now = self.clock()
        out = []
        for key, series in list(self._series.items()):
            if series.stored != series.used:
                out.append(RateUsage(series.name, key[0], key[1], series.per_minute, series.used))
            elif now - series.changed_at > SERIES_IDLE_S:
                del self._series[key]
        return out

    def stored(self, rows: list[RateUsage]) -> None:
        """`rows` (from outgoing) are in the database now."""
        by_name = {series.name: series for series in self._series.values()}
        for row in rows:
            series = by_name.get(row.series)
            if series is not None:
                series.stored = row.used

    def incoming(self, rows: list[RateUsage]) -> None:
        """Take from our buckets what the other processes' series took since the last exchange. On the first
        exchange their totals are only noted: what they hold may be hours old, and taking it at once would shut a
        busy key out for as long."""
        seen: dict[str, float] = {}
        for row in rows:
            if row.series.startswith(self.process + "-"):
                continue
            before = self._seen.get(row.series)
            seen[row.series] = row.used
            if before is None and not self._exchanged:
                continue
            grown = row.used - (before or 0.0)
            if grown:
                kind: Kind = "tokens" if row.kind == "tokens" else "requests"
                bucket = self._bucket(row.owner, kind, row.per_minute)
                bucket.level = min(float(bucket.limit), bucket.level - grown)
        self._seen = seen  # a series outside the window has ended
        self._exchanged = True

    def _bucket(self, owner: str, kind: Kind, limit: int) -> _Bucket:
        now = self.clock()
        bucket = self._buckets.get((owner, kind))
        if bucket is None:
            if len(self._buckets) >= self.max_buckets:
                self._evict(now)
            bucket = self._buckets[(owner, kind)] = _Bucket(limit, float(limit), now)
            return bucket
        bucket.refill(now)
        if bucket.limit != limit:  # the limit changed: what was used counts against the new one
            bucket.level = min(float(limit), bucket.level + limit - bucket.limit)
            bucket.limit = limit
        return bucket

    def _evict(self, now: float) -> None:
        # A full bucket is the same as no bucket: dropping it loses nothing.
        for key, bucket in list(self._buckets.items()):
            bucket.refill(now)
            if bucket.level >= bucket.limit:
                del self._buckets[key]
        while len(self._buckets) >= self.max_buckets:
            del self._buckets[next(iter(self._buckets))]

    def _take(self, kind: Kind, lim: Limit, n: int) -> None:
        limit = lim.per_minute
        bucket = self._bucket(lim.owner, kind, limit)
        if bucket.level >= n:
            bucket.level -= n
            self._used(lim.owner, kind, limit, n)
            return
        label = _LABEL[kind] + lim.where
        if n > limit:
            raise RateLimitExceeded(kind, f"Request too large for {label}: Limit {limit}, Requested {n}. The input "
                                    "or output tokens must be reduced in order to run successfully.",
                                    bucket.seconds_until(limit))
        wait = bucket.seconds_until(n)
        used = max(0, math.ceil(limit - bucket.level))
        raise RateLimitExceeded(kind, f"Rate limit reached for {label}: Limit {limit}, Used {used}, Requested {n}. "
                                f"Please try again in {duration(wait)}.", wait)

    def take(self, kind: Kind, limits: Sequence[Limit], n: int) -> None:
        """Take `n` units from every limit's bucket, or from none: RateLimitExceeded (429, naming the limit that
        refused) when one has fewer left (or `n` exceeds it); what the others took by then is given back."""
        taken: list[Limit] = []
        try:
            for lim in limits:
                self._take(kind, lim, n)
                taken.append(lim)
        except RateLimitExceeded:
            self.settle(kind, taken, n, 0)
            raise

    def settle(self, kind: Kind, limits: Sequence[Limit], taken: int, used: int) -> None:
        """Correct an estimate in every limit's bucket: `taken` were taken before the work, `used` were really
        used (0 gives back what was taken)."""
        for lim in limits:
            bucket = self._bucket(lim.owner, kind, lim.per_minute)
            bucket.level = min(float(lim.per_minute), bucket.level + taken - used)
            if taken != used:
                self._used(lim.owner, kind, lim.per_minute, used - taken)

    def headers(self, requests: Sequence[Limit], tokens: Sequence[Limit]) -> list[tuple[bytes, bytes]]:
        """OpenAI's x-ratelimit-{limit,remaining,reset}-{requests,tokens}, for each kind that has a limit. Under
        two limits of a kind (the key's and the project's) they describe the binding one: the fewer remaining
        (on a tie the smaller limit, then the key's)."""
        out: list[tuple[bytes, bytes]] = []
        both: tuple[tuple[Kind, Sequence[Limit]], ...] = (("requests", requests), ("tokens", tokens))
        for kind, limits in both:
            shown: tuple[int, int, _Bucket] | None = None
            for lim in limits:
                bucket = self._bucket(lim.owner, kind, lim.per_minute)
                remaining = max(0, math.floor(bucket.level))
                if shown is None or (remaining, lim.per_minute) < shown[:2]:
                    shown = (remaining, lim.per_minute, bucket)
            if shown is not None:
                remaining, limit, bucket = shown
                out += [(f"x-ratelimit-limit-{kind}".encode(), str(limit).encode()),
                        (f"x-ratelimit-remaining-{kind}".encode(), str(remaining).encode()),
                        (f"x-ratelimit-reset-{kind}".encode(), duration(bucket.seconds_until(limit)).encode())]
        return out
