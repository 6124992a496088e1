"""What an encoder directory says about itself (pooling, normalisation, lengths), and the Encoder seam."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
import numpy.typing as npt

Pooling = Literal["mean", "cls", "max", "lasttoken"]
FloatArray = npt.NDArray[np.float32]


@dataclass(frozen=True)
class EncoderSpec:
    """Read from a sentence-transformers or plain Hugging Face encoder directory."""

    path: Path
    pooling: Pooling
    normalize: bool
    max_seq_length: int
    dimensions: int
    model_type: str
    num_heads: int
    hidden_size: int

    @classmethod
    def read(cls, path: Path) -> EncoderSpec:
        config = _json(path / "config.json") or {}
        modules = _json(path / "modules.json") or []
        pooling: Pooling = "mean"
        normalize = False
        for module in modules:
            kind = str(module.get("type", ""))
            if kind.endswith("Pooling"):
                pooling = _pooling(_json(path / module.get("path", "") / "config.json") or {})
            if kind.endswith("Normalize"):
                normalize = True
        if not modules:
            # A plain HF encoder: mean pooling and unit vectors are what every embedding API returns.
            normalize = True
        st = _json(path / "sentence_bert_config.json") or {}
        positions = int(config.get("max_position_embeddings", 512))
        max_len = int(st.get("max_seq_length", positions))
        hidden = int(config.get("hidden_size", config.get("dim", 0)))
        return cls(
            path=path,
            pooling=pooling,
            normalize=normalize,
            max_seq_length=min(max_len, positions),
            dimensions=hidden,
            model_type=str(config.get("model_type", "")),
            num_heads=int(config.get("num_attention_heads", config.get("n_heads", 0))),
            hidden_size=hidden,
        )


def _json(path: Path) -> Any:
    return json.loads(path.read_text()) if path.is_file() else None


def _pooling(cfg: dict[str, Any]) -> Pooling:
    if cfg.get("pooling_mode_cls_token"):
        return "cls"
    if cfg.get("pooling_mode_max_tokens"):
        return "max"
    if cfg.get("pooling_mode_lasttoken"):
        return "lasttoken"
    return "mean"


def pool(hidden: FloatArray, mask: npt.NDArray[np.int64], how: Pooling) -> FloatArray:
    """Pool token states [batch, seq, dim] to [batch, dim], ignoring padding."""
    if how == "cls":
        return np.ascontiguousarray(hidden[:, 0, :], dtype=np.float32)
    m = mask[:, :, None].astype(np.float32)
    if how == "max":
        maxed: FloatArray = np.where(m > 0, hidden, -np.inf).max(axis=1).astype(np.float32)
        return maxed
    if how == "lasttoken":
        last = mask.sum(axis=1) - 1
        return np.ascontiguousarray(hidden[np.arange(hidden.shape[0]), last, :], dtype=np.float32)
    mean: FloatArray = ((hidden * m).sum(axis=1) / np.clip(m.sum(axis=1), 1e-9, None)).astype(np.float32)
    return mean


class Encoder(Protocol):
    """A loaded encoder: token ids of whole windows (specials included) in, pooled vectors out."""

    spec: EncoderSpec
    backend: str

    def tokenize(self, texts: list[str]) -> list[list[int]]:
        """Content token ids per text, without special tokens and without truncation."""
        ...

    def window(self, ids: list[int]) -> list[int]:
        """Wrap content ids in the model's special tokens."""
        ...

    def forward(self, windows: list[list[int]]) -> FloatArray:
        """Pooled, not yet normalised, vectors for a batch of windows."""
        ...

    def close(self) -> None: ...
