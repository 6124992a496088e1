"""Routes of /v1/fine_tuning/jobs: create, list, retrieve, cancel, pause, resume, events, checkpoints."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BeforeValidator

from inhouse.api.deps import CallerDep, ProjectDep, ServicesDep
from inhouse.schemas.common import valid_unicode
from inhouse.schemas.fine_tuning import checkpoint_object, event_object, job_object

router = APIRouter(tags=["fine_tuning"])

JobBody = Annotated[dict[str, Any], BeforeValidator(valid_unicode), Body()]


@router.post("/fine_tuning/jobs")
async def create_job(body: JobBody, caller: CallerDep, services: ServicesDep) -> JSONResponse:
    return JSONResponse(job_object(await services.fine_tuning.create(caller.project, body, caller.key_id)))


@router.get("/fine_tuning/jobs")
async def list_jobs(request: Request, project: ProjectDep, services: ServicesDep, after: str | None = None,
                    limit: Annotated[int, Query()] = 20) -> JSONResponse:
    metadata = {k[len("metadata["):-1]: v for k, v in request.query_params.items()
                if k.startswith("metadata[") and k.endswith("]")}
    no_metadata = request.query_params.get("metadata") == "null"
    page = await services.fine_tuning.list(project, after=after, limit=limit, metadata=metadata or None,
                                           no_metadata=no_metadata)
    return JSONResponse({"object": "list", "data": [job_object(j) for j in page.items], "has_more": page.has_more})


@router.get("/fine_tuning/jobs/{job_id}")
async def retrieve_job(job_id: str, project: ProjectDep, services: ServicesDep) -> JSONResponse:
    return JSONResponse(job_object(await services.fine_tuning.retrieve(project, job_id)))


@router.post("/fine_tuning/jobs/{job_id}/cancel")
async def cancel_job(job_id: str, project: ProjectDep, services: ServicesDep) -> JSONResponse:
    return JSONResponse(job_object(await services.fine_tuning.cancel(project, job_id)))


@router.post("/fine_tuning/jobs/{job_id}/pause")
async def pause_job(job_id: str, project: ProjectDep, services: ServicesDep) -> JSONResponse:
    return JSONResponse(job_object(await services.fine_tuning.pause(project, job_id)))


@router.post("/fine_tuning/jobs/{job_id}/resume")
async def resume_job(job_id: str, project: ProjectDep, services: ServicesDep) -> JSONResponse:
    return JSONResponse(job_object(await services.fine_tuning.resume(project, job_id)))


@router.get("/fine_tuning/jobs/{job_id}/events")
async def list_events(job_id: str, project: ProjectDep, services: ServicesDep, after: str | None = None,
                      limit: Annotated[int, Query()] = 20) -> JSONResponse:
    page = await services.fine_tuning.events(project, job_id, after=after, limit=limit)
    return JSONResponse({"object": "list", "data": [event_object(e) for e in page.items],
                         "has_more": page.has_more})


@router.get("/fine_tuning/jobs/{job_id}/checkpoints")
async def list_checkpoints(job_id: str, project: ProjectDep, services: ServicesDep, after: str | None = None,
                           limit: Annotated[int, Query()] = 10) -> JSONResponse:
    page = await services.fine_tuning.checkpoints(project, job_id, after=after, limit=limit)
    data = [checkpoint_object(c) for c in page.items]
    return JSONResponse({"object": "list", "data": data, "first_id": data[0]["id"] if data else None,
                         "last_id": data[-1]["id"] if data else None, "has_more": page.has_more})
