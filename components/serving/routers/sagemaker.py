"""The SageMaker hosting contract: ``GET /ping`` and ``POST /invocations`` on port 8080.

Bodies: JSON (one request object, ``{"instances": [...]}``, or a list of request objects) or CSV (one user a
line: ``user_id[,top_k]``). Answers in JSON (default) or CSV per ``Accept``. Content types are
sagemaker-inference's constants. Its CSV codec does not fit ids: ``np.genfromtxt`` turns "00123" into
123.0 and ``np.savetxt`` does not quote, so CSV goes through the csv module instead.

Untrusted sizes are refused as early as they are known: a declared Content-Length over the limit before any
byte is read, a streamed body once it passes the limit, a batch over ``max_batch`` users once its users are
counted and before any is validated. Bodies big enough to take noticeable CPU are parsed in a worker thread
so the event loop keeps answering (health checks included).
"""

from __future__ import annotations

import csv
import io
import math
import re
from typing import Any

import orjson
from anyio import to_thread
from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import ValidationError
from sagemaker_inference import content_types

from components.serving.engine import UnknownCategoryAttributeError
from components.serving.metrics import INVOCATIONS_ROUTE
from components.serving.responses import OrjsonResponse, error_response
from components.serving.routers._deps import current_model, read_body, service
from components.serving.routers.models import (
    ErrorBody,
    InvocationBatch,
    InvocationRequest,
    Predictions,
    Recommendations,
    Status,
)
from components.serving.settings import ServingSettings

# Smaller bodies parse in well under a millisecond: inline beats a hop to the thread pool.
INLINE_PARSE_BYTES = 64 << 10
INLINE_ANSWER_USERS = 32  # users answered on the event loop; a bigger batch goes to a worker thread
SUPPORTED = (content_types.JSON, content_types.CSV)
CSV_HEADER = ("user_id", "rank", "item_id", "score", "fallback_reason")


class BadInvocation(ValueError):  # noqa: N818 - an answer (422), not a crash
    def __init__(self, message: str, parameter: str = "body") -> None:
        super().__init__(message)
        self.parameter = parameter


def _media_type(value: str | None) -> str:
    return (value or "").split(";", 1)[0].strip().lower()


def _accept_ranges(value: str) -> list[tuple[str, float]]:
    """(media range, q) of an Accept header in the order listed. A malformed q-value drops its range,
    not the header."""
    ranges: list[tuple[str, float]] = []
    for part in value.split(","):
        media, *params = part.split(";")
        q = 1.0
        for param in params:
            name, _, raw = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    q = float(raw.strip())
                except ValueError:
                    q = math.nan
        if 0 <= q <= 1:  # False for NaN too
            ranges.append((media.strip().lower(), q))
    return ranges


def _accept(value: str | None) -> str | None:
    """The response type for an Accept header: the supported type with the highest q-value; None if
    neither is acceptable. As RFC 9110 12.5.1: a type takes the q of the most specific range matching it,
    q=0 means "not this", no match means not acceptable. On equal q the range listed first wins, and JSON
    when one range covers both (``*/*``)."""
    if not value or not value.strip():
        return content_types.JSON
    ranges = _accept_ranges(value)

    def rank(supported: str) -> tuple[float, int]:
        major = supported.split("/")[0]
        for pattern in (supported, f"{major}/*", "*/*"):
            for position, (media, q) in enumerate(ranges):
                if media == pattern:
                    return q, -position
        return 0.0, 0

    (q, _, _), chosen = max(((*rank(media), preference), media)
                            for preference, media in enumerate((content_types.CSV, content_types.JSON)))
    return chosen if q > 0 else None


def _over_batch(max_batch: int, got: int | None = None) -> BadInvocation:
    counted = f"got {got}" if got is not None else "got more"
    return BadInvocation(f"body: at most {max_batch} users per request (ECOMREC_MAX_BATCH), {counted}")


def _validation_error(error: ValidationError, prefix: str = "") -> BadInvocation:
    first = error.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "body"
    return BadInvocation(f"{prefix}{where}: {first['msg']}", parameter=where)


def _from_json(body: bytes, max_batch: int) -> tuple[list[InvocationRequest], bool]:
    try:
        data: Any = orjson.loads(body)
    except orjson.JSONDecodeError as error:
        raise BadInvocation(f"body: invalid JSON ({error})") from error
    # Count before validating: validating millions of rows only to refuse them is the expensive part.
    if isinstance(data, dict) and isinstance(data.get("instances"), list) and len(data["instances"]) > max_batch:
        raise _over_batch(max_batch, len(data["instances"]))
    if isinstance(data, list) and len(data) > max_batch:
        raise _over_batch(max_batch, len(data))
    try:
        if isinstance(data, dict) and "instances" in data:
            return InvocationBatch.model_validate(data).instances, True
        if isinstance(data, list):
            if not data:
                raise BadInvocation("body: empty list of requests")
            return [InvocationRequest.model_validate(item) for item in data], True
        return [InvocationRequest.model_validate(data)], False
    except ValidationError as error:
        raise _validation_error(error) from error


def _from_csv(body: bytes, max_batch: int) -> list[InvocationRequest]:
    try:
        text = body.decode("utf-8-sig")  # a byte-order mark (Excel's CSV export) is not part of the first id
    except UnicodeDecodeError as error:
        raise BadInvocation(f"body: CSV is not UTF-8 ({error})") from error
    rows: list[tuple[int, list[str]]] = []
    try:
        for line, row in enumerate(csv.reader(io.StringIO(text, newline="")), start=1):
            if not row or all(not cell.strip() for cell in row):
                continue
            if len(rows) == max_batch:  # stop reading at the first user over the limit
                raise _over_batch(max_batch)
            rows.append((line, row))
    except csv.Error as error:
        raise BadInvocation(f"body: unreadable CSV ({error})") from error
    if not rows:
        raise BadInvocation("body: no user in the CSV")
    requests: list[InvocationRequest] = []
    for line, row in rows:
        if len(row) > 2:
            raise BadInvocation(f"line {line}: expected user_id[,top_k], got {len(row)} fields",
                                f"line {line}")
        top_k: int | None = None
        if len(row) == 2 and row[1].strip():
            # ASCII digits only: int() also reads "٣" or "1_0", which no client means as a top_k.
            if not re.fullmatch(r"[0-9]{1,12}", row[1].strip()):
                raise BadInvocation(f"line {line}: top_k {row[1]!r} is not an integer", "top_k")
            top_k = int(row[1])
        try:
            requests.append(InvocationRequest(user_id=row[0].strip(), top_k=top_k))
        except ValidationError as error:
            raise _validation_error(error, prefix=f"line {line}: ") from error
    return requests


def _parse(body: bytes, content_type: str, settings: ServingSettings) -> tuple[list[InvocationRequest], bool]:
    """The requests in the body and whether it was a batch; BadInvocation (a 422) otherwise."""
    if content_type == content_types.JSON:
        requests, batch = _from_json(body, settings.max_batch)
    else:
        requests, batch = _from_csv(body, settings.max_batch), True
    for item in requests:
        if item.top_k is not None and item.top_k > settings.max_top_k:
            raise BadInvocation(f"top_k: at most {settings.max_top_k}, got {item.top_k}", "top_k")
    return requests, batch


def _to_csv(answers: list[dict[str, Any]]) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    for answer in answers:
        for rank, item in enumerate(answer["items"], start=1):
            score = "" if item["score"] is None else repr(item["score"])
            reason = answer["fallback_reason"] or ""
            writer.writerow((answer["user_id"], rank, item["item_id"], score, reason))
    return out.getvalue().encode()


_INVOCATION_BODY = {
    "required": True,
    "content": {
        content_types.JSON: {"schema": {"oneOf": [
            InvocationRequest.model_json_schema(),
            {"type": "object", "properties": {"instances": {"type": "array", "items": {"type": "object"}}},
             "required": ["instances"]},
        ]}},
        content_types.CSV: {"schema": {"type": "string"}, "example": "12680\n17850,5\n"},
    },
}


def build_router(settings: ServingSettings) -> APIRouter:
    router = APIRouter(tags=["sagemaker"])

    @router.get("/ping", response_model=Status, responses={503: {"model": ErrorBody}},
                summary="SageMaker health check")
    async def ping(request: Request) -> Response:
        if service(request).holder.current is None:
            return error_response(503, "no model loaded yet")
        return OrjsonResponse({"status": "ok"})

    @router.post(
        INVOCATIONS_ROUTE,
        summary="SageMaker inference: one user or a batch, JSON or CSV",
        openapi_extra={"requestBody": _INVOCATION_BODY},
        response_model=Recommendations | Predictions,
        responses={
            200: {"content": {content_types.CSV: {"schema": {"type": "string"}}}},
            406: {"model": ErrorBody}, 413: {"model": ErrorBody}, 415: {"model": ErrorBody},
            422: {"model": ErrorBody}, 503: {"model": ErrorBody},
        },
    )
    async def invocations(request: Request) -> Response:
        content_type = _media_type(request.headers.get("content-type")) or content_types.JSON
        if content_type not in SUPPORTED:
            return error_response(
                415, f"content type {content_type!r} is not supported; use one of {SUPPORTED}",
                parameter="content-type")
        accept = _accept(request.headers.get("accept"))
        if accept is None:
            return error_response(406, f"cannot answer in {request.headers.get('accept')!r}; use one of "
                                       f"{SUPPORTED}", parameter="accept")
        body = await read_body(request, settings.max_body_bytes)
        if body is None:
            # Connection: close, so the server drops the connection instead of draining the rest.
            return error_response(413, f"body over {settings.max_body_bytes} bytes (ECOMREC_MAX_BODY_BYTES)",
                                  parameter="body", headers={"Connection": "close"})
        try:
            if len(body) <= INLINE_PARSE_BYTES:
                requests, batch = _parse(body, content_type, settings)
            else:
                requests, batch = await to_thread.run_sync(_parse, body, content_type, settings)
        except BadInvocation as error:
            return error_response(422, str(error), parameter=error.parameter)
        model = current_model(request)
        state = service(request)

        def answer_all() -> list[dict[str, Any]]:
            return [state.answer(model, r.user_id, r.top_k or settings.default_top_k, route=INVOCATIONS_ROUTE,
                                 exclude_purchased=r.exclude_purchased, exclude=r.exclude, category=r.category)
                    for r in requests]

        try:
            # ~0.1-0.5 ms a user: a big batch inline would stall every other request (and the probes)
            answers = answer_all() if len(requests) <= INLINE_ANSWER_USERS else await to_thread.run_sync(answer_all)
        except UnknownCategoryAttributeError as error:
            return error_response(422, f"category: {error}", parameter="category")
        if accept == content_types.CSV:
            return Response(_to_csv(answers), media_type=content_types.CSV)
        return OrjsonResponse({"predictions": answers} if batch else answers[0])

    return router
