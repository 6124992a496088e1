"""Route of /v1/embeddings."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter
from fastapi.responses import Response

from inhouse.api.deps import ProjectDep, ServicesDep
from inhouse.api.metering import MeterDep
from inhouse.schemas.embeddings import CreateEmbeddingRequest
from inhouse.services.embeddings import embedding_body
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
        return embedding_body(result, body.encoding_format)

    # Thousands of float vectors take a while to print: off the loop; a few are cheaper inline.
    text = render() if len(result.vectors) <= _INLINE_ROWS else await asyncio.to_thread(render)
    return Response(text, media_type="application/json")
