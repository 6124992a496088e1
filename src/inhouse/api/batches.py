"""Routes of /v1/batches: create, list, retrieve, cancel."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Query
from fastapi.responses import JSONResponse
from pydantic import BeforeValidator

from inhouse.api.deps import CallerDep, ProjectDep, ServicesDep
from inhouse.schemas.batches import batch_object
from inhouse.schemas.common import valid_unicode

router = APIRouter(tags=["batches"])

BatchBody = Annotated[dict[str, Any], BeforeValidator(valid_unicode), Body()]


@router.post("/batches")
async def create_batch(body: BatchBody, caller: CallerDep, services: ServicesDep) -> JSONResponse:
    return JSONResponse(batch_object(await services.batches.create(caller.project, body, caller.key_id)))


@router.get("/batches")
async def list_batches(project: ProjectDep, services: ServicesDep, after: str | None = None,
                       limit: Annotated[int, Query()] = 20) -> JSONResponse:
    page = await services.batches.list(project, after=after, limit=limit)
    data = [batch_object(b) for b in page.items]
    return JSONResponse({"object": "list", "data": data, "first_id": data[0]["id"] if data else None,
                         "last_id": data[-1]["id"] if data else None, "has_more": page.has_more})


@router.get("/batches/{batch_id}")
async def retrieve_batch(batch_id: str, project: ProjectDep, services: ServicesDep) -> JSONResponse:
    return JSONResponse(batch_object(await services.batches.retrieve(project, batch_id)))


@router.post("/batches/{batch_id}/cancel")
async def cancel_batch(batch_id: str, project: ProjectDep, services: ServicesDep) -> JSONResponse:
    return JSONResponse(batch_object(await services.batches.cancel(project, batch_id)))
