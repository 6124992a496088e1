"""Fine-tuned embedding models by name: from a model's (or a checkpoint's) row to a directory on this machine
that the embedding engines load exactly as they load a configured model."""

from __future__ import annotations

import asyncio
import hashlib
import shutil
from pathlib import Path

from inhouse.config import ModelEntry
from inhouse.engines.embeddings.fine_tuned import WEIGHTS, cached_models, write_model_dir
from inhouse.engines.embeddings.onnx import remove_orphan_exports
from inhouse.engines.locate import require_model
from inhouse.storage.base import BlobStore, MetadataStore, read_all


class FineTunedEmbeddings:
    """Resolves `ft:` names of embedding fine-tunes and their `:ckpt-step-N` checkpoints. Each artifact is
    written to local disk once (a cache: the blob store stays the truth, so any server can rebuild it)."""

    def __init__(self, meta: MetadataStore, blobs: BlobStore, entries: list[ModelEntry], cache_dir: Path,
                 stale_temp_seconds: float = 600.0) -> None:
        self.meta = meta
        self.stale_temp_seconds = stale_temp_seconds
        self.blobs = blobs
        self.entries = entries
        self.cache_dir = cache_dir
        self._ready: set[str] = set()
        self._locks: dict[str, asyncio.Lock] = {}

    async def _artifact(self, project_id: str, name: str) -> tuple[str, str] | None:
        """(base model id, weights' blob key) of a fine-tune or checkpoint this project owns."""
        created = await self.meta.models.get_model(project_id, name)
        if created is not None:
            return (created.base_model, created.artifact_key) if created.kind == "embedding" else None
        if ":ckpt-step-" not in name:
            return None  # a final checkpoint carries the model's own name: it serves only while the model exists
        ckpt = await self.meta.jobs.checkpoint_by_name(project_id, name)
        if ckpt is None:
            return None
        job = await self.meta.jobs.get_job(project_id, ckpt.job_id)
        return (job.base_model, ckpt.artifact_key) if job is not None else None

    async def resolve(self, project_id: str, name: str) -> ModelEntry | None:
        """The model entry to load for `name`, or None when this project has no embedding fine-tune by it."""
        found = await self._artifact(project_id, name)
        if found is None:
            return None
        base_id, key = found
        base = next((e for e in self.entries if e.id == base_id and e.kind == "embedding"), None)
        if base is None:
            return None  # its base model is no longer configured on this server
        target = self.cache_dir / "fine-tuned" / hashlib.sha256(key.encode()).hexdigest()[:24]
        if key not in self._ready:
            async with self._locks.setdefault(key, asyncio.Lock()):
                if key not in self._ready:
                    if not await asyncio.to_thread((target / WEIGHTS).is_file):
                        weights = await read_all(self.blobs, key)  # read on the loop; written on a thread
                        await asyncio.to_thread(write_model_dir, require_model(base), weights, target, key)
                    self._ready.add(key)
        return ModelEntry(id=f"ft-embedding:{key}", kind="embedding", path=str(target))

    async def sweep(self) -> int:
        """Bound the cache by the blob store: remove each cached fine-tune whose weights' blob is gone (a
        checkpoint dropped or deleted), a dead writer's temp, and ONNX exports of removed directories.
        Returns how many directories went."""
        removed = 0
        found = await asyncio.to_thread(cached_models, self.cache_dir / "fine-tuned", self.stale_temp_seconds)
        for directory, key in found:
            if key is None or await self.blobs.size(key) is None:
                if key is not None:
                    self._ready.discard(key)
                    self._locks.pop(key, None)
                await asyncio.to_thread(shutil.rmtree, directory, True)
                removed += 1
        return removed + await asyncio.to_thread(remove_orphan_exports, self.cache_dir)
