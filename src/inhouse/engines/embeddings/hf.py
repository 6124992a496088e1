"""The Hugging Face tokenizer side shared by every encoder backend, and the torch backend."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import numpy.typing as npt

from inhouse.engines.embeddings.encoder import EncoderSpec, FloatArray, pool

log = logging.getLogger(__name__)


class HfTokenizer:
    def __init__(self, spec: EncoderSpec) -> None:
        from transformers import AutoTokenizer

        self.tok: Any = AutoTokenizer.from_pretrained(str(spec.path), local_files_only=True)
        # We split long inputs into windows ourselves; the tokenizer must never truncate or warn.
        self.tok.model_max_length = 1 << 30
        self.pad_id = int(self.tok.pad_token_id if self.tok.pad_token_id is not None else 0)
        self.prefix, self.suffix = self._special_frame()
        # The Rust tokenizer underneath a fast tokenizer, called directly: the Python wrapper's per-call
        # bookkeeping costs more than tokenizing a sentence.
        self._rust: Any = getattr(self.tok, "backend_tokenizer", None)
        if self._rust is not None:
            self._rust.no_truncation()
            self._rust.no_padding()

    def _special_frame(self) -> tuple[list[int], list[int]]:
        """The special tokens the model wraps every sequence in ([CLS] … [SEP], <s> … </s>, or none),
        found by comparing one probe tokenized with and without them."""
        probe = "hello"
        bare: list[int] = self.tok(probe, add_special_tokens=False)["input_ids"]
        full: list[int] = self.tok(probe, add_special_tokens=True)["input_ids"]
        for i in range(len(full) - len(bare) + 1):
            if full[i : i + len(bare)] == bare:
                return full[:i], full[i + len(bare) :]
        return [], []

    def tokenize(self, texts: list[str]) -> list[list[int]]:
        if self._rust is not None:
            return [e.ids for e in self._rust.encode_batch(texts, add_special_tokens=False)]
        out: list[list[int]] = self.tok(texts, add_special_tokens=False, truncation=False)["input_ids"]
        return out

    def window(self, ids: list[int]) -> list[int]:
        return [*self.prefix, *ids, *self.suffix]

    def pad(self, windows: list[list[int]]) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
        width = max(len(w) for w in windows)
        ids = np.full((len(windows), width), self.pad_id, dtype=np.int64)
        mask = np.zeros((len(windows), width), dtype=np.int64)
        for i, w in enumerate(windows):
            ids[i, : len(w)] = w
            mask[i, : len(w)] = 1
        return ids, mask


class TorchEncoder:
    backend = "torch"

    def __init__(self, spec: EncoderSpec, threads: int) -> None:
        import torch
        from transformers import AutoModel

        torch.set_num_threads(threads)
        self.spec = spec
        self._torch = torch
        self._hf = HfTokenizer(spec)
        # safetensors only: a directory with only pickled weights is refused, never unpickled.
        self.model = AutoModel.from_pretrained(str(spec.path), local_files_only=True, use_safetensors=True).eval()
        self._types = int(getattr(self.model.config, "type_vocab_size", 0) or 0) > 0

    def tokenize(self, texts: list[str]) -> list[list[int]]:
        return self._hf.tokenize(texts)

    def window(self, ids: list[int]) -> list[int]:
        return self._hf.window(ids)

    def forward(self, windows: list[list[int]]) -> FloatArray:
        torch = self._torch
        ids, mask = self._hf.pad(windows)
        inputs = {"input_ids": torch.from_numpy(ids), "attention_mask": torch.from_numpy(mask)}
        if self._types:
            inputs["token_type_ids"] = torch.zeros_like(inputs["input_ids"])
        with torch.inference_mode():
            hidden = self.model(**inputs).last_hidden_state.float().numpy()
        return pool(hidden, mask, self.spec.pooling)

    def close(self) -> None:
        del self.model
