"""Routes of /v1/organization/projects: projects and their API keys, for admin keys (and open mode)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from fastapi.responses import JSONResponse
from pydantic import ConfigDict, Field, StrictInt, StrictStr

from inhouse.api.deps import CallerDep, ServicesDep
from inhouse.errors import InvalidRequest, PermissionDenied
from inhouse.records import ApiKey, Project
from inhouse.schemas.common import Request as Body
from inhouse.services.keys import KEY_PREFIX, Caller

router = APIRouter(tags=["projects"])
Limit = Annotated[int, Query(ge=1, le=100)]


async def get_admin(caller: CallerDep) -> Caller:
    if not caller.admin:
        raise PermissionDenied("This route needs an admin key (`inhouse keys create --project NAME --admin`).",
                               code="insufficient_permissions")
    return caller


AdminDep = Annotated[Caller, Depends(get_admin)]


class CreateKeyRequest(Body):
    """An extension (OpenAI makes keys in its dashboard only): a key in the project, with its limits."""

    name: StrictStr = Field("", max_length=256)
    rpm: StrictInt | None = None
    tpm: StrictInt | None = None


class UpdateKeyRequest(Body):
    """An extension: new limits for a key (a field left out keeps its value; 0 or null is unlimited). OpenAI's
    own fields of this call are refused: keys here have no scopes and never expire."""

    rpm: StrictInt | None = None
    tpm: StrictInt | None = None
    scopes: list[StrictStr] | None = None
    expires_in_seconds: StrictInt | None = None


class ProjectLimits(Body):
    """A project's limits per minute, shared by all its keys (a field left out keeps its value; 0 or null is
    unlimited)."""

    model_config = ConfigDict(extra="forbid")
    rpm: StrictInt | None = None
    tpm: StrictInt | None = None


class UpdateProjectRequest(Body):
    """OpenAI's modify-project call: `name`, plus the extension `rate_limits`. Its `external_key_id` and
    `geography` are refused (nothing here uses them), and so is any other field."""

    model_config = ConfigDict(extra="forbid")
    name: StrictStr | None = Field(None, max_length=256)
    rate_limits: ProjectLimits = Field(default_factory=ProjectLimits)
    external_key_id: Any = None
    geography: Any = None


def project_object(p: Project) -> dict[str, Any]:
    return {"id": p.id, "object": "organization.project", "name": p.name, "created_at": p.created_at,
            "archived_at": None, "status": "active", "rate_limits": {"rpm": p.rpm, "tpm": p.tpm}}


def key_object(key: ApiKey, value: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "object": "organization.project.api_key", "id": key.id, "name": key.name,
        # The secret is never stored, so only its public part (which names the key) can be shown.
        "redacted_value": f"{KEY_PREFIX}{key.id.removeprefix('key_')}-****",
        "created_at": key.created_at, "last_used_at": key.last_used_at,
        "owner": {"type": "service_account"}, "owner_project_access": "active",
        "rate_limits": {"rpm": key.rpm, "tpm": key.tpm}, "admin": key.admin,
    }
    if value is not None:
        out["value"] = value
    return out


def _list(data: list[dict[str, Any]], has_more: bool) -> JSONResponse:
    return JSONResponse({"object": "list", "data": data, "first_id": data[0]["id"] if data else None,
                         "last_id": data[-1]["id"] if data else None, "has_more": has_more})


@router.get("/organization/projects")
async def list_projects(admin: AdminDep, services: ServicesDep, after: str | None = None, limit: Limit = 20,
                        include_archived: bool = False) -> JSONResponse:
    # include_archived changes nothing: no project is ever archived here.
    page = await services.keys.projects(after=after, limit=limit)
    return _list([project_object(p) for p in page.items], page.has_more)


@router.get("/organization/projects/{project_id}")
async def retrieve_project(project_id: str, admin: AdminDep, services: ServicesDep) -> JSONResponse:
    return JSONResponse(project_object(await services.keys.project(project_id)))


@router.post("/organization/projects/{project_id}")
async def update_project(project_id: str, body: UpdateProjectRequest, admin: AdminDep,
                         services: ServicesDep) -> JSONResponse:
    for refused in ("external_key_id", "geography"):
        if refused in body.model_fields_set:
            raise InvalidRequest(f"'{refused}' is not supported here.", param=refused)
    limits: dict[str, int | None] = {name: getattr(body.rate_limits, name) for name in ("rpm", "tpm")
                                     if name in body.rate_limits.model_fields_set}
    if body.name is None and not limits:
        raise InvalidRequest("Send 'name' and/or 'rate_limits': {'rpm', 'tpm'} (0 or null: unlimited).",
                             param="rate_limits")
    return JSONResponse(project_object(await services.keys.update_project(project_id, name=body.name,
                                                                          limits=limits)))


@router.get("/organization/projects/{project_id}/api_keys")
async def list_keys(project_id: str, admin: AdminDep, services: ServicesDep, after: str | None = None,
                    limit: Limit = 20) -> JSONResponse:
    page = await services.keys.project_keys(project_id, after=after, limit=limit)
    return _list([key_object(k) for k in page.items], page.has_more)


@router.post("/organization/projects/{project_id}/api_keys")
async def create_key(project_id: str, body: CreateKeyRequest, admin: AdminDep,
                     services: ServicesDep) -> JSONResponse:
    created = await services.keys.create_in(project_id, body.name, rpm=body.rpm, tpm=body.tpm)
    return JSONResponse(key_object(created.key, created.token))


@router.get("/organization/projects/{project_id}/api_keys/{api_key_id}")
async def retrieve_key(project_id: str, api_key_id: str, admin: AdminDep, services: ServicesDep) -> JSONResponse:
    return JSONResponse(key_object(await services.keys.project_key(project_id, api_key_id)))


@router.post("/organization/projects/{project_id}/api_keys/{api_key_id}")
async def update_key(project_id: str, api_key_id: str, body: UpdateKeyRequest, admin: AdminDep,
                     services: ServicesDep) -> JSONResponse:
    for refused in ("scopes", "expires_in_seconds"):
        if refused in body.model_fields_set:
            raise InvalidRequest(f"'{refused}' is not supported: keys here have no scopes and do not expire.",
                                 param=refused)
    changes: dict[str, int | None] = {name: getattr(body, name) for name in ("rpm", "tpm")
                                      if name in body.model_fields_set}
    if not changes:
        raise InvalidRequest("Send 'rpm' and/or 'tpm' (0 or null: unlimited).", param="rpm")
    await services.keys.project_key(project_id, api_key_id)
    return JSONResponse(key_object(await services.keys.update_limits(api_key_id, changes)))


@router.delete("/organization/projects/{project_id}/api_keys/{api_key_id}")
async def delete_key(project_id: str, api_key_id: str, admin: AdminDep, services: ServicesDep) -> JSONResponse:
    """Revokes the key: it stops working at once in this process, within 5 s in the others."""
    await services.keys.project_key(project_id, api_key_id)
    await services.keys.revoke(api_key_id)
    return JSONResponse({"object": "organization.project.api_key.deleted", "id": api_key_id, "deleted": True})
