"""create_app(settings) -> FastAPI: the lifespan opens storage and services; routers and error handlers."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from fastapi import APIRouter, FastAPI
from starlette.types import Scope

from inhouse import __version__
from inhouse.api import chat, embeddings, files, fine_tuning, health, images, models, uploads
from inhouse.api import errors as api_errors
from inhouse.api.idempotency import Idempotency
from inhouse.api.middleware import BodyLimit, RequestContext, content_type
from inhouse.config import Settings
from inhouse.services.container import Services
from inhouse.worker import Worker

log = logging.getLogger("inhouse")

MULTIPART_OVERHEAD = 1024 * 1024


class UnsafeBind(RuntimeError):
    pass


async def check_bind(settings: Settings, services: Services) -> None:
    """Refuse to serve without keys anywhere but loopback."""
    if settings.binds_loopback():
        return
    if settings.auth == "off":
        raise UnsafeBind(f"auth=off is only allowed on a loopback address, not {settings.host}")
    if await services.meta.count_active_api_keys() == 0:
        raise UnsafeBind(
            f"refusing to bind {settings.host} with no API keys: create one with "
            "`inhouse keys create --project NAME`, or bind 127.0.0.1"
        )


async def unload_idle_models(services: Services) -> None:
    """Models live in the serving process, so this process frees them when idle."""
    period = max(1.0, min(60.0, services.settings.embeddings.idle_unload_seconds / 4))
    while True:
        await asyncio.sleep(period)
        try:
            await services.embedding_engines.unload_idle()
            await services.chat_engines.unload_idle()
            await services.chat.full_engines.unload_idle()
            await services.images.engines.unload_idle()
        except Exception:
            log.exception("unloading idle models failed")


def create_app(settings: Settings, services: Services | None = None) -> FastAPI:
    if services is None:
        from inhouse.bootstrap import build_services

        services = build_services(settings)
    svc = services

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await svc.open()
        await check_bind(settings, svc)
        worker = Worker(svc) if settings.run_worker else None
        task = asyncio.create_task(worker.run()) if worker else None
        reaper = asyncio.create_task(unload_idle_models(svc))
        try:
            yield
        finally:
            reaper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reaper
            if worker is not None and task is not None:
                worker.stop()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await svc.close()

    app = FastAPI(title="Inhouse", version=__version__, lifespan=lifespan, docs_url="/docs", redoc_url=None)
    app.state.services = svc
    api_errors.install(app)

    v1 = APIRouter(prefix="/v1")
    for module in (files, uploads, models, embeddings, fine_tuning, chat, images):
        v1.include_router(module.router)
    app.include_router(v1)
    app.include_router(health.router)

    limits = settings.limits

    def cap_for(scope: Scope) -> int:
        if content_type(scope).startswith("multipart/"):
            return limits.max_file_bytes + MULTIPART_OVERHEAD
        return limits.max_json_body_bytes

    # Outermost first: request id stamps everything, then caps, then idempotent replays.
    app.add_middleware(Idempotency)
    app.add_middleware(BodyLimit, cap_for=cap_for)
    app.add_middleware(RequestContext)
    return app
