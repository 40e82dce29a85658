"""Liveness and readiness for Kubernetes probes."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from components.serving.responses import OrjsonResponse, error_response
from components.serving.routers._deps import service
from components.serving.routers.models import ErrorBody, Status


def build_router() -> APIRouter:
    router = APIRouter(tags=["health"])

    @router.get("/healthz", summary="The process answers (liveness)", response_model=Status)
    async def healthz() -> Response:
        return OrjsonResponse({"status": "alive"})

    @router.get("/readyz", summary="A model is loaded and smoke-scored (readiness)", response_model=Status,
                responses={503: {"model": ErrorBody}})
    async def readyz(request: Request) -> Response:
        model = service(request).holder.current
        if model is None:
            return error_response(503, "no model loaded yet")
        return OrjsonResponse({"status": "ready", "model_version": model.version})

    return router
