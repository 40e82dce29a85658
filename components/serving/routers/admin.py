"""Operator endpoints: see the served model, load another one (the safe swap of holder.py).

Disabled unless ECOMREC_ADMIN_TOKEN is set: a reload reads files and object storage the service can
reach, so it must not be open to the shop's traffic. The token is checked before a byte of the body is read
(the body is read by hand, not by FastAPI, which reads and parses it before any check runs), and the body is
capped at ECOMREC_ADMIN_MAX_BODY_BYTES."""

from __future__ import annotations

import hmac
from typing import Annotated, Any

import anyio
import orjson
from anyio import to_thread
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import ValidationError

from components.errors import EcomrecError
from components.serving.responses import OrjsonResponse, error_response
from components.serving.routers._deps import read_body, service
from components.serving.routers.models import ErrorBody, ModelStatus, ReloadRequest
from components.serving.state import ServiceState

bearer = HTTPBearer(auto_error=False, description="ECOMREC_ADMIN_TOKEN")
AUTH_ERRORS: dict[int | str, dict[str, Any]] = {401: {"model": ErrorBody}, 403: {"model": ErrorBody}}


def _denied(state: ServiceState, credentials: HTTPAuthorizationCredentials | None) -> Response | None:
    # Connection: close: the server drops the connection instead of draining a body nobody will read.
    token = state.settings.admin_token
    if token is None:
        return error_response(403, "admin endpoints are disabled: set ECOMREC_ADMIN_TOKEN",
                              headers={"Connection": "close"})
    if credentials is None or not hmac.compare_digest(credentials.credentials.encode(), token.encode()):
        return error_response(401, "missing or wrong bearer token", parameter="authorization",
                              headers={"WWW-Authenticate": "Bearer", "Connection": "close"})
    return None


async def _reload_request(request: Request, limit: int) -> ReloadRequest | Response:
    body = await read_body(request, limit)
    if body is None:
        return error_response(413, f"body over {limit} bytes (ECOMREC_ADMIN_MAX_BODY_BYTES)", parameter="body",
                              headers={"Connection": "close"})
    if not body.strip():
        return ReloadRequest()
    try:
        data = orjson.loads(body)
        return ReloadRequest() if data is None else ReloadRequest.model_validate(data)
    except orjson.JSONDecodeError:
        return error_response(400, "body: not valid JSON", parameter="body")
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "body"
        return error_response(422, f"{where}: {first['msg']}", parameter=where)


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
        openapi_extra={"requestBody": {"required": False, "content": {
            "application/json": {"schema": ReloadRequest.model_json_schema()}}}},
        responses={**AUTH_ERRORS, 202: {"model": ModelStatus}, 409: {"model": ErrorBody},
                   400: {"description": "the body is not valid JSON"}, 413: {"model": ErrorBody},
                   503: {"model": ErrorBody, "description": "the registry cannot be read"},
                   504: {"model": ErrorBody, "description": "wait=true: the load outlasted ECOMREC_RELOAD_WAIT_S"},
                   422: {"model": ErrorBody, "description": "a malformed body, or the bundle was refused "
                                                            "(wait=true)"}},
    )
    async def reload(
        request: Request,
        wait: Annotated[bool, Query(description="answer after the load instead of at once")] = False,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)] = None,
    ) -> Response:
        state = service(request)
        denied = _denied(state, credentials)
        if denied is not None:
            return denied
        body = await _reload_request(request, state.settings.admin_max_body_bytes)
        if isinstance(body, Response):
            return body
        location, registry_version, expected_sha256 = body.model, None, None
        if location is None and state.registry is not None:
            try:
                latest = state.registry.latest_approved(state.settings.model_group)
            except EcomrecError as error:
                return error_response(503, f"the registry cannot be read: {error}", parameter="registry")
            if latest is None:
                return error_response(409, f"no Approved version of group {state.settings.model_group!r}")
            location, registry_version = latest.model_data_url, latest.version
            expected_sha256 = latest.bundle_sha256 or None
        if location is None:
            current = state.holder.current
            if current is None:
                return error_response(409, "nothing to reload: no model loaded and none given",
                                      parameter="model")
            location = current.source
        if not wait:
            if not state.holder.load_in_background(location, registry_version=registry_version,
                                                   expected_sha256=expected_sha256):
                return error_response(409, "a load is already running")
            return OrjsonResponse(_status(state), status_code=202)
        chosen, chosen_version = location, registry_version
        result = None
        with anyio.move_on_after(state.settings.reload_wait_s):
            result = await to_thread.run_sync(
                lambda: state.holder.load(chosen, registry_version=chosen_version, expected_sha256=expected_sha256),
                abandon_on_cancel=True)  # the load goes on; the answer does not wait for it
        if result is None:
            return error_response(504, f"the load of {chosen[:300]} is still running after "
                                       f"{state.settings.reload_wait_s:.0f} s (ECOMREC_RELOAD_WAIT_S); see "
                                       "GET /admin/model", parameter="model")
        if not result.ok:
            return error_response(422, f"bundle refused, still serving the previous model: {result.error}",
                                  parameter="model")
        return OrjsonResponse(_status(state))

    return router
