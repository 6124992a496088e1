"""Routes of /v1/organization/usage/{completions,embeddings,images,fine_tuning}: usage in OpenAI's page shape."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from inhouse.api.deps import CallerDep, ServicesDep
from inhouse.errors import InvalidRequest
from inhouse.services.usage_report import UsageQuery

router = APIRouter(tags=["usage"])

_COMMON = frozenset({"start_time", "end_time", "bucket_width", "group_by", "project_ids", "api_key_ids", "models",
                     "limit", "page"})
_ARRAYS = frozenset({"group_by", "project_ids", "api_key_ids", "models", "sources"})
_EXTRA = {"completions": frozenset({"batch"}), "images": frozenset({"sources"})}
# In the spec, but nothing here has them: refused rather than ignored.
_UNSUPPORTED = {"user_ids": "there are no users here, only projects and keys",
                "sizes": "image usage is not kept per size"}


def _query(request: Request, kind: str) -> UsageQuery:
    allowed = _COMMON | _EXTRA.get(kind, frozenset())
    params: dict[str, list[str]] = {}
    for name, value in request.query_params.multi_items():
        name = name.removesuffix("[]")  # the SDK writes arrays as group_by[]=a&group_by[]=b
        if name in _UNSUPPORTED:
            raise InvalidRequest(f"'{name}' is not supported: {_UNSUPPORTED[name]}.", param=name)
        if name not in allowed:
            raise InvalidRequest(f"Unknown parameter: '{name[:100]}'.", param=name[:100])
        params.setdefault(name, []).append(value)

    def one(name: str) -> str | None:
        values = params.get(name)
        return values[-1] if values else None

    def integer(name: str) -> int | None:
        text = one(name)
        if text is None:
            return None
        if not (text.isascii() and text.lstrip("-").isdigit() and len(text) < 20):
            raise InvalidRequest(f"Invalid value for '{name}': expected an integer.", param=name)
        return int(text)

    def array(name: str) -> tuple[str, ...] | None:
        return tuple(params[name]) if name in params else None

    start = integer("start_time")
    if start is None:
        raise InvalidRequest("Missing required parameter: 'start_time'.", param="start_time")
    batch = one("batch")
    if batch not in (None, "true", "false"):
        raise InvalidRequest("Invalid value for 'batch': expected true or false.", param="batch")
    fields: dict[str, Any] = {name: array(name) for name in _ARRAYS & allowed if name != "group_by"}
    return UsageQuery(start_time=start, end_time=integer("end_time"), bucket_width=one("bucket_width") or "1d",
                      group_by=array("group_by") or (), limit=integer("limit"), page=one("page"),
                      batch=None if batch is None else batch == "true", **fields)


async def _usage(kind: str, request: Request, caller: CallerDep, services: ServicesDep) -> JSONResponse:
    return JSONResponse(await services.usage_report.page(kind, _query(request, kind), caller))


@router.get("/organization/usage/completions")
async def usage_completions(request: Request, caller: CallerDep, services: ServicesDep) -> JSONResponse:
    return await _usage("completions", request, caller, services)


@router.get("/organization/usage/embeddings")
async def usage_embeddings(request: Request, caller: CallerDep, services: ServicesDep) -> JSONResponse:
    return await _usage("embeddings", request, caller, services)


@router.get("/organization/usage/images")
async def usage_images(request: Request, caller: CallerDep, services: ServicesDep) -> JSONResponse:
    return await _usage("images", request, caller, services)


@router.get("/organization/usage/fine_tuning")
async def usage_fine_tuning(request: Request, caller: CallerDep, services: ServicesDep) -> JSONResponse:
    """An extension: trained tokens and succeeded jobs, in the same shape."""
    return await _usage("fine_tuning", request, caller, services)
