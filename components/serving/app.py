"""Builds the FastAPI app: routers, metrics middleware, error handlers, start-up load and registry watch.

Dependencies are injected (settings, S3 client, registry) so tests and the CLI wire the same app."""

from __future__ import annotations

import inspect
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import pyarrow
from anyio import to_thread
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.requests import ClientDisconnect

from components.bundle.format import BundleLimits
from components.realtime.service import build_realtime
from components.registry.base import ModelRegistry
from components.serving.fastpath import RecommendationsFastPath
from components.serving.holder import ModelHolder
from components.serving.metrics import ServiceMetrics
from components.serving.middleware import MetricsMiddleware
from components.serving.responses import OrjsonResponse, error_response
from components.serving.routers import admin, events, health, metrics, recommendations, sagemaker
from components.serving.routers._deps import ModelNotReadyError
from components.serving.settings import ServingSettings
from components.serving.source import BundleFetcher
from components.serving.state import ServiceState
from components.serving.watcher import RegistryWatcher

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
else:
    S3Client = Any

log = logging.getLogger(__name__)


def default_s3_client(settings: ServingSettings) -> Callable[[], S3Client]:
    """A factory, so no client (and no credential lookup) is created unless an s3:// bundle is read."""

    def make() -> S3Client:
        import boto3

        return boto3.client("s3", endpoint_url=settings.s3_endpoint_url)

    return make


def create_app(settings: ServingSettings | None = None, *,
               s3_client: S3Client | Callable[[], S3Client] | None = None,
               registry: ModelRegistry | None = None) -> FastAPI:
    settings = settings or ServingSettings()
    # Bundle tables are read through Arrow; its default pool (mimalloc) keeps freed memory, which doubled
    # a worker's resident size. The system allocator returns it (see components.memory).
    pyarrow.set_memory_pool(pyarrow.system_memory_pool())
    if registry is None and settings.registry_root is not None:
        from components.registry.local import LocalRegistry

        registry = LocalRegistry(settings.registry_root)
    service_metrics = ServiceMetrics()
    fetcher = BundleFetcher(settings.work_dir, s3_client or default_s3_client(settings),
                            limits=BundleLimits(settings.max_bundle_bytes, settings.max_table_rows),
                            memory_share=settings.load_memory_share)
    holder = ModelHolder(fetcher, service_metrics, smoke_users=settings.smoke_users,
                         scoring_threads=settings.scoring_threads,
                         feature_dir=fetcher.work_dir / "features" if settings.events_on else None)
    watcher = (RegistryWatcher(registry, settings.model_group, holder, settings.watch_interval_s)
               if registry is not None else None)
    realtime = build_realtime(settings, service_metrics.realtime)
    state = ServiceState(settings=settings, metrics=service_metrics, holder=holder, registry=registry,
                         watcher=watcher, realtime=realtime)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await to_thread.run_sync(state.start)
        try:
            yield
        finally:
            state.stop()
            if realtime is not None:
                realtime.close()

    options: dict[str, Any] = {}
    if "telemetry" in inspect.signature(FastAPI.__init__).parameters:
        # FastAPI's built-in OpenTelemetry checks its providers on every request (~20 us); the service
        # exports its own Prometheus metrics instead.
        options["telemetry"] = {"tracing": False, "metrics": False, "logs": False}
    app = FastAPI(
        title="ecomrec inference",
        version="1",
        summary="Personalised product recommendations from an ecomrec model bundle.",
        lifespan=lifespan,
        default_response_class=OrjsonResponse,
        # Starlette's "/path/" -> "/path" redirect builds its Location from the Host header: an open
        # redirect for whoever sets Host. No endpoint needs it; a trailing slash is a 404.
        redirect_slashes=False,
        **options,
    )
    app.state.ecomrec = state
    app.state.realtime = realtime
    app.include_router(recommendations.build_router(settings))
    app.include_router(sagemaker.build_router(settings))
    app.include_router(health.build_router())
    app.include_router(metrics.build_router())
    app.include_router(admin.build_router())
    if realtime is not None:  # POST /events exists only where events are taken (ECOMREC_EVENTS_RAW_ROOT)
        app.include_router(events.build_router(settings))
    if settings.fast_path:
        app.add_middleware(RecommendationsFastPath, state=state)
    app.add_middleware(MetricsMiddleware, metrics=service_metrics)  # added last: outermost, sees every answer

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_: Request, error: RequestValidationError) -> Response:
        # 422 naming the parameter, plus FastAPI's usual detail list for clients that parse it.
        errors = error.errors()
        first = errors[0] if errors else {"loc": ("request",), "msg": "invalid request"}
        loc = [str(p) for p in first["loc"]]
        name = loc[-1] if loc and loc[0] in ("query", "path", "header", "cookie") else ".".join(loc)
        # The offending input is not echoed back: it can be huge, and reflecting it helps nobody.
        detail = [{"type": e.get("type"), "loc": [str(p) for p in e.get("loc", ())], "msg": str(e.get("msg"))}
                  for e in errors]
        return OrjsonResponse({"error": f"{name}: {first['msg']}", "parameter": name, "detail": detail},
                              status_code=422)

    @app.exception_handler(ClientDisconnect)
    async def client_left(request: Request, _: ClientDisconnect) -> Response:
        # The client dropped mid-body: its doing, not the service's. No traceback, no 5xx (the error-rate
        # alert reads 5xx); 499 as nginx logs it (nobody receives it), and a counter of its own.
        route = getattr(request.scope.get("route"), "path", "unmatched")
        service_metrics.client_disconnects.labels(route=route).inc()
        log.info("client left before sending the whole body of %s %s", request.method, route)
        return Response(status_code=499)

    @app.exception_handler(ModelNotReadyError)
    async def not_ready(_: Request, __: ModelNotReadyError) -> Response:
        return error_response(503, "no model loaded yet", headers={"Retry-After": "5"})

    return app
