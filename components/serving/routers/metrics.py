"""``GET /metrics`` in the Prometheus text format."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from components.serving.routers._deps import service


def build_router() -> APIRouter:
    router = APIRouter(tags=["metrics"])

    @router.get("/metrics", summary="Prometheus metrics",
                responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}})
    async def metrics(request: Request) -> Response:
        return Response(generate_latest(service(request).metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return router
