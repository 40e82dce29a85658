"""Operator endpoints: see the served model, load another one (the safe swap of holder.py).

Disabled unless ECOMREC_ADMIN_TOKEN is set: a reload reads files and object storage the service can
reach, so it must not be open to the shop's traffic."""

from __future__ import annotations

import hmac
from typing import Annotated, Any

from anyio import to_thread
from fastapi import APIRouter, Body, Depends, Query, Request
from fastapi.responses import Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from components.serving.responses import OrjsonResponse, error_response
from components.serving.routers._deps import service
from components.serving.routers.models import ErrorBody, ModelStatus, ReloadRequest
from components.serving.state import ServiceState

bearer = HTTPBearer(auto_error=False, description="ECOMREC_ADMIN_TOKEN")
AUTH_ERRORS: dict[int | str, dict[str, Any]] = {401: {"model": ErrorBody}, 403: {"model": ErrorBody}}


def _denied(state: ServiceState, credentials: HTTPAuthorizationCredentials | None) -> Response | None:
    token = state.settings.admin_token
    if token is None:
        return error_response(403, "admin endpoints are disabled: set ECOMREC_ADMIN_TOKEN")
    if credentials is None or not hmac.compare_digest(credentials.credentials.encode(), token.encode()):
        return error_response(401, "missing or wrong bearer token", parameter="authorization",
                              headers={"WWW-Authenticate": "Bearer"})
    return None


def _status(state: ServiceState) -> dict[str, object]:
    model = state.holder.current
    last = state.holder.last_result
    return {
        "version": model.version if model else None,
        "group": model.group if model else None,
        "source": model.source if model else None,
        "registry_version": model.registry_version if model else None,
        "loaded_at": model.loaded_at if model else None,
        "loading": state.holder.loading,
        "last_load": None if last is None else {"location": last.location, "ok": last.ok,
                                                "version": last.version, "seconds": round(last.seconds, 3),
                                                "error": last.error},
    }


def build_router() -> APIRouter:
    router = APIRouter(prefix="/admin", tags=["admin"])

    @router.get("/model", response_model=ModelStatus, responses=AUTH_ERRORS, summary="The served model")
    async def model_status(
        request: Request,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)] = None,
    ) -> Response:
        state = service(request)
        return _denied(state, credentials) or OrjsonResponse(_status(state))

    @router.post(
        "/reload", response_model=ModelStatus, summary="Load a bundle, check it, then swap",
        responses={**AUTH_ERRORS, 202: {"model": ModelStatus}, 409: {"model": ErrorBody},
                   400: {"description": "the body is not valid JSON"},
                   422: {"model": ErrorBody, "description": "the bundle was refused (wait=true)"}},
    )
    async def reload(
        request: Request,
        body: Annotated[ReloadRequest | None, Body()] = None,
        wait: Annotated[bool, Query(description="answer after the load instead of at once")] = False,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)] = None,
    ) -> Response:
        state = service(request)
        denied = _denied(state, credentials)
        if denied is not None:
            return denied
        location, registry_version = (body.model if body else None), None
        if location is None and state.registry is not None:
            latest = state.registry.latest_approved(state.settings.model_group)
            if latest is None:
                return error_response(409, f"no Approved version of group {state.settings.model_group!r}")
            location, registry_version = latest.model_data_url, latest.version
        if location is None:
            current = state.holder.current
            if current is None:
                return error_response(409, "nothing to reload: no model loaded and none given",
                                      parameter="model")
            location = current.source
        if not wait:
            if not state.holder.load_in_background(location, registry_version=registry_version):
                return error_response(409, "a load is already running")
            return OrjsonResponse(_status(state), status_code=202)
        chosen, chosen_version = location, registry_version
        result = await to_thread.run_sync(lambda: state.holder.load(chosen, registry_version=chosen_version))
        if not result.ok:
            return error_response(422, f"bundle refused, still serving the previous model: {result.error}",
                                  parameter="model")
        return OrjsonResponse(_status(state))

    return router
