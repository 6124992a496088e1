"""Embeddings wire models: CreateEmbeddingRequest (the response is built directly, for speed)."""

from __future__ import annotations

from pydantic import StrictInt, StrictStr

from inhouse.schemas.common import Request


class CreateEmbeddingRequest(Request):
    # Strict types: `true` or `1.5` is not a token id, `1` is not a string.
    input: StrictStr | list[StrictStr] | list[StrictInt] | list[list[StrictInt]]
    model: StrictStr
    encoding_format: StrictStr | None = None
    dimensions: StrictInt | None = None
    user: StrictStr | None = None
