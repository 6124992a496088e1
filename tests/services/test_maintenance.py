"""Housekeeping rules that need no HTTP: the sweep removes images whose URLs have expired, and only those."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

from inhouse.bootstrap import build_services


async def put(services: Any, key: str, age_s: float) -> Path:
    writer = services.blobs.writer(key)
    await writer.write(b"\x89PNG not really")
    await writer.commit()
    path = Path(services.blobs.path_for(key))
    stamp = time.time() - age_s
    os.utime(path, (stamp, stamp))
    return path


def test_sweep_removes_images_past_their_url_ttl(settings_factory: Any) -> None:
    settings = settings_factory()
    settings.images.url_ttl_seconds = 600

    async def body() -> None:
        services = build_services(settings)
        await services.open()
        try:
            expired = await put(services, "images/img_expired", 601 + 5)
            fresh = await put(services, "images/img_fresh", 600 - 60)
            just_made = await put(services, "images/img_new", 0)
            report = await services.maintenance.sweep()
            assert report.expired_images == 1
            assert not expired.exists()
            assert fresh.exists() and just_made.exists()  # a URL signed for them may still be valid
            assert sorted(await services.blobs.list_keys("images")) == ["images/img_fresh",
                                                                        "images/img_new"]
            assert (await services.maintenance.sweep()).expired_images == 0
        finally:
            await services.close()

    asyncio.run(body())
