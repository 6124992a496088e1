"""Usage reports in OpenAI's shape (`/v1/organization/usage/*`): time buckets of sums, grouped, paged."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from inhouse.errors import InvalidRequest, PermissionDenied
from inhouse.ids import now
from inhouse.records import UsageTotal
from inhouse.services.keys import Caller
from inhouse.services.usage import UsageService
from inhouse.storage.base import UsageStore

WIDTHS = {"1m": 60, "1h": 3600, "1d": 86400}
DEFAULT_LIMIT = {"1m": 60, "1h": 24, "1d": 7}
MAX_LIMIT = {"1m": 1440, "1h": 168, "1d": 31}
IMAGE_SOURCES = {"/v1/images/generations": "image.generation", "/v1/images/edits": "image.edit",
                 "/v1/images/variations": "image.variation"}
BATCH = "batch:"  # the endpoint of a batch's lines is recorded as "batch:" + the route's endpoint


def _source(endpoint: str) -> str | None:
    return IMAGE_SOURCES.get(endpoint.removeprefix(BATCH))
_PAGE_PREFIX = "page_"
MAX_TIME = 2**40  # Unix seconds: far beyond any usage, far below SQLite's 64-bit integers


@dataclass(frozen=True)
class UsageKind:
    """One usage route: the endpoints it sums, what it may be grouped by, and its result fields."""

    object: str
    endpoints: tuple[str, ...]
    groups: frozenset[str]
    counts: Callable[[UsageTotal], dict[str, Any]]
    group_fields: tuple[str, ...]  # every group field its result carries (null when not grouped by)


KINDS = {
    "completions": UsageKind(
        "organization.usage.completions.result",
        ("/v1/chat/completions", "/v1/completions", f"{BATCH}/v1/chat/completions", f"{BATCH}/v1/completions"),
        frozenset({"project_id", "api_key_id", "model", "batch", "service_tier"}),
        lambda t: {"input_tokens": t.input_tokens, "output_tokens": t.output_tokens, "input_cached_tokens": 0,
                   "input_audio_tokens": 0, "output_audio_tokens": 0, "num_model_requests": t.requests},
        ("project_id", "user_id", "api_key_id", "model", "batch", "service_tier")),
    "embeddings": UsageKind(
        "organization.usage.embeddings.result", ("/v1/embeddings", f"{BATCH}/v1/embeddings"),
        frozenset({"project_id", "api_key_id", "model"}),
        lambda t: {"input_tokens": t.input_tokens, "num_model_requests": t.requests},
        ("project_id", "user_id", "api_key_id", "model")),
    "images": UsageKind(
        "organization.usage.images.result", (*IMAGE_SOURCES, f"{BATCH}/v1/images/generations"),
        frozenset({"project_id", "api_key_id", "model", "source"}),
        lambda t: {"images": t.images, "num_model_requests": t.requests},
        ("source", "size", "project_id", "user_id", "api_key_id", "model")),
    # An extension: training is usage too. A job counts once, when it succeeds, in the minute it finished.
    "fine_tuning": UsageKind(
        "organization.usage.fine_tuning.result", ("/v1/fine_tuning/jobs",),
        frozenset({"project_id", "api_key_id", "model"}),
        lambda t: {"trained_tokens": t.trained_tokens, "num_jobs": t.requests},
        ("project_id", "api_key_id", "model")),
}


@dataclass(frozen=True)
class UsageQuery:
    """A usage request's parameters, parsed from the query string (arrays as tuples, None when absent)."""

    start_time: int
    end_time: int | None = None
    bucket_width: str = "1d"
    group_by: tuple[str, ...] = ()
    project_ids: tuple[str, ...] | None = None
    api_key_ids: tuple[str, ...] | None = None
    models: tuple[str, ...] | None = None
    limit: int | None = None
    page: str | None = None
    batch: bool | None = None  # completions
    sources: tuple[str, ...] | None = None  # images


class UsageReport:
    def __init__(self, store: UsageStore, usage: UsageService, clock: Callable[[], int] = now) -> None:
        self.store = store
        self.usage = usage
        self.clock = clock

    async def page(self, kind_name: str, q: UsageQuery, caller: Caller) -> dict[str, Any]:
        """One page of buckets (every bucket in range, empty ones included), scoped to the caller's project
        unless the caller is an admin."""
        kind = KINDS[kind_name]
        width = WIDTHS.get(q.bucket_width)
        if width is None:
            raise InvalidRequest(f"Invalid value for 'bucket_width': {q.bucket_width!r}; use 1m, 1h or 1d.",
                                 param="bucket_width")
        limit = DEFAULT_LIMIT[q.bucket_width] if q.limit is None else q.limit
        if not 1 <= limit <= MAX_LIMIT[q.bucket_width]:
            raise InvalidRequest(f"Invalid value for 'limit': with bucket_width={q.bucket_width} it must be from 1 "
                                 f"to {MAX_LIMIT[q.bucket_width]}.", param="limit")
        for g in q.group_by:
            if g not in kind.groups:
                raise InvalidRequest(f"Invalid value for 'group_by': {g!r}; this usage groups by "
                                     f"{', '.join(sorted(kind.groups))}.", param="group_by")
        start = q.start_time
        # end_time is exclusive; its default takes in the current second, since usage is kept per minute and
        # what a request did just now (in the second a minute starts) is counted under that minute, == now.
        end = self.clock() + 1 if q.end_time is None else q.end_time
        for name, value in (("start_time", start), ("end_time", end)):
            if not 0 <= value <= MAX_TIME:
                raise InvalidRequest(f"Invalid value for '{name}': Unix seconds from 0 to {MAX_TIME}.", param=name)
        if end <= start:
            raise InvalidRequest("'start_time' must be before 'end_time' (Unix seconds; end_time defaults to now).",
                                 param="start_time")
        projects = self._projects(q, caller)
        first = self._first_bucket(q.page, start, end, width)
        count = min(limit, math.ceil((end - first) / width))
        stop = first + count * width
        endpoints = kind.endpoints
        if q.sources is not None:
            bad = [s for s in q.sources if s not in IMAGE_SOURCES.values()]
            if bad:
                raise InvalidRequest(f"Invalid value for 'sources': {bad[0]!r}.", param="sources")
            endpoints = tuple(e for e in endpoints if _source(e) in q.sources)
        if q.batch is not None:
            endpoints = tuple(e for e in endpoints if e.startswith(BATCH) == q.batch)
        group_by = frozenset(g for g in q.group_by if g in ("project_id", "api_key_id", "model"))
        if "source" in q.group_by or "batch" in q.group_by:
            group_by |= {"endpoint"}
        await self.usage.flush()  # this process's last second is visible at once
        if kind_name == "fine_tuning":
            await self.store.settle_training_usage()  # a job that just succeeded counts at once (and only once)
        totals = await self.store.usage_totals(
            endpoints=endpoints, start=first, end=min(stop, end), width=width, group_by=group_by,
            project_ids=projects, api_key_ids=q.api_key_ids, models=q.models)
        by_bucket: dict[int, list[dict[str, Any]]] = {}
        only = projects[0] if projects is not None and len(projects) == 1 else None
        for t in totals:
            _merge(by_bucket.setdefault(t.start, []), self._result(kind, t, q.group_by, only), kind)
        data = [{"object": "bucket", "start_time": s, "end_time": s + width, "results": by_bucket.get(s, [])}
                for s in range(first, stop, width)]
        more = stop < end
        return {"object": "page", "data": data, "has_more": more,
                "next_page": f"{_PAGE_PREFIX}{stop}" if more else None}

    @staticmethod
    def _projects(q: UsageQuery, caller: Caller) -> tuple[str, ...] | None:
        if caller.admin:
            return q.project_ids
        own = caller.project.id
        if q.project_ids is not None and set(q.project_ids) - {own}:
            raise PermissionDenied("This key reads its own project's usage only; an admin key reads any project's.",
                                   param="project_ids", code="insufficient_permissions")
        return (own,)

    @staticmethod
    def _first_bucket(page: str | None, start: int, end: int, width: int) -> int:
        if page is None:
            return start
        digits = page.removeprefix(_PAGE_PREFIX)
        first = int(digits) if digits.isascii() and digits.isdigit() and len(digits) < 20 else -1
        if not (start < first < end and (first - start) % width == 0):
            raise InvalidRequest("Invalid 'page': pass the next_page of a previous answer with the same "
                                 "start_time, end_time and bucket_width.", param="page")
        return first

    @staticmethod
    def _result(kind: UsageKind, t: UsageTotal, group_by: tuple[str, ...], project: str | None) -> dict[str, Any]:
        grouped = set(group_by)
        values: dict[str, Any] = {
            "project_id": t.project_id if "project_id" in grouped else project,
            "user_id": None,
            "api_key_id": t.api_key_id if "api_key_id" in grouped else None,
            "model": t.model if "model" in grouped else None,
            "batch": (t.endpoint or "").startswith(BATCH) if "batch" in grouped else None,
            "service_tier": "default" if "service_tier" in grouped else None,
            "source": _source(t.endpoint or "") if "source" in grouped else None,
            "size": None,
        }
        return {"object": kind.object, **kind.counts(t), **{f: values[f] for f in kind.group_fields}}


def _merge(results: list[dict[str, Any]], result: dict[str, Any], kind: UsageKind) -> None:
    """Add `result` to the bucket's results, summed into one with the same group values: grouping by batch or
    source reads the endpoint, which may split one group (a route and its batch lines) in two."""
    for other in results:
        if all(other[f] == result[f] for f in kind.group_fields):
            for k, v in result.items():
                if k not in kind.group_fields and isinstance(v, int) and not isinstance(v, bool):
                    other[k] += v
            return
    results.append(result)
