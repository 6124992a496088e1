"""Housekeeping: expire files and uploads, remove orphaned blobs and abandoned temporaries."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from inhouse.ids import now
from inhouse.services.blob_keys import (
    BATCHES,
    CHECKPOINTS,
    FILES,
    IMAGES,
    PARTS,
    chunk_batch_id,
    file_blob_key,
    id_in_key,
    part_blob_key,
)
from inhouse.services.idempotency import IdempotencyService
from inhouse.services.uploads import UploadsService
from inhouse.storage.base import BlobStore, MetadataStore

log = logging.getLogger(__name__)
_BATCH = 500


@dataclass
class SweepReport:
    expired_files: int = 0
    expired_uploads: int = 0
    orphan_blobs: int = 0
    temporaries: int = 0
    idempotency: int = 0
    expired_images: int = 0
    cached_models: int = 0


class ModelCache(Protocol):
    async def sweep(self) -> int:
        """Remove what the cache holds for artifacts that are gone; returns how many entries went."""
        ...


class MaintenanceService:
    def __init__(
        self,
        meta: MetadataStore,
        blobs: BlobStore,
        uploads: UploadsService,
        idempotency: IdempotencyService,
        stale_temp_seconds: float,
        image_ttl_seconds: float = 3600,
        clock: Callable[[], int] = now,
        caches: Sequence[ModelCache] = (),
    ) -> None:
        self.caches = caches
        self.image_ttl_seconds = image_ttl_seconds
        self.meta = meta
        self.blobs = blobs
        self.uploads = uploads
        self.idempotency = idempotency
        self.stale_temp_seconds = stale_temp_seconds
        self.clock = clock

    async def sweep(self) -> SweepReport:
        report = SweepReport()
        while batch := await self.meta.files.expired_files(self.clock(), _BATCH):
            for f in batch:
                await self.meta.files.delete_file_by_id(f.id)
                await self.blobs.delete(file_blob_key(f.id))
                report.expired_files += 1
        for upload in await self.meta.uploads.expired_uploads(self.clock(), _BATCH):
            await self.uploads.expire(upload)
            report.expired_uploads += 1
        report.orphan_blobs = await self.remove_orphans()
        for key in await self.blobs.list_keys(IMAGES):  # images behind URLs that have expired
            age = await self.blobs.age_seconds(key)
            if age is not None and age > self.image_ttl_seconds:
                await self.blobs.delete(key)
                report.expired_images += 1
        report.temporaries = await self.blobs.remove_temporaries(self.stale_temp_seconds)
        report.idempotency = await self.idempotency.purge()
        for cache in self.caches:
            report.cached_models += await cache.sweep()
        if any(vars(report).values()):
            log.info("sweep: %s", report)
        return report

    async def remove_orphans(self) -> int:
        """A blob is committed before its row; a crash between leaves a blob no row names. Remove those.

        Only blobs older than the stale-temporary age are considered, so a blob whose row is about
        to be written by a live request is never taken."""
        removed = 0
        for prefix, key_of, existing in (
            (FILES, file_blob_key, self.meta.files.existing_file_ids),
            (PARTS, part_blob_key, self.meta.uploads.existing_part_ids),
        ):
            keys = await self.blobs.list_keys(prefix)
            ids = [id_in_key(k) for k in keys]
            live = await existing(ids)
            for blob_id in ids:
                if blob_id not in live and await self._old_enough(key_of(blob_id)):
                    await self.blobs.delete(key_of(blob_id))
                    removed += 1
        open_batches = await self.meta.batches.open_batch_ids()
        for key in await self.blobs.list_keys(BATCHES):  # a finished batch's chunks, left by a crash
            if chunk_batch_id(key) not in open_batches and await self._old_enough(key):
                await self.blobs.delete(key)
                removed += 1
        referenced = await self.meta.jobs.referenced_artifacts()
        for key in await self.blobs.list_keys(CHECKPOINTS):
            if key not in referenced and await self._old_enough(key):
                await self.blobs.delete(key)
                removed += 1
        return removed

    async def _old_enough(self, key: str) -> bool:
        age = await self.blobs.age_seconds(key)
        return age is not None and age >= self.stale_temp_seconds
