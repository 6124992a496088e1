"""Liveness and readiness, outside /v1 and without auth."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from inhouse.api.deps import ServicesDep

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(services: ServicesDep) -> JSONResponse:
    try:
        facts = await services.meta.check()
    except Exception as exc:  # readiness reports, it does not raise
        return JSONResponse({"status": "unavailable", "reason": type(exc).__name__}, status_code=503)
    return JSONResponse({"status": "ready", "database": facts})
