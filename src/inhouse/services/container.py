"""The set of services one process uses, built by bootstrap and handed to the app and the worker."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from inhouse.config import ModelEntry, Settings
from inhouse.engines.causal.generation import CausalEngine
from inhouse.engines.causal.loading import model_dir
from inhouse.engines.embeddings.engine import EmbeddingEngine, EmbeddingOptions
from inhouse.engines.executors import ModelExecutors
from inhouse.engines.images.assembly import pipeline_dir
from inhouse.engines.images.pipelines import DiffusionEngine
from inhouse.engines.registry import ModelRegistry, embedding_registry
from inhouse.services.batch_lines import BatchLines
from inhouse.services.batch_runner import BatchRunner
from inhouse.services.batches import BatchesService
from inhouse.services.chat import ChatService
from inhouse.services.embedding_models import FineTunedEmbeddings
from inhouse.services.embeddings import EmbeddingsService
from inhouse.services.files import FilesService
from inhouse.services.fine_tuning import FineTuningService
from inhouse.services.fine_tuning_runner import JobRunner
from inhouse.services.idempotency import IdempotencyService
from inhouse.services.images import ImagesService
from inhouse.services.keys import KeysService
from inhouse.services.maintenance import MaintenanceService
from inhouse.services.models import ModelsService
from inhouse.services.rate_limits import RateLimiter
from inhouse.services.uploads import UploadsService
from inhouse.services.usage import UsageService
from inhouse.services.usage_report import UsageReport
from inhouse.storage.base import BlobStore, MetadataStore
from inhouse.storage.secret_file import load_or_create_secret

CHAT_LIBRARIES = ("torch", "transformers", "peft")


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
    embedding_engines: ModelRegistry[EmbeddingEngine]
    embeddings: EmbeddingsService
    chat_engines: ModelRegistry[CausalEngine]
    chat: ChatService
    fine_tuning: FineTuningService
    jobs: JobRunner
    batches: BatchesService
    batch_runner: BatchRunner
    images: ImagesService
    executors: ModelExecutors  # model work's own thread pools, apart from the I/O pool
    rate_limits: RateLimiter
    usage: UsageService
    usage_report: UsageReport

    @classmethod
    def build(cls, settings: Settings, meta: MetadataStore, blobs: BlobStore) -> Services:
        files = FilesService(meta, blobs, settings.limits)
        uploads = UploadsService(meta, blobs, files, settings.limits)
        idempotency = IdempotencyService(meta)
        models = ModelsService(meta, settings.all_models())
        executors = ModelExecutors()
        emb = settings.embeddings
        engines = embedding_registry(
            EmbeddingOptions(
                backend=emb.backend,
                threads=emb.threads,
                max_batch_tokens=emb.max_batch_tokens,
                max_batch_size=emb.max_batch_size,
                max_queued_inputs=emb.max_queued_inputs,
                cache_dir=settings.data_dir / "cache",
            ),
            idle_unload_s=emb.idle_unload_seconds,
            executor=lambda: executors.pool("embeddings"),
        )
        ft = settings.fine_tuning

        def load_causal(entry: ModelEntry) -> CausalEngine:
            return CausalEngine(model_dir(entry, settings.data_dir / "models"), ft.threads)

        chat_engines = ModelRegistry("chat", load_causal, ft.idle_unload_seconds, lambda: executors.pool("chat"),
                                     CHAT_LIBRARIES)
        loop_holder: dict[str, asyncio.AbstractEventLoop] = {}

        def load_full_model(entry: ModelEntry) -> CausalEngine:
            # entry.id is the weights' blob key; the blob store is async, so read through the serving loop.
            base = next(e for e in settings.all_models() if e.id in entry.aliases)
            weights = asyncio.run_coroutine_threadsafe(chat.read_blob(entry.id), loop_holder["loop"]).result()
            return CausalEngine(model_dir(base, settings.data_dir / "models"), ft.threads, weights)

        full_engines = ModelRegistry("fine-tuned", load_full_model, ft.idle_unload_seconds,
                                     lambda: executors.pool("chat"), CHAT_LIBRARIES)
        chat = ChatService(models, meta, blobs, chat_engines, full_engines, ft, loop_holder, executors)

        fine_tuned_embeddings = FineTunedEmbeddings(meta, blobs, settings.all_models(), settings.data_dir / "cache",
                                                    settings.stale_temp_seconds)
        img = settings.images

        def load_diffusion(entry: ModelEntry) -> DiffusionEngine:
            return DiffusionEngine(pipeline_dir(entry, settings.data_dir / "models"), img.threads, entry.plan_relations)

        image_engines = ModelRegistry("image", load_diffusion, img.idle_unload_seconds,
                                      lambda: executors.pool("images"), ("torch", "transformers", "peft", "diffusers"))
        images = ImagesService(models, image_engines, blobs, img, settings.limits.max_image_pixels,
                               load_or_create_secret(settings.data_dir / "secrets" / "image-urls.key"), executors)
        rate_limits = RateLimiter()
        usage = UsageService(meta, rate_limits)
        embeddings = EmbeddingsService(models, engines, emb, executors, fine_tuned_embeddings)
        # Image URLs in a batch's output point where clients reach the server.
        lines = BatchLines(chat, embeddings, images,
                           lambda: img.external_base_url or f"http://{settings.host}:{settings.port}")
        return cls(
            settings=settings,
            meta=meta,
            blobs=blobs,
            files=files,
            uploads=uploads,
            models=models,
            keys=KeysService(meta, settings.auth),
            idempotency=idempotency,
            maintenance=MaintenanceService(meta, blobs, uploads, idempotency, settings.stale_temp_seconds,
                                           settings.images.url_ttl_seconds, caches=[fine_tuned_embeddings]),
            embedding_engines=engines,
            embeddings=embeddings,
            chat_engines=chat_engines,
            chat=chat,
            fine_tuning=FineTuningService(meta, models),
            jobs=JobRunner(settings, meta, blobs, files, models, executors),
            batches=BatchesService(meta),
            batch_runner=BatchRunner(settings, meta, blobs, files, lines, usage),
            images=images,
            executors=executors,
            rate_limits=rate_limits,
            usage=usage,
            usage_report=UsageReport(meta, usage),
        )

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
