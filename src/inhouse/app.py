"""create_app(settings) -> FastAPI: the lifespan opens storage and services; routers and error handlers."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import AsyncIterator, Callable

from fastapi import APIRouter, FastAPI
from starlette.types import Scope

from inhouse import __version__
from inhouse.api import (
    batches,
    chat,
    console,
    embeddings,
    files,
    fine_tuning,
    health,
    images,
    models,
    projects,
    uploads,
    usage,
)
from inhouse.api import errors as api_errors
from inhouse.api.auth import Authenticate
from inhouse.api.idempotency import Idempotency
from inhouse.api.images import REQUEST_CAP as IMAGE_REQUEST_CAP
from inhouse.api.metering import RateLimit
from inhouse.api.metrics import AppMetrics, HttpMetrics
from inhouse.api.metrics import router as metrics_router
from inhouse.api.middleware import BodyLimit, InFlight, RequestContext
from inhouse.config import Settings
from inhouse.services.container import Services
from inhouse.services.idempotency import RENEW_S
from inhouse.worker import Worker

log = logging.getLogger("inhouse")

MULTIPART_OVERHEAD = 1024 * 1024


class UnsafeBind(RuntimeError):
    pass


async def check_bind(settings: Settings, services: Services) -> bool:
    """Refuse to serve without keys anywhere but loopback; decide the auth mode once. True if open."""
    if not settings.binds_loopback():
        if settings.auth == "off":
            raise UnsafeBind(f"auth=off is only allowed on a loopback address, not {settings.host}")
        if await services.meta.keys.count_active_api_keys() == 0:
            raise UnsafeBind(
                f"refusing to bind {settings.host} with no API keys: create one with "
                "`inhouse keys create --project NAME`, or bind 127.0.0.1"
            )
    is_open = await services.keys.decide_mode(settings.binds_loopback())
    if is_open:
        log.warning("auth: OPEN - no API key needed, answering only this machine (loopback Host, no cross-site "
                    "browser requests). `inhouse keys create --project NAME` closes it.")
    else:
        log.info("auth: API keys required")
    return is_open


async def renew_idempotency_claims(services: Services) -> None:
    """This process's in-flight Idempotency-Key claims stay live only while it runs (a lease)."""
    while True:
        await asyncio.sleep(RENEW_S)
        try:
            await services.idempotency.renew()
        except Exception:
            log.exception("renewing idempotency claims failed")


def idle_check_period(settings: Settings) -> float:
    """How often idle models are looked for: a quarter of the shortest idle time of any kind, 1 to 60 s."""
    shortest = min(settings.embeddings.idle_unload_seconds, settings.fine_tuning.idle_unload_seconds,
                   settings.images.idle_unload_seconds)
    return max(1.0, min(60.0, shortest / 4))


async def unload_idle_models(services: Services) -> None:
    """Models live in the serving process, so this process frees them when idle."""
    period = idle_check_period(services.settings)
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
        gc.freeze()  # what start-up built lives as long as the process: keep it out of full collections
        worker = Worker(svc) if settings.run_worker else None
        task = asyncio.create_task(worker.run()) if worker else None
        background = [asyncio.create_task(unload_idle_models(svc)),
                      asyncio.create_task(renew_idempotency_claims(svc))]
        try:
            yield
        finally:
            for t in background:
                t.cancel()
            for t in background:
                with contextlib.suppress(asyncio.CancelledError):
                    await t
            if worker is not None and task is not None:
                worker.stop()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await svc.close()

    app = FastAPI(title="Inhouse", version=__version__, lifespan=lifespan, docs_url="/docs", redoc_url=None)
    app.state.services = svc
    api_errors.install(app)

    v1 = APIRouter(prefix="/v1")
    for module in (files, uploads, models, embeddings, fine_tuning, batches, chat, images, usage, projects):
        v1.include_router(module.router)
    app.include_router(v1)
    app.include_router(health.router)
    app.include_router(metrics_router)
    app.state.metrics = AppMetrics(svc)
    app.include_router(console.router)

    # Outermost first: request id stamps everything, metrics count and time everything (by route template),
    # then the cap on requests in progress, then the key (before a byte of body is read), then body caps and
    # deadlines, then idempotent replays.
    app.add_middleware(Idempotency)
    app.add_middleware(BodyLimit, cap_for=body_caps(settings), stall_seconds=settings.http.body_timeout_seconds)
    app.add_middleware(RateLimit)  # per-key limits, right after the key is known and before the body is read
    app.add_middleware(Authenticate)
    app.add_middleware(InFlight, limit=settings.http.max_requests, send_timeout=settings.http.send_timeout_seconds)
    app.add_middleware(HttpMetrics, metrics=app.state.metrics)
    app.add_middleware(RequestContext)
    return app


def body_caps(settings: Settings) -> Callable[[Scope], int]:
    """The body cap of each route, chosen by the route: what the client says its body is changes nothing."""
    limits = settings.limits
    by_path = {
        "/v1/files": limits.max_file_bytes + MULTIPART_OVERHEAD,
        "/v1/images/edits": IMAGE_REQUEST_CAP + MULTIPART_OVERHEAD,
        "/v1/images/variations": IMAGE_REQUEST_CAP + MULTIPART_OVERHEAD,
    }

    def cap_for(scope: Scope) -> int:
        path: str = scope["path"]
        if scope["method"] != "POST":
            return limits.max_json_body_bytes
        if path in by_path:
            return by_path[path]
        if path.startswith("/v1/uploads/") and path.endswith("/parts"):
            return limits.max_upload_part_bytes + MULTIPART_OVERHEAD
        return limits.max_json_body_bytes

    return cap_for
