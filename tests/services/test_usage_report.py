"""The usage report's time range (UsageReport.page) on a real SQLite store with a fixed clock: what a request
counted in the very second a minute starts is in the default range (end_time omitted means "up to now")."""

from __future__ import annotations

import asyncio
from pathlib import Path

from inhouse.bootstrap import build_metadata_store
from inhouse.services.keys import Caller
from inhouse.services.rate_limits import RateLimiter
from inhouse.services.usage import UsageService
from inhouse.services.usage_report import UsageQuery, UsageReport

MINUTE = 1_800_000_000  # a minute's first second (divisible by 60)


def test_usage_of_the_current_second_is_in_the_default_range(tmp_path: Path) -> None:
    async def body() -> None:
        meta = build_metadata_store(f"sqlite:///{tmp_path / 'meta.db'}")
        await meta.open()
        await meta.migrate()
        try:
            project = await meta.keys.get_or_create_project("p")
            usage = UsageService(meta.usage, RateLimiter(), clock=lambda: MINUTE + 0.4)
            report = UsageReport(meta.usage, usage, clock=lambda: MINUTE)
            usage.add(project.id, None, "m", "/v1/embeddings", input_tokens=7)
            caller = Caller(project, None, admin=True)
            page = await report.page("embeddings", UsageQuery(start_time=MINUTE - 60), caller)
            assert [r["input_tokens"] for b in page["data"] for r in b["results"]] == [7]
            # An explicit end_time stays exclusive: the minute that starts at it is not in the range.
            page = await report.page("embeddings", UsageQuery(start_time=MINUTE - 60, end_time=MINUTE), caller)
            assert [r for b in page["data"] for r in b["results"]] == []
        finally:
            await meta.close()

    asyncio.run(body())
