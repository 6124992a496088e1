"""The process's Prometheus counters and histograms (all named `inhouse_*`), importable from every layer.

They are process-wide on purpose: the work they count happens deep in engines and storage, which hold no
handle on the app, and one process is one scrape endpoint. Each app exposes them through its own registry
(api/metrics.py) beside its live gauges, so several apps in one process (tests) never collide; they share these
counts, which only ever grow, so a reader compares before and after.

Invariant: every label value comes from a bounded set — route templates, configured model ids (fine-tunes all
report as `fine-tuned`, and `LabelGuard` caps what is left), model kinds, refusal kinds, job states.
"""

from __future__ import annotations

import threading

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics

# The `_created` twin of every counter doubles what a scrape carries and says nothing a scraper needs.
disable_created_metrics()  # type: ignore[no-untyped-call]  # untyped upstream

PROCESS = CollectorRegistry()  # not prometheus_client.REGISTRY: what other libraries put there stays theirs

FINE_TUNED = "fine-tuned"  # the one label every fine-tuned model reports as: their ids grow with every job
OTHER = "other"
REFUSAL_KINDS = ("http", "embeddings", "chat", "images", "image_upload_bytes")
JOB_STATES = ("running", "succeeded", "failed", "released")
MODEL_KINDS = ("embedding", "chat", "fine-tuned", "image")


class LabelGuard:
    """Passes the first `limit` distinct values, then answers `other`: a cap on a label's cardinality that
    holds even if a caller slips an unbounded value in."""

    def __init__(self, limit: int = 64) -> None:
        self._limit = limit
        self._seen: set[str] = set()
        self._lock = threading.Lock()

    def __call__(self, value: str) -> str:
        if value in self._seen:
            return value
        with self._lock:
            if len(self._seen) < self._limit:
                self._seen.add(value)
                return value
        return OTHER


model_label = LabelGuard()  # every `model` label goes through it

HTTP_REQUESTS = Counter("inhouse_http_requests", "HTTP requests answered, by route template, method and status.",
                        ["route", "method", "status"], registry=PROCESS)
HTTP_SECONDS = Histogram("inhouse_http_request_duration_seconds",
                         "Time from a request's arrival to the end of its answer (a stream's last byte).",
                         ["route", "method", "status"], registry=PROCESS,
                         buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120))
REFUSED = Counter("inhouse_admissions_refused",
                  "Requests refused because a bounded queue was full (429), or the server was at its cap of "
                  "requests in progress (503, kind=http).", ["kind"], registry=PROCESS)

EMBEDDING_BATCH_INPUTS = Histogram("inhouse_embedding_batch_inputs", "Inputs (windows) per embedding forward.",
                                   ["model"], registry=PROCESS, buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512))
EMBEDDING_PADDING_EFFICIENCY = Histogram(
    "inhouse_embedding_padding_efficiency", "Real tokens / padded tokens of each embedding forward (1 = no padding).",
    ["model"], registry=PROCESS, buckets=(0.25, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 0.99, 1.0))

GENERATED_TOKENS = Counter("inhouse_generation_tokens", "Tokens generated (completions), by model.", ["model"],
                           registry=PROCESS)
PROMPT_TOKENS = Counter("inhouse_generation_prompt_tokens",
                        "Prompt tokens read by finished generations, by model (each of n choices reads its prompt).",
                        ["model"], registry=PROCESS)
GENERATION_SECONDS = Counter("inhouse_generation_seconds",
                             "Seconds spent in finished generations, by model; tokens / seconds is the speed.",
                             ["model"], registry=PROCESS)

TRAINED_TOKENS = Counter("inhouse_training_tokens", "Tokens trained by this process's worker, by base model.",
                         ["model"], registry=PROCESS)
TRAINING_SECONDS = Counter("inhouse_training_seconds", "Seconds this process's worker spent training, by base model.",
                           ["model"], registry=PROCESS)
JOB_TRANSITIONS = Counter("inhouse_fine_tuning_job_transitions",
                          "Fine-tuning jobs this process's worker moved to a state (released: handed back for "
                          "another attempt, or stopped by a cancel or pause).", ["state"], registry=PROCESS)
JOBS_RUNNING = Gauge("inhouse_fine_tuning_jobs_running", "Fine-tuning jobs this process's worker is running now.",
                     registry=PROCESS)
BATCH_TRANSITIONS = Counter("inhouse_batch_transitions",
                            "Batches this process's worker moved to a terminal state.", ["state"], registry=PROCESS)
BATCH_LINES = Counter("inhouse_batch_lines", "Batch request lines this process's worker ran, by endpoint and "
                      "outcome (completed: answered 200; failed: any other answer).", ["endpoint", "outcome"],
                      registry=PROCESS)

MODEL_LOAD_SECONDS = Histogram("inhouse_model_load_seconds", "Time to load a model, by kind.", ["kind"],
                               registry=PROCESS, buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600))
MODEL_UNLOAD_SECONDS = Histogram("inhouse_model_unload_seconds", "Time to unload a model, by kind.", ["kind"],
                                 registry=PROCESS, buckets=(0.001, 0.01, 0.1, 0.5, 1, 5, 30))
MODEL_LOAD_FAILURES = Counter("inhouse_model_load_failures", "Model loads that failed, by kind.", ["kind"],
                              registry=PROCESS)

BLOB_WRITTEN_BYTES = Counter("inhouse_blob_written_bytes", "Bytes of blobs committed to the blob store.",
                             registry=PROCESS)
BLOB_READ_BYTES = Counter("inhouse_blob_read_bytes", "Bytes read from the blob store.", registry=PROCESS)

# Every series of a bounded label set exists from the start at 0, so rate() sees its first increment.
for _kind in REFUSAL_KINDS:
    REFUSED.labels(_kind)
for _state in JOB_STATES:
    JOB_TRANSITIONS.labels(_state)
for _state in ("completed", "failed", "cancelled", "expired"):
    BATCH_TRANSITIONS.labels(_state)
for _kind in MODEL_KINDS:
    MODEL_LOAD_SECONDS.labels(_kind)
    MODEL_UNLOAD_SECONDS.labels(_kind)
    MODEL_LOAD_FAILURES.labels(_kind)
