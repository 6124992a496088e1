"""Rate limits per key and per project: requests and tokens per minute, as token buckets in this process's memory.

Each limit is a bucket of `limit` units that refills continuously at `limit` per minute. A request takes one
request unit, and its estimated tokens before any costly work, from every bucket it is under (its key's and its
project's, shared by all the project's keys); the estimate is corrected with the real count afterwards. The state
is per process: with several server processes each enforces the limit on its own, so a key (or project) may get
up to that many times its limit in all (docs/usage.md).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

from inhouse.errors import Overloaded
from inhouse.services.keys import Caller

Kind = Literal["requests", "tokens"]
MAX_BUCKETS = 100_000  # two per limited key or project; past it full (idle) buckets go first, then the oldest
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


class RateLimiter:
    def __init__(self, clock: Callable[[], float] = time.monotonic, max_buckets: int = MAX_BUCKETS) -> None:
        self.clock = clock
        self.max_buckets = max_buckets
        self._buckets: dict[tuple[str, Kind], _Bucket] = {}

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
