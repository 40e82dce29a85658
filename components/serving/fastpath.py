"""The hot path: a well-formed ``GET /recommendations`` answered straight from the ASGI scope.

FastAPI's per-request machinery (routing, dependency solving, pydantic validation of five query
parameters) costs more than the answer itself. This lane checks the same rules as the documented
route itself for the common, valid requests and answers them through the same ``ServiceState.answer``;
anything it is not certain about (a missing, repeated, unknown or out-of-range parameter, no model yet,
a filter the bundle cannot apply) goes on to the FastAPI route, which produces the documented answer or
the 422 naming the parameter. tests/test_serving_fastpath.py checks both give the same bytes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

from starlette.types import ASGIApp, Receive, Scope, Send

from components.serving.engine import UnknownCategoryAttributeError
from components.serving.metrics import RECOMMENDATIONS_ROUTE
from components.serving.responses import render_json
from components.serving.routers.recommendations import EXCLUDE_MAX_CHARS, ID_MAX_CHARS, MAX_EXCLUDE, parse_exclude
from components.serving.state import ServiceState

PATH = RECOMMENDATIONS_ROUTE
_TRUE, _FALSE = frozenset({"true", "1"}), frozenset({"false", "0"})
_KNOWN = frozenset({"user_id", "top_k", "exclude_purchased", "exclude", "category"})
_HEADERS = [(b"content-type", b"application/json")]


@dataclass(frozen=True)
class _FastRoute:
    path: str


_ROUTE = _FastRoute(PATH)


class RecommendationsFastPath:
    def __init__(self, app: ASGIApp, state: ServiceState) -> None:
        self.app = app
        self.state = state
        self.default_top_k = state.settings.default_top_k
        self.max_top_k = state.settings.max_top_k

    def _parse(self, query_string: bytes) -> dict[str, Any] | None:
        """The request's arguments, or None to let the FastAPI route decide."""
        # As Starlette reads query strings: latin-1 bytes, then %-decoding as UTF-8.
        pairs = parse_qsl(query_string.decode("latin-1"), keep_blank_values=True)
        params = dict(pairs)
        if len(params) != len(pairs) or not params.keys() <= _KNOWN:
            return None
        user_id = params.get("user_id")
        if user_id is None or not 0 < len(user_id) <= ID_MAX_CHARS:
            return None
        top_k = self.default_top_k
        if "top_k" in params:
            raw = params["top_k"]
            if not (raw.isascii() and raw.isdigit() and len(raw) <= 6):
                return None
            top_k = int(raw)
            if not 1 <= top_k <= self.max_top_k:
                return None
        exclude_purchased = False
        if "exclude_purchased" in params:
            flag = params["exclude_purchased"]
            if flag in _TRUE:
                exclude_purchased = True
            elif flag not in _FALSE:
                return None
        excluded: list[str] = []
        if "exclude" in params:
            if len(params["exclude"]) > EXCLUDE_MAX_CHARS:
                return None
            excluded = parse_exclude(params["exclude"])
            if len(excluded) > MAX_EXCLUDE:
                return None
        category = params.get("category")
        if category is not None and not 0 < len(category) <= ID_MAX_CHARS:
            return None
        return {"user_id": user_id, "top_k": top_k, "exclude_purchased": exclude_purchased,
                "exclude": excluded, "category": category}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] == PATH and scope["method"] == "GET":
            args = self._parse(scope["query_string"])
            model = self.state.holder.current  # read once: this request uses this model to the end
            if args is not None and model is not None:
                try:
                    payload = self.state.answer(model, args["user_id"], args["top_k"], route=PATH,
                                                exclude_purchased=args["exclude_purchased"],
                                                exclude=args["exclude"], category=args["category"])
                except UnknownCategoryAttributeError:
                    payload = None  # the route answers the documented 422
                if payload is not None:
                    body = render_json(payload)
                    scope["route"] = _ROUTE  # metrics label fast answers with the route's path
                    await send({"type": "http.response.start", "status": 200,
                                "headers": [*_HEADERS, (b"content-length", str(len(body)).encode())]})
                    await send({"type": "http.response.body", "body": body})
                    return
        await self.app(scope, receive, send)
