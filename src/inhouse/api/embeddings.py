"""Route of /v1/embeddings. The answer is assembled by hand: base64 is the SDK's default and must be cheap."""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

import numpy as np
from fastapi import APIRouter
from fastapi.responses import Response

from inhouse.api.deps import ProjectDep, ServicesDep
from inhouse.api.metering import MeterDep
from inhouse.schemas.embeddings import CreateEmbeddingRequest
from inhouse.services.rate_limits import estimate_tokens

router = APIRouter(tags=["embeddings"])
_INLINE_ROWS = 32


@router.post("/embeddings")
async def create_embedding(body: CreateEmbeddingRequest, project: ProjectDep, services: ServicesDep,
                           meter: MeterDep) -> Response:
    meter.admit(lambda: estimate_tokens(body.input))
    result = await services.embeddings.create(
        project_id=project.id, model=body.model, input=body.input, encoding_format=body.encoding_format,
        dimensions=body.dimensions,
    )
    await meter.done(body.model, input_tokens=result.prompt_tokens)
    def render() -> str:
        little_endian = result.vectors.astype("<f4", copy=False)
        if body.encoding_format == "base64":
            items: list[Any] = [base64.b64encode(np.ascontiguousarray(row).tobytes()).decode("ascii")
                                for row in little_endian]
        else:
            items = little_endian.tolist()
        payload = {
            "object": "list",
            "data": [{"object": "embedding", "index": i, "embedding": e} for i, e in enumerate(items)],
            "model": result.model,
            "usage": {"prompt_tokens": result.prompt_tokens, "total_tokens": result.prompt_tokens},
        }
        return json.dumps(payload, separators=(",", ":"))

    # Thousands of float vectors take a while to print: off the loop; a few are cheaper inline.
    text = render() if len(result.vectors) <= _INLINE_ROWS else await asyncio.to_thread(render)
    return Response(text, media_type="application/json")
