"""An embedding model ready to serve: tokenize, split long inputs into windows, batch, combine, normalise."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from inhouse.engines.embeddings.batcher import Batcher
from inhouse.engines.embeddings.encoder import Encoder, EncoderSpec, FloatArray

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EmbeddingOptions:
    backend: str
    threads: int
    max_batch_tokens: int
    max_batch_size: int
    max_queued_inputs: int
    cache_dir: Path


def load_encoder(spec: EncoderSpec, options: EmbeddingOptions) -> Encoder:
    threads = options.threads or os.cpu_count() or 1
    if options.backend in ("auto", "onnx"):
        try:
            from inhouse.engines.embeddings.onnx import OnnxEncoder

            return OnnxEncoder(spec, threads, options.cache_dir)
        except ImportError:
            if options.backend == "onnx":
                raise
            log.info("onnxruntime/onnx not installed; serving %s with torch", spec.path)
        except Exception:
            if options.backend == "onnx":
                raise
            log.warning("ONNX export failed for %s; serving with torch", spec.path, exc_info=True)
    from inhouse.engines.embeddings.hf import TorchEncoder

    return TorchEncoder(spec, threads)


class EmbeddingEngine:
    """One loaded model. Inputs longer than the model's window are embedded window by window and
    combined (token-weighted mean of pooled states), never silently truncated."""

    def __init__(self, encoder: Encoder, options: EmbeddingOptions) -> None:
        self.encoder = encoder
        self.spec = encoder.spec
        self.window_tokens = self.spec.max_seq_length - self._specials()
        self.batcher = Batcher(encoder, max_batch_tokens=options.max_batch_tokens,
                               max_batch_size=options.max_batch_size, max_queued_inputs=options.max_queued_inputs)

    def _specials(self) -> int:
        return len(self.encoder.window([]))

    @property
    def dimensions(self) -> int:
        return self.spec.dimensions

    def tokenize(self, texts: list[str]) -> list[list[int]]:
        return self.encoder.tokenize(texts)

    async def embed(self, token_ids: list[list[int]], *, background: bool = False) -> FloatArray:
        """Unit vectors of each input. `background` work (a batch's) runs only while no live request waits."""
        windows: list[list[int]] = []
        owners: list[int] = []
        for i, ids in enumerate(token_ids):
            for start in range(0, max(len(ids), 1), self.window_tokens):
                windows.append(self.encoder.window(ids[start : start + self.window_tokens]))
                owners.append(i)
        pooled = await self.batcher.embed(windows, background=background)
        if len(windows) == len(token_ids):
            out = pooled
        else:
            weights = np.array([len(w) for w in windows], dtype=np.float32)
            out = np.zeros((len(token_ids), self.dimensions), dtype=np.float32)
            np.add.at(out, np.array(owners), pooled * weights[:, None])
            out /= np.bincount(owners, weights=weights)[:, None].astype(np.float32)
        # Unit vectors, as OpenAI's are (and as the model's own Normalize module would make them).
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        unit: FloatArray = (out / np.clip(norms, 1e-12, None)).astype(np.float32)
        return unit

    def idle_since(self) -> float | None:
        return None if self.batcher.busy else self.batcher.last_used

    def close(self) -> None:
        self.batcher.close()
