"""The set of services one process uses: what bootstrap built, handed to the app and the worker, opened and
closed in order."""

from __future__ import annotations

from dataclasses import dataclass

from inhouse.config import Settings
from inhouse.services.batch_runner import BatchRunner
from inhouse.services.batches import BatchesService
from inhouse.services.chat import ChatService
from inhouse.services.embeddings import EmbeddingsService
from inhouse.services.files import FilesService
from inhouse.services.fine_tuning import FineTuningService
from inhouse.services.fine_tuning_runner import JobRunner
from inhouse.services.idempotency import IdempotencyService
from inhouse.services.images import ImagesService
from inhouse.services.keys import KeysService
from inhouse.services.maintenance import MaintenanceService
from inhouse.services.models import ModelsService
from inhouse.services.ports import ChatModel, EmbeddingModel, LoadedModels, ModelPools
from inhouse.services.rate_limits import RateLimiter
from inhouse.services.uploads import UploadsService
from inhouse.services.usage import UsageService
from inhouse.services.usage_report import UsageReport
from inhouse.storage.base import BlobStore, MetadataStore


@dataclass
class Services:
    settings: Settings
    meta: MetadataStore
    blobs: BlobStore
    files: FilesService
    uploads: UploadsService
    models: ModelsService
    keys: KeysService
    idempotency: IdempotencyService
    maintenance: MaintenanceService
    embedding_engines: LoadedModels[EmbeddingModel]
    embeddings: EmbeddingsService
    chat_engines: LoadedModels[ChatModel]
    chat: ChatService
    fine_tuning: FineTuningService
    jobs: JobRunner
    batches: BatchesService
    batch_runner: BatchRunner
    images: ImagesService
    executors: ModelPools  # model work's own thread pools, apart from the I/O pool
    rate_limits: RateLimiter
    usage: UsageService
    usage_report: UsageReport

    async def open(self) -> None:
        await self.meta.open()
        await self.meta.migrate()
        await self.meta.check()
        await self.blobs.open()
        self.usage.start()

    async def close(self) -> None:
        await self.embedding_engines.close()
        await self.chat_engines.close()
        await self.chat.full_engines.close()
        await self.images.engines.close()
        self.executors.shutdown()  # after the engines, whose close runs on these pools
        await self.usage.stop()  # writes what is still pending
        await self.blobs.close()
        await self.meta.close()
