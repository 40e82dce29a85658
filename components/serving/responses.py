"""Response helpers shared by the routers: orjson bodies and the error shape."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import Response

JSON = "application/json"


class OrjsonResponse(Response):
    """JSON via orjson: several times faster than the stdlib encoder; NaN becomes null."""

    media_type = JSON

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY)


def error_response(status: int, message: str, *, parameter: str | None = None,
                   headers: dict[str, str] | None = None) -> OrjsonResponse:
    """``{"error": ..., "parameter": ...}``: one shape for every error the service answers itself."""
    body: dict[str, Any] = {"error": message}
    if parameter is not None:
        body["parameter"] = parameter
    return OrjsonResponse(body, status_code=status, headers=headers)
