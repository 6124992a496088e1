"""Housekeeping rules that need no HTTP: the sweep removes images whose URLs have expired, and only those; a cached
fine-tune lives as long as its weights' blob. On whichever stores INHOUSE_TEST_STORAGE names (tests/conftest.py)."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

from inhouse.bootstrap import build_services


async def put(services: Any, key: str) -> None:
    writer = services.blobs.writer(key)
    await writer.write(b"\x89PNG not really")
    await writer.commit()


def test_sweep_removes_images_past_their_url_ttl(settings_factory: Any) -> None:
    # A blob's age is the store's own (a file's mtime, an S3 object's LastModified, which no client can set), so
    # the ages here are real: a TTL of a few seconds, and blobs written that far apart. S3 dates to the second.
    settings = settings_factory()
    settings.images.url_ttl_seconds = 4

    async def body() -> None:
        services = build_services(settings)
        await services.open()
        try:
            await put(services, "images/img_expired")
            await asyncio.sleep(3.0)
            await put(services, "images/img_fresh")
            await asyncio.sleep(1.5)
            await put(services, "images/img_new")
            # img_expired is over 4.5 s old; img_fresh about 1.5 s (2.5 s on S3's whole seconds), well inside.
            report = await services.maintenance.sweep()
            assert report.expired_images == 1
            # A URL signed for the others may still be valid.
            assert sorted(await services.blobs.list_keys("images")) == ["images/img_fresh", "images/img_new"]
            assert await services.blobs.size("images/img_expired") is None
            assert (await services.maintenance.sweep()).expired_images == 0
        finally:
            await services.close()

    asyncio.run(body())


def test_sweep_bounds_the_fine_tuned_embedding_cache_by_the_blob_store(settings_factory: Any, tmp_path: Path) -> None:
    """A cached fine-tune (and its ONNX export) lives as long as the blob of its weights; a dead writer's temp
    goes, a live one's stays."""
    from inhouse.engines.embeddings.fine_tuned import write_model_dir

    base = tmp_path / "base"
    base.mkdir()
    (base / "config.json").write_text("{}")
    settings = settings_factory()
    cache = settings.data_dir / "cache"

    async def body() -> None:
        services = build_services(settings)
        await services.open()
        try:
            await put(services, "checkpoints/ftckpt-kept")
            await put(services, "checkpoints/ftckpt-gone")
            kept = write_model_dir(base, b"w1", cache / "fine-tuned" / "a", "checkpoints/ftckpt-kept")
            gone = write_model_dir(base, b"w2", cache / "fine-tuned" / "b", "checkpoints/ftckpt-gone")
            for name, source in (("x", kept), ("y", gone)):
                (cache / "onnx" / name).mkdir(parents=True)
                (cache / "onnx" / name / "source").write_text(str(source))
            dead, live = cache / "fine-tuned" / ".c.dead.tmp", cache / "fine-tuned" / ".d.live.tmp"
            dead.mkdir()
            live.mkdir()
            stamp = time.time() - settings.stale_temp_seconds - 5
            os.utime(dead, (stamp, stamp))

            assert (await services.maintenance.sweep()).cached_models == 1  # only the dead temp
            await services.blobs.delete("checkpoints/ftckpt-gone")
            assert (await services.maintenance.sweep()).cached_models == 2  # the model and its export
            assert sorted(p.name for p in (cache / "fine-tuned").iterdir()) == [".d.live.tmp", "a"]
            assert [p.name for p in (cache / "onnx").iterdir()] == ["x"]
        finally:
            await services.close()

    asyncio.run(body())
