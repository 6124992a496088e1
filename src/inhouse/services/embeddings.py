"""Embeddings: validate exactly as OpenAI does, admit before any work, tokenize, embed, shape the vectors."""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import orjson

from inhouse.config import Embeddings as EmbeddingSettings
from inhouse.config import ModelEntry
from inhouse.engines.embeddings.encoder import FloatArray
from inhouse.engines.embeddings.openai_tokens import OpenAITokenIds
from inhouse.errors import InhouseError, InvalidRequest
from inhouse.services.models import ModelsService, model_not_found
from inhouse.services.ports import EmbeddingModel, ModelPools, ModelSource

ENCODING_FORMATS = ("float", "base64")
_INLINE_CHARS = 4096  # smaller requests tokenize on the loop: a thread hop would cost more than the work

InputValue = str | list[str] | list[int] | list[list[int]]


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


@dataclass(frozen=True)
class EmbeddingAsk:
    """One request's parameters, as the route's body carries them."""

    model: str
    input: InputValue
    encoding_format: str | None = None
    dimensions: int | None = None


def embedding_body(result: EmbeddingResult, encoding_format: str | None) -> str:
    """The answer's JSON text, assembled by hand: base64 is the SDK's default and must be cheap."""
    little_endian = result.vectors.astype("<f4", copy=False)
    items: list[Any]
    if encoding_format == "base64":
        items = [base64.b64encode(np.ascontiguousarray(row).tobytes()).decode("ascii") for row in little_endian]
    else:
        # Each float32 widened to float64 and printed shortest-round-trip: the digits json would print from
        # tolist(), about ten times faster.
        items = list(little_endian.astype(np.float64))
    payload = {
        "object": "list",
        "data": [{"object": "embedding", "index": i, "embedding": e} for i, e in enumerate(items)],
        "model": result.model,
        "usage": {"prompt_tokens": result.prompt_tokens, "total_tokens": result.prompt_tokens},
    }
    return orjson.dumps(payload, option=orjson.OPT_SERIALIZE_NUMPY).decode()


def _shorten(vectors: FloatArray, dimensions: int | None) -> FloatArray:
    if dimensions is not None and dimensions < vectors.shape[1]:
        vectors = vectors[:, :dimensions]
        vectors = vectors / np.clip(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12, None)
    out: FloatArray = vectors.astype(np.float32)
    return out


def _bad_input(message: str) -> InvalidRequest:
    return InvalidRequest(message, param="input")


class EmbeddingsService:
    def __init__(self, models: ModelsService, engines: ModelSource[EmbeddingModel], settings: EmbeddingSettings,
                 executors: ModelPools, fine_tuned: FineTunedSource) -> None:
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

    def _tokenize(self, engine: EmbeddingModel, texts: list[str]) -> list[list[int]]:
        return self._check_lengths(engine.tokenize(texts))

    def _check_lengths(self, ids: list[list[int]]) -> list[list[int]]:
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

    def _prepare(self, engine: EmbeddingModel, texts: list[str] | None, arrays: list[list[int]] | None
                 ) -> list[list[int]]:
        if arrays is not None:
            texts = self._decode(arrays)
        assert texts is not None
        return self._tokenize(engine, texts)

    async def _entry(self, project_id: str, model: str) -> ModelEntry:
        entry = self.models.resolve_configured(model, "embedding")
        if entry is None and model.startswith("ft:"):
            entry = await self.fine_tuned.resolve(project_id, model)
        if entry is None:
            raise model_not_found(model, param="model")
        return entry

    @staticmethod
    def _check_options(encoding_format: str | None, dimensions: int | None) -> None:
        if encoding_format is not None and encoding_format not in ENCODING_FORMATS:
            raise InvalidRequest(f"'{encoding_format}' is not one of ['float', 'base64'] - 'encoding_format'",
                                 param="encoding_format")
        if dimensions is not None and dimensions < 1:
            raise InvalidRequest("dimensions must be at least 1.", param="dimensions")

    @staticmethod
    def _check_dimensions(engine: EmbeddingModel, model: str, dimensions: int | None) -> None:
        if dimensions is not None and dimensions > engine.dimensions:
            raise InvalidRequest(f"dimensions must be at most {engine.dimensions} for model `{model}`.",
                                 param="dimensions")

    async def create(self, *, project_id: str, model: str, input: InputValue, encoding_format: str | None,
                     dimensions: int | None) -> EmbeddingResult:
        entry = await self._entry(project_id, model)
        self._check_options(encoding_format, dimensions)
        texts, arrays = self._inputs(input)
        engine = await self.engines.get(entry)
        self._check_dimensions(engine, model, dimensions)
        n_inputs = len(texts if texts is not None else arrays or [])
        # Admission first: a full queue answers 429 before any tokenizing is done.
        with engine.batcher.reserve(n_inputs):
            size = sum(map(len, texts)) if texts is not None else sum(map(len, arrays or []))
            if size <= _INLINE_CHARS:
                ids = self._prepare(engine, texts, arrays)
            else:
                ids = await self.executors.run("embeddings", self._prepare, engine, texts, arrays)
            vectors = await engine.embed(ids)
        return EmbeddingResult(model=model, vectors=_shorten(vectors, dimensions), prompt_tokens=sum(map(len, ids)))

    async def create_many(self, project_id: str, asks: list[EmbeddingAsk]) -> list[EmbeddingResult | InhouseError]:
        """Many requests as one piece of background work (a batch's lines): each checked exactly as `create`
        checks it (a bad one gets its own error, the others go on), every text tokenized in one call, every
        window embedded in one submission that the engine sorts by length into full batches, behind live
        requests. Not admitted against the live queue: the caller bounds how many inputs it sends at once."""
        out: list[EmbeddingResult | InhouseError | None] = [None] * len(asks)
        groups: dict[str, tuple[ModelEntry, list[int]]] = {}
        split: dict[int, tuple[list[str] | None, list[list[int]] | None]] = {}
        for i, ask in enumerate(asks):
            try:
                entry = await self._entry(project_id, ask.model)
                self._check_options(ask.encoding_format, ask.dimensions)
                split[i] = self._inputs(ask.input)
            except InhouseError as exc:
                out[i] = exc
                continue
            groups.setdefault(entry.id, (entry, []))[1].append(i)
        for entry, members in groups.values():
            engine = await self.engines.get(entry)
            ready: list[int] = []
            for i in members:
                try:
                    self._check_dimensions(engine, asks[i].model, asks[i].dimensions)
                    ready.append(i)
                except InhouseError as exc:
                    out[i] = exc
            ids_of = await self.executors.run("embeddings", self._prepare_many, engine, [split[i] for i in ready])
            good = [(i, ids) for i, ids in zip(ready, ids_of, strict=True) if not isinstance(ids, InhouseError)]
            for i, ids in zip(ready, ids_of, strict=True):
                if isinstance(ids, InhouseError):
                    out[i] = ids
            if not good:
                continue
            vectors = await engine.embed([seq for _, ids in good for seq in ids], background=True)
            row = 0
            for i, ids in good:
                mine = vectors[row: row + len(ids)]
                row += len(ids)
                out[i] = EmbeddingResult(model=asks[i].model, vectors=_shorten(mine, asks[i].dimensions),
                                         prompt_tokens=sum(map(len, ids)))
        assert all(r is not None for r in out)
        return [r for r in out if r is not None]

    def _prepare_many(self, engine: EmbeddingModel, inputs: list[tuple[list[str] | None, list[list[int]] | None]]
                      ) -> list[list[list[int]] | InhouseError]:
        """Token ids of each request's inputs (one tokenizer call for all texts), or its error."""
        texts_of: list[list[str] | InhouseError] = []
        for texts, arrays in inputs:
            try:
                texts_of.append(self._decode(arrays) if arrays is not None else texts or [])
            except InhouseError as exc:
                texts_of.append(exc)
        flat = [t for group in texts_of if not isinstance(group, InhouseError) for t in group]
        ids = iter(engine.tokenize(flat) if flat else [])
        out: list[list[list[int]] | InhouseError] = []
        for group in texts_of:
            if isinstance(group, InhouseError):
                out.append(group)
                continue
            try:
                out.append(self._check_lengths([next(ids) for _ in group]))
            except InhouseError as exc:
                out.append(exc)
        return out
