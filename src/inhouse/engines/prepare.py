"""`inhouse models prepare`: the first-use work of every configured model, done ahead of the first request
through the same code a request would run (GGUF conversion, pipeline assembly, ONNX export)."""

from __future__ import annotations

import time
from collections.abc import Iterator

from inhouse.config import Settings
from inhouse.progress import progress


def prepare_all(settings: Settings, only: list[str] | None = None) -> Iterator[str]:
    """Prepare each model (all configured ones, or those named); yields one line per model saying what it did."""
    from inhouse.engines.causal.loading import model_dir
    from inhouse.engines.embeddings.encoder import EncoderSpec
    from inhouse.engines.embeddings.engine import EmbeddingOptions, load_encoder
    from inhouse.engines.images.assembly import pipeline_dir
    from inhouse.engines.locate import require_model

    entries = [e for e in settings.all_models() if not only or e.id in only]
    unknown = sorted(set(only or []) - {e.id for e in entries})
    if unknown:
        raise SystemExit(f"no configured model named {', '.join(unknown)}")
    models_dir = settings.data_dir / "models"
    emb = settings.embeddings
    options = EmbeddingOptions(backend=emb.backend, threads=emb.threads, max_batch_tokens=emb.max_batch_tokens,
                               max_batch_size=emb.max_batch_size, max_queued_inputs=emb.max_queued_inputs,
                               cache_dir=settings.data_dir / "cache")
    bar = progress(len(entries), "models", unit="model")
    try:
        for entry in entries:
            bar.set_description_str(entry.id)
            t0 = time.perf_counter()
            if entry.kind in ("chat", "chat-weights"):
                where = model_dir(entry, models_dir)
                what = f"safetensors in {where}" if entry.gguf_file else f"ready in {where}"
            elif entry.kind == "embedding":
                encoder = load_encoder(EncoderSpec.read(require_model(entry)), options)
                what = f"{encoder.backend} backend ready"
                encoder.close()
            else:
                what = f"pipeline in {pipeline_dir(entry, models_dir)}"
            bar.update(1)
            yield f"{entry.id}: {what} ({time.perf_counter() - t0:.1f} s)"
    finally:
        bar.close()
