"""Request count and latency per route template and status, as a raw ASGI middleware (Starlette's
BaseHTTPMiddleware costs an extra task per request, too much at thousands of requests a second)."""

from __future__ import annotations

import time
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from components.serving.metrics import ServiceMetrics

UNMATCHED = "unmatched"  # 404s: one label value, so scanners cannot blow up the series count


class MetricsMiddleware:
    def __init__(self, app: ASGIApp, metrics: ServiceMetrics) -> None:
        self.app = app
        self.metrics = metrics
        # Labelled children by (route, method, status): .labels() takes a lock and builds a key per call.
        self._children: dict[tuple[str, str, str], tuple[Any, Any]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # if the app dies before answering, that is what the client sees

        async def send_and_record(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_record)
        finally:
            route = scope.get("route")  # set by the router on a match (the template, not the raw path)
            key = (getattr(route, "path", UNMATCHED), scope["method"], str(status))
            children = self._children.get(key)
            if children is None:
                children = (self.metrics.requests.labels(route=key[0], method=key[1], status=key[2]),
                            self.metrics.latency.labels(route=key[0], status=key[2]))
                self._children[key] = children
            children[0].inc()
            children[1].observe(time.perf_counter() - started)
