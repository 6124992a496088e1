"""The composition root: the one place that picks concrete backends from settings (sqlite: / postgresql:,
file: / s3:), builds the engines' registries and the trainer, and wires every service to the collaborators it needs."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from inhouse.config import ModelEntry, Settings
from inhouse.engines.causal.generation import CausalEngine
from inhouse.engines.causal.loading import model_dir
from inhouse.engines.embeddings.engine import EmbeddingEngine, EmbeddingOptions
from inhouse.engines.executors import ModelExecutors
from inhouse.engines.images.assembly import pipeline_dir
from inhouse.engines.images.pipelines import DiffusionEngine
from inhouse.engines.registry import ModelRegistry, embedding_registry
from inhouse.engines.trainer import LocalTrainer
from inhouse.services.batch_lines import BatchLines
from inhouse.services.batch_runner import BatchRunner
from inhouse.services.batches import BatchesService
from inhouse.services.chat import ChatService
from inhouse.services.container import Services
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
from inhouse.storage.base import BlobStore, MetadataStore, read_all
from inhouse.storage.local_blobs import LocalBlobStore
from inhouse.storage.secret_file import load_or_create_secret
from inhouse.storage.sqlite import SqliteMetadataStore, sqlite_path

CHAT_LIBRARIES = ("torch", "transformers", "peft")
IMAGE_LIBRARIES = ("torch", "transformers", "peft", "diffusers")


def build_metadata_store(url: str) -> MetadataStore:
    if url.startswith("sqlite:///"):
        return SqliteMetadataStore(sqlite_path(url))
    scheme = url.split(":", 1)[0]
    if scheme in ("postgresql", "postgres"):
        from inhouse.storage.postgres import PostgresMetadataStore  # loads psycopg (the `postgres` extra) only here

        return PostgresMetadataStore(url)
    raise ValueError(f"unsupported database_url scheme {scheme!r}: this build supports sqlite:///PATH and "
                     "postgresql://USER@HOST:PORT/DB")


def build_blob_store(url: str) -> BlobStore:
    parsed = urlparse(url)
    if parsed.scheme == "file":
        return LocalBlobStore(Path(parsed.path))
    if parsed.scheme == "s3":
        from inhouse.storage.s3_blobs import S3BlobStore  # loads boto3 (the `s3` extra) only when opened

        return S3BlobStore.from_url(url)
    raise ValueError(f"unsupported blob_url scheme {parsed.scheme!r}: this build supports file:///PATH and "
                     "s3://BUCKET[/PREFIX][?endpoint=URL&region=NAME]")


def url_signing_key(settings: Settings) -> bytes:
    """The configured key (shared by every server of one deployment), else this data dir's own random one."""
    configured = settings.images.url_signing_key.get_secret_value()
    return configured.encode() if configured else load_or_create_secret(settings.data_dir / "secrets" /
                                                                        "image-urls.key")


@dataclass(frozen=True)
class Engines:
    """The registries of loaded models, one per kind, each loading on its kind's model thread pool."""

    executors: ModelExecutors
    embeddings: ModelRegistry[EmbeddingEngine]
    chat: ModelRegistry[CausalEngine]
    full_chat: ModelRegistry[CausalEngine]  # fully fine-tuned chat models, keyed by their weights' blob key
    images: ModelRegistry[DiffusionEngine]


def build_engines(settings: Settings, blobs: BlobStore) -> Engines:
    executors = ModelExecutors()
    models_dir = settings.data_dir / "models"
    emb, ft, img = settings.embeddings, settings.fine_tuning, settings.images
    embeddings = embedding_registry(
        EmbeddingOptions(backend=emb.backend, threads=emb.threads, max_batch_tokens=emb.max_batch_tokens,
                         max_batch_size=emb.max_batch_size, max_queued_inputs=emb.max_queued_inputs,
                         cache_dir=settings.data_dir / "cache"),
        idle_unload_s=emb.idle_unload_seconds,
        executor=lambda: executors.pool("embeddings"),
    )

    def load_causal(entry: ModelEntry, _payload: bytes | None) -> CausalEngine:
        return CausalEngine(model_dir(entry, models_dir), ft.threads)

    async def full_weights(entry: ModelEntry) -> bytes:
        return await read_all(blobs, entry.id)  # entry.id is the weights' blob key (services/chat.py)

    def load_full(entry: ModelEntry, weights: bytes | None) -> CausalEngine:
        # The base model's architecture and tokenizer (the entry's alias), with the fine-tune's own weights.
        base = next(e for e in settings.all_models() if e.id in entry.aliases)
        return CausalEngine(model_dir(base, models_dir), ft.threads, weights)

    def load_diffusion(entry: ModelEntry, _payload: bytes | None) -> DiffusionEngine:
        return DiffusionEngine(pipeline_dir(entry, models_dir), img.threads, entry.plan_relations)

    return Engines(
        executors=executors,
        embeddings=embeddings,
        chat=ModelRegistry("chat", load_causal, ft.idle_unload_seconds, lambda: executors.pool("chat"),
                           CHAT_LIBRARIES),
        full_chat=ModelRegistry("fine-tuned", load_full, ft.idle_unload_seconds, lambda: executors.pool("chat"),
                                CHAT_LIBRARIES, fetch=full_weights),
        images=ModelRegistry("image", load_diffusion, img.idle_unload_seconds, lambda: executors.pool("images"),
                             IMAGE_LIBRARIES),
    )


def build_services(settings: Settings) -> Services:
    meta = build_metadata_store(settings.database_url)
    blobs = build_blob_store(settings.blob_url)
    engines = build_engines(settings, blobs)
    executors = engines.executors
    files = FilesService(meta.files, blobs, settings.limits)
    uploads = UploadsService(meta.uploads, blobs, files, settings.limits)
    idempotency = IdempotencyService(meta.idempotency)
    models = ModelsService(meta.models, settings.all_models())
    chat = ChatService(models, meta, blobs, engines.chat, engines.full_chat, settings.fine_tuning, executors)
    fine_tuned_embeddings = FineTunedEmbeddings(meta, blobs, settings.all_models(), settings.data_dir / "cache",
                                                settings.stale_temp_seconds)
    img = settings.images
    images = ImagesService(models, engines.images, blobs, img, settings.limits.max_image_pixels,
                           url_signing_key(settings), executors)
    rate_limits = RateLimiter()
    usage = UsageService(meta.usage, rate_limits)
    embeddings = EmbeddingsService(models, engines.embeddings, settings.embeddings, executors, fine_tuned_embeddings)
    # Image URLs in a batch's output point where clients reach the server.
    lines = BatchLines(chat, embeddings, images,
                       lambda: img.external_base_url or f"http://{settings.host}:{settings.port}")
    return Services(
        settings=settings,
        meta=meta,
        blobs=blobs,
        files=files,
        uploads=uploads,
        models=models,
        keys=KeysService(meta.keys, settings.auth),
        idempotency=idempotency,
        maintenance=MaintenanceService(meta, blobs, uploads, idempotency, settings.stale_temp_seconds,
                                       settings.images.url_ttl_seconds, caches=[fine_tuned_embeddings]),
        embedding_engines=engines.embeddings,
        embeddings=embeddings,
        chat_engines=engines.chat,
        chat=chat,
        fine_tuning=FineTuningService(meta, models),
        jobs=JobRunner(settings, meta, blobs, files, models, executors,
                       LocalTrainer(settings.fine_tuning, settings.data_dir / "models")),
        batches=BatchesService(meta),
        batch_runner=BatchRunner(settings, meta, blobs, files, lines, usage),
        images=images,
        executors=executors,
        rate_limits=rate_limits,
        usage=usage,
        usage_report=UsageReport(meta.usage, usage),
    )
