"""Routes of /v1/models: list, retrieve, delete (fine-tuned models only). Ids may contain `/` and `:`."""

from __future__ import annotations

from fastapi import APIRouter

from inhouse.api.deps import ProjectDep, ServicesDep
from inhouse.schemas.models import DeleteModelResponse, ListModelsResponse, Model

router = APIRouter(tags=["models"])


@router.get("/models")
async def list_models(project: ProjectDep, services: ServicesDep) -> ListModelsResponse:
    infos = await services.models.list(project.id)
    return ListModelsResponse(data=[Model(id=m.id, created=m.created, owned_by=m.owned_by) for m in infos])


@router.get("/models/{model:path}")
async def retrieve_model(model: str, project: ProjectDep, services: ServicesDep) -> Model:
    m = await services.models.retrieve(project.id, model)
    return Model(id=m.id, created=m.created, owned_by=m.owned_by)


@router.delete("/models/{model:path}")
async def delete_model(model: str, project: ProjectDep, services: ServicesDep) -> DeleteModelResponse:
    return DeleteModelResponse(id=await services.models.delete(project.id, model), deleted=True)
