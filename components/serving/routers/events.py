"""``POST /events``: the shop's events, checked by the raw contract's rules, logged durably, then fed to the
online store (components/realtime/intake.py)."""

from __future__ import annotations

import hmac
from typing import Annotated, Any

import orjson
from anyio import to_thread
from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field

from components.realtime.service import Realtime
from components.serving.responses import OrjsonResponse, error_response
from components.serving.routers.models import ErrorBody
from components.serving.settings import ServingSettings

ROUTE = "/events"
bearer = HTTPBearer(auto_error=False, description="ECOMREC_EVENTS_TOKEN (or the secret ECOMREC_EVENTS_TOKEN_SECRET)")


class RejectedEvent(BaseModel):
    index: int
    reason: str = Field(description="the raw data contract's reason, as the ETL's rejected/ table names it, or "
                                    "timestamp_in_future: stamped over ECOMREC_EVENTS_MAX_AHEAD_S ahead of the "
                                    "server's clock")


class EventsAnswer(BaseModel):
    accepted: list[int] = Field(description="indices of the events acknowledged (durably logged)")
    rejected: list[RejectedEvent]
    already_received: list[int] = Field(description="indices of accepted retries of an event_id seen before")
    degraded: bool = Field(description="true when the online store was not reached: events are logged, "
                                       "answers do not reflect them yet")


class EventIn(BaseModel):
    """One event (DATA_CONTRACT.md's events columns); documented here, checked by the contract's rules."""

    user_id: str
    item_id: str
    event_type: str = Field(description="view, add_to_cart, purchase or return")
    timestamp: str = Field(description="ISO-8601; naive = UTC")
    quantity: int | None = None
    price: float | None = None
    session_id: str | None = None
    event_id: str | None = Field(default=None, description="makes a retry idempotent")


# The body's schema, without $refs (FastAPI does not register models named only in openapi_extra).
BATCH_SCHEMA = {"type": "object", "required": ["events"], "additionalProperties": False,
                "properties": {"events": {"type": "array", "items": EventIn.model_json_schema()}}}


def build_router(settings: ServingSettings) -> APIRouter:
    router = APIRouter(tags=["events"])

    @router.post(ROUTE, response_model=EventsAnswer, summary="Send shop events",
                 openapi_extra={"requestBody": {"required": True, "content": {"application/json": {
                     "schema": BATCH_SCHEMA}}}},
                 responses={401: {"model": ErrorBody}, 422: {"model": ErrorBody}, 503: {"model": ErrorBody}})
    async def events(
        request: Request,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)] = None,
    ) -> Response:
        realtime: Realtime = request.app.state.realtime  # the route exists only when it is set
        # Checked before a byte of the body is read; Connection: close drops the unread body with the client.
        if realtime.token is not None and (credentials is None or not hmac.compare_digest(
                credentials.credentials.encode(), realtime.token.encode())):
            return error_response(401, "POST /events needs Authorization: Bearer <the events token>",
                                  parameter="authorization",
                                  headers={"WWW-Authenticate": "Bearer", "Connection": "close"})
        try:
            body: Any = orjson.loads(await request.body())
        except orjson.JSONDecodeError as error:
            return error_response(422, f"body: not JSON ({error})", parameter="body")
        batch = body.get("events") if isinstance(body, dict) else None
        if not isinstance(batch, list) or set(body) != {"events"}:
            return error_response(422, 'body: expected {"events": [...]} and nothing else', parameter="events")
        if len(batch) > settings.max_events_per_request:
            return error_response(422, f"events: at most {settings.max_events_per_request} per request",
                                  parameter="events")
        try:
            result = await to_thread.run_sync(realtime.intake.ingest, batch)
        except OSError as error:  # the log could not be written: nothing of the batch is acknowledged
            return error_response(503, f"event log unavailable, nothing acknowledged: {error}",
                                  headers={"Retry-After": "1"})
        realtime.metrics.intake(result)
        return OrjsonResponse(result.as_json())

    return router
