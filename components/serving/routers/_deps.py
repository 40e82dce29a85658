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
