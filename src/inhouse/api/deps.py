"""FastAPI dependencies: the service container and the caller, resolved by `api.auth.Authenticate`."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from inhouse.api.auth import CALLER_KEY
from inhouse.errors import AuthenticationFailed
from inhouse.records import Project
from inhouse.services.container import Services
from inhouse.services.keys import Caller


async def get_services(request: Request) -> Services:
    # async on purpose: FastAPI runs a sync dependency on a worker thread, a hop per request.
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]


async def get_caller(request: Request) -> Caller:
    caller = request.scope.get(CALLER_KEY)
    if not isinstance(caller, Caller):  # a public route asked for a caller: never serve it keyless
        raise AuthenticationFailed("This route needs an API key.", code="missing_api_key")
    return caller


CallerDep = Annotated[Caller, Depends(get_caller)]


async def get_project(caller: CallerDep) -> Project:
    return caller.project


ProjectDep = Annotated[Project, Depends(get_project)]
