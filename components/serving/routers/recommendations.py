"""``GET /recommendations``: the shop's call on every page view.

No ``from __future__ import annotations`` here: the query bounds come from settings in a closure, which
FastAPI can only read from evaluated annotations."""


from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from components.serving.engine import UnknownCategoryAttributeError
from components.serving.metrics import RECOMMENDATIONS_ROUTE
from components.serving.responses import OrjsonResponse, error_response
from components.serving.routers._deps import current_model, service
from components.serving.routers.models import ErrorBody, Recommendations
from components.serving.settings import ServingSettings

MAX_EXCLUDE = 1000  # item ids in `exclude`
# 4,000 characters stay under the HTTP server's 64 KB request line even fully %-encoded; longer lists go in
# a POST /invocations body.
EXCLUDE_MAX_CHARS = 4000
ID_MAX_CHARS = 256  # user_id and category


def parse_exclude(value: str | None) -> list[str]:
    return [part for part in (p.strip() for p in value.split(",")) if part] if value else []


def build_router(settings: ServingSettings) -> APIRouter:
    router = APIRouter(tags=["recommendations"])

    @router.get(
        RECOMMENDATIONS_ROUTE,
        response_model=Recommendations,
        responses={400: {"description": "not valid HTTP, e.g. a request line over 64 KB (the HTTP server "
                                        "answers it)"},
                   422: {"model": ErrorBody, "description": "a malformed parameter, named in the body"},
                   503: {"model": ErrorBody, "description": "no model loaded yet"}},
        summary="Top-k items for a user",
    )
    async def recommendations(
        request: Request,
        user_id: Annotated[str, Query(min_length=1, max_length=ID_MAX_CHARS, description="the shop's customer id")],
        top_k: Annotated[int, Query(ge=1, le=settings.max_top_k)] = settings.default_top_k,
        exclude_purchased: Annotated[bool, Query(description="leave out items the user bought")] = False,
        exclude: Annotated[str | None, Query(max_length=EXCLUDE_MAX_CHARS,
                                             description="item ids to leave out, comma-separated")] = None,
        category: Annotated[str | None, Query(min_length=1, max_length=ID_MAX_CHARS,
                                              description="only items of this catalog category")] = None,
    ) -> Response:
        # async + inline CPU work: the answer takes well under 0.1 ms, less than a hop to the thread pool.
        excluded = parse_exclude(exclude)
        if len(excluded) > MAX_EXCLUDE:
            return error_response(422, f"exclude: at most {MAX_EXCLUDE} item ids", parameter="exclude")
        model = current_model(request)
        try:
            payload = service(request).answer(model, user_id, top_k, route=RECOMMENDATIONS_ROUTE,
                                              exclude_purchased=exclude_purchased, exclude=excluded,
                                              category=category)
        except UnknownCategoryAttributeError as error:
            return error_response(422, f"category: {error}", parameter="category")
        return OrjsonResponse(payload)

    return router
