"""Shared request plumbing: the service state and the model a request is answered with."""

from __future__ import annotations

from fastapi import Request

from components.serving.engine import ServingModel
from components.serving.state import ServiceState


class ModelNotReadyError(Exception):
    """No bundle is loaded yet: answered as 503 with Retry-After (see app.py)."""


def service(request: Request) -> ServiceState:
    state: ServiceState = request.app.state.ecomrec
    return state


def current_model(request: Request) -> ServingModel:
    """Read the holder once: the whole request then uses this one model, even if a swap happens."""
    model = service(request).holder.current
    if model is None:
        raise ModelNotReadyError
    return model


async def read_body(request: Request, limit: int) -> bytes | None:
    """The body, or None as soon as it is known to be over ``limit`` bytes: from Content-Length before
    anything is read, else while streaming (chunked bodies declare no length). A client that leaves
    mid-body raises starlette's ClientDisconnect (app.py answers it as the client's doing, not a 500)."""
    declared = request.headers.get("content-length", "").strip()
    if declared.isascii() and declared.isdigit():
        digits = declared.lstrip("0") or "0"
        # Over 12 digits is over any limit here (and int() refuses thousands of digits).
        if len(digits) > 12 or int(digits) > limit:
            return None
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)
