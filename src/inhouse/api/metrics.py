"""GET /metrics (Prometheus text format): the process's counters, this app's live gauges read at scrape time,
and the middleware that counts and times every request by its route template."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator

from fastapi import APIRouter, Request, Response
from prometheus_client import CollectorRegistry, GCCollector, PlatformCollector, ProcessCollector
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics import Counter, Histogram
from starlette.routing import BaseRoute, Mount, compile_path
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from inhouse import observability
from inhouse.services.container import Services

router = APIRouter(tags=["metrics"])

_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class AppMetrics:
    """One app's registry: the process's counters and histograms, plus live gauges of this app's services
    (so several apps in one process each report their own queues), plus the process's own facts."""

    def __init__(self, services: Services) -> None:
        self.in_flight = 0  # requests this app is answering; only the event loop changes it
        self.registry = CollectorRegistry()
        self.registry.register(_Process())
        self.registry.register(_Live(services, self))
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        GCCollector(registry=self.registry)


class _Process:
    """The counters and histograms of observability.PROCESS, shared by every app in the process."""

    def collect(self) -> Iterator[Metric]:
        yield from observability.PROCESS.collect()


class _Live:
    """Queue depths read from the services at scrape time: nothing on a request's path keeps them."""

    def __init__(self, services: Services, metrics: AppMetrics) -> None:
        self.services = services
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        s = self.services
        yield GaugeMetricFamily("inhouse_http_requests_in_flight", "Requests being answered now.",
                                value=self.metrics.in_flight)
        queued = GaugeMetricFamily("inhouse_embedding_queued_inputs",
                                   "Embedding inputs admitted and not yet answered (capped by "
                                   "embeddings.max_queued_inputs).", labels=["model"])
        pending = GaugeMetricFamily("inhouse_embedding_pending_windows",
                                    "Embedding windows waiting for the model thread.", labels=["model"])
        by_model: dict[str, tuple[int, int]] = {}
        for engine in s.embedding_engines.engines():
            batcher = engine.batcher
            q, p = by_model.get(batcher.model, (0, 0))
            by_model[batcher.model] = (q + batcher.queued_inputs, p + batcher.pending_windows)
        for model, (q, p) in sorted(by_model.items()):
            queued.add_metric([model], q)
            pending.add_metric([model], p)
        yield queued
        yield pending
        yield GaugeMetricFamily("inhouse_generation_requests_admitted",
                                "Chat and completion requests admitted (waiting or generating; capped by "
                                "fine_tuning.max_queued_generations).", value=s.chat.admit.active)
        running = sum(e.busy for registry in (s.chat_engines, s.chat.full_engines) for e in registry.engines())
        yield GaugeMetricFamily("inhouse_generation_requests_running",
                                "Generations running on a model now; admitted minus running are waiting.",
                                value=running)
        yield GaugeMetricFamily("inhouse_image_requests_admitted",
                                "Image requests admitted (capped by images.max_queued).", value=s.images.admit.active)
        yield GaugeMetricFamily("inhouse_image_upload_bytes_held",
                                "Image bytes that edits and variations hold in memory (capped by "
                                "images.max_buffered_upload_bytes).", value=s.images.upload_budget.used)
        loaded = GaugeMetricFamily("inhouse_models_loaded", "Models loaded in this process, by kind.",
                                   labels=["kind"])
        for registry in (s.embedding_engines, s.chat_engines, s.chat.full_engines, s.images.engines):
            loaded.add_metric([registry.kind], len(registry.loaded()))
        yield loaded


class RouteTemplates:
    """The template of the route a request was for (`/v1/files/{file_id}`), never its raw path; `other` for a
    path no route serves. The table is read once from the app's routes, at its first request (every router is
    included by then)."""

    def __init__(self) -> None:
        self._by_route: dict[int, str] | None = None  # id of a route object -> its full template
        self._table: list[tuple[re.Pattern[str], str]] = []

    def of(self, scope: Scope) -> str:
        if self._by_route is None:
            self._build(scope["app"].router.routes)
        assert self._by_route is not None
        template = self._by_route.get(id(scope.get("route")))
        if template is not None:
            return template
        # Refused before routing (401, 413, 503), or no route at all: match the path as the router would.
        path: str = scope["path"]
        for regex, template in self._table:
            if regex.match(path):
                return template
        return observability.OTHER

    def _build(self, routes: list[BaseRoute]) -> None:
        by_route: dict[int, str] = {}
        for route, path, template in _walk(routes, ""):
            by_route[id(route)] = template
            self._table.append((compile_path(path)[0], template))
        self._by_route = by_route


def _walk(routes: list[BaseRoute], prefix: str) -> Iterator[tuple[BaseRoute, str, str]]:
    """(route, full path with convertors, full template) of every route, through included routers."""
    for route in routes:
        inner = getattr(route, "original_router", None)
        if inner is not None:  # newer FastAPI keeps an included router whole, behind its prefix
            context = getattr(route, "include_context", None)
            yield from _walk(inner.routes, prefix + str(getattr(context, "prefix", "") or ""))
        elif isinstance(route, Mount):
            yield route, f"{prefix}{route.path}/{{path:path}}", f"{prefix}{route.path}/{{path}}"
        elif isinstance(path := getattr(route, "path", None), str):
            yield route, prefix + path, prefix + str(getattr(route, "path_format", path))


class HttpMetrics:
    """Pure ASGI: counts and times each request by route template, method and status; tracks those in flight.

    Sits outside the cap on requests in progress, so the 503s it answers are counted too."""

    def __init__(self, app: ASGIApp, metrics: AppMetrics) -> None:
        self.app = app
        self.metrics = metrics
        # Bounded: route templates x known methods x statuses the server itself sends.
        self._series: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}
        self._templates = RouteTemplates()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500  # what the server answers if the app raises before starting its answer

        async def observed(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        start = time.perf_counter()
        self.metrics.in_flight += 1
        try:
            await self.app(scope, receive, observed)
        finally:
            self.metrics.in_flight -= 1
            self._observe(scope, status, time.perf_counter() - start)

    def _observe(self, scope: Scope, status: int, seconds: float) -> None:
        method = scope["method"] if scope["method"] in _METHODS else observability.OTHER
        key = (self._templates.of(scope), method, status)
        series = self._series.get(key)
        if series is None:
            labels = (key[0], method, str(status))
            series = (observability.HTTP_REQUESTS.labels(*labels), observability.HTTP_SECONDS.labels(*labels))
            self._series[key] = series
        series[0].inc()
        series[1].observe(seconds)


@router.get("/metrics", include_in_schema=False)
async def metrics(request: Request) -> Response:
    app_metrics: AppMetrics = request.app.state.metrics
    encoder, content_type = choose_encoder(request.headers.get("accept", ""))
    return Response(encoder(app_metrics.registry), media_type=content_type)
