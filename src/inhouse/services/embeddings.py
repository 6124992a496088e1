"""Embeddings: validate exactly as OpenAI does, admit before any work, tokenize, embed, shape the vectors."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from inhouse.config import Embeddings as EmbeddingSettings
from inhouse.config import ModelEntry
from inhouse.engines.embeddings.encoder import FloatArray
from inhouse.engines.embeddings.engine import EmbeddingEngine
from inhouse.engines.embeddings.openai_tokens import OpenAITokenIds
from inhouse.engines.executors import ModelExecutors
from inhouse.errors import InvalidRequest
from inhouse.services.models import ModelsService, model_not_found

ENCODING_FORMATS = ("float", "base64")
_INLINE_CHARS = 4096  # smaller requests tokenize on the loop: a thread hop would cost more than the work

InputValue = str | list[str] | list[int] | list[list[int]]


class EngineSource(Protocol):
    async def get(self, entry: ModelEntry) -> EmbeddingEngine:
        """The loaded engine of `entry` (loading it off the loop on first use); EngineFailure if it cannot."""
        ...


class FineTunedSource(Protocol):
    async def resolve(self, project_id: str, name: str) -> ModelEntry | None:
        """The entry of the project's embedding fine-tune (or checkpoint) called `name`, ready to load; None
        when there is none by that name."""
        ...


@dataclass(frozen=True)
class EmbeddingResult:
    model: str
    vectors: FloatArray
    prompt_tokens: int


def _bad_input(message: str) -> InvalidRequest:
    return InvalidRequest(message, param="input")


class EmbeddingsService:
    def __init__(self, models: ModelsService, engines: EngineSource, settings: EmbeddingSettings,
                 executors: ModelExecutors, fine_tuned: FineTunedSource) -> None:
        self.models = models
        self.fine_tuned = fine_tuned
        self.executors = executors
        self.engines = engines
        self.settings = settings
        self.token_ids = OpenAITokenIds()

    def _inputs(self, value: InputValue) -> tuple[list[str] | None, list[list[int]] | None]:
        """Split the four accepted shapes into texts or OpenAI token-id lists, checking counts."""
        cap = self.settings.max_inputs
        if isinstance(value, str):
            if not value:
                raise _bad_input("'input' cannot be an empty string.")
            return [value], None
        if not value:
            raise _bad_input("'input' cannot be an empty array.")
        first = value[0]
        if isinstance(first, int):
            return None, [value]  # type: ignore[list-item]
        if len(value) > cap:
            raise _bad_input(f"'input' has {len(value)} items; at most {cap} are allowed per request.")
        if isinstance(first, str):
            texts: list[str] = value  # type: ignore[assignment]
            for i, text in enumerate(texts):
                if not text:
                    raise _bad_input(f"'input[{i}]' cannot be an empty string.")
            return texts, None
        arrays: list[list[int]] = value  # type: ignore[assignment]
        for i, arr in enumerate(arrays):
            if not arr:
                raise _bad_input(f"'input[{i}]' cannot be an empty array of tokens.")
        return None, arrays

    def _decode(self, arrays: list[list[int]]) -> list[str]:
        limit = self.settings.max_input_tokens
        texts = []
        for i, arr in enumerate(arrays):
            if len(arr) > limit:
                raise _bad_input(f"Input {i} has {len(arr)} tokens; the maximum is {limit}.")
            text = self.token_ids.decode(arr)
            if text is None:
                raise _bad_input(f"Input {i} contains token ids outside the cl100k_base vocabulary.")
            texts.append(text)
        return texts

    def _tokenize(self, engine: EmbeddingEngine, texts: list[str]) -> list[list[int]]:
        ids = engine.tokenize(texts)
        limit, total_limit = self.settings.max_input_tokens, self.settings.max_request_tokens
        total = 0
        for i, seq in enumerate(ids):
            if len(seq) > limit:
                raise _bad_input(f"Input {i} has {len(seq)} tokens; the maximum is {limit}. "
                                 "Shorten it or split it: inputs are never truncated silently.")
            total += len(seq)
        if total > total_limit:
            raise _bad_input(f"The request has {total} tokens; at most {total_limit} are allowed per request.")
        return ids

    def _prepare(self, engine: EmbeddingEngine, texts: list[str] | None, arrays: list[list[int]] | None
                 ) -> list[list[int]]:
        if arrays is not None:
            texts = self._decode(arrays)
        assert texts is not None
        return self._tokenize(engine, texts)

    async def create(self, *, project_id: str, model: str, input: InputValue, encoding_format: str | None,
                     dimensions: int | None) -> EmbeddingResult:
        entry = self.models.resolve_configured(model, "embedding")
        if entry is None and model.startswith("ft:"):
            entry = await self.fine_tuned.resolve(project_id, model)
        if entry is None:
            raise model_not_found(model, param="model")
        if encoding_format is not None and encoding_format not in ENCODING_FORMATS:
            raise InvalidRequest(f"'{encoding_format}' is not one of ['float', 'base64'] - 'encoding_format'",
                                 param="encoding_format")
        if dimensions is not None and dimensions < 1:
            raise InvalidRequest("dimensions must be at least 1.", param="dimensions")
        texts, arrays = self._inputs(input)
        engine = await self.engines.get(entry)
        if dimensions is not None and dimensions > engine.dimensions:
            raise InvalidRequest(f"dimensions must be at most {engine.dimensions} for model `{model}`.",
                                 param="dimensions")
        n_inputs = len(texts if texts is not None else arrays or [])
        # Admission first: a full queue answers 429 before any tokenizing is done.
        with engine.batcher.reserve(n_inputs):
            size = sum(map(len, texts)) if texts is not None else sum(map(len, arrays or []))
            if size <= _INLINE_CHARS:
                ids = self._prepare(engine, texts, arrays)
            else:
                ids = await self.executors.run("embeddings", self._prepare, engine, texts, arrays)
            vectors = await engine.embed(ids)
        if dimensions is not None and dimensions < vectors.shape[1]:
            vectors = vectors[:, :dimensions]
            vectors = vectors / np.clip(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12, None)
        return EmbeddingResult(model=model, vectors=vectors.astype(np.float32), prompt_tokens=sum(map(len, ids)))
