"""FastAPI dependencies: the service container and the caller's project."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from inhouse.services.container import Services
from inhouse.storage.records import Project


async def get_services(request: Request) -> Services:
    # async on purpose: FastAPI runs a sync dependency on a worker thread, a hop per request.
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]


async def get_project(request: Request, services: ServicesDep) -> Project:
    return await services.keys.authenticate(request.headers.get("authorization"))


ProjectDep = Annotated[Project, Depends(get_project)]
