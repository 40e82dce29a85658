"""Response helpers shared by the routers: orjson bodies and the error shape."""

from __future__ import annotations

import json
from typing import Any

import orjson
from fastapi.responses import JSONResponse

JSON = "application/json"


def render_json(content: Any) -> bytes:
    try:
        return orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY)
    except TypeError:
        # Text echoed from a request can hold what orjson refuses (lone surrogates from JSON \u escapes,
        # integers over 64 bits); the stdlib encoder escapes them. Rare: errors only.
        return json.dumps(content, ensure_ascii=True, default=str).encode()


class OrjsonResponse(JSONResponse):
    """JSON via orjson: several times faster than the stdlib encoder; NaN becomes null. A JSONResponse
    subclass, so FastAPI documents the response models in the OpenAPI schema."""

    def render(self, content: Any) -> bytes:
        return render_json(content)


MAX_ERROR_CHARS = 1000  # an error names what is wrong; it does not hand a client's input back to it


def clip(text: str, limit: int = MAX_ERROR_CHARS) -> str:
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text) - limit} more characters)"


def error_response(status: int, message: str, *, parameter: str | None = None,
                   headers: dict[str, str] | None = None) -> OrjsonResponse:
    """``{"error": ..., "parameter": ...}``: one shape for every error the service answers itself. Both
    are clipped: messages quote the offending value (a header, a CSV field), which can be megabytes."""
    body: dict[str, Any] = {"error": clip(message)}
    if parameter is not None:
        body["parameter"] = clip(parameter, 200)
    return OrjsonResponse(body, status_code=status, headers=headers)
