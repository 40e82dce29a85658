"""Pydantic shapes for the OpenAPI document (responses are built as plain dicts on the hot path)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator


class RecommendedItem(BaseModel):
    item_id: str
    score: float | None = Field(description="ranker P(purchase); popular items: distinct recent buyers; "
                                            "null for items appended to top up a short list")


class Recommendations(BaseModel):
    user_id: str
    model_version: str
    items: list[RecommendedItem]
    fallback: bool = Field(description="true when the popular list answered instead of the ranker")
    fallback_reason: str | None = Field(description="unknown_user or no_candidates")
    degraded: bool = Field(default=False, description="true when the online store could not be read: the "
                                                      "answer ignores the user's events since the model's cutoff")


class Status(BaseModel):
    status: str
    model_version: str | None = None


class Predictions(BaseModel):
    predictions: list[Recommendations]


class InvocationRequest(BaseModel):
    """One user in a /invocations JSON body."""

    # Numeric ids are accepted and compared as their text (ids are strings in the bundle).
    model_config = ConfigDict(extra="forbid", coerce_numbers_to_str=True)

    user_id: str = Field(min_length=1, max_length=256)
    # Strict: lax mode takes true as 1 and 2.0 or "2" as 2; a JSON body states its integers.
    top_k: int | None = Field(default=None, ge=1, strict=True)
    exclude_purchased: bool = False
    exclude: list[str] = Field(default_factory=list, max_length=1000)
    category: str | None = Field(default=None, min_length=1, max_length=256)

    @field_validator("user_id", mode="before")
    @classmethod
    def _id_text(cls, value: Any) -> Any:
        # A JSON number is read as its text; only an integer has one text. A float (orjson reads integers
        # over 64 bits as floats, 12680.0 is not "12680") or a boolean would silently name another user.
        if isinstance(value, bool | float):
            raise ValueError("a number id must be an integer of at most 64 bits; send ids as strings")
        return value


class InvocationBatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    instances: list[InvocationRequest] = Field(min_length=1)


class ErrorBody(BaseModel):
    error: str
    parameter: str | None = None


class ReloadRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str | None = Field(default=None, min_length=1, max_length=2048,
                              description="bundle to load (path, folder or s3:// URI); default: the "
                                          "registry's latest Approved version, else the current source")


class ModelStatus(BaseModel):
    version: str | None
    group: str | None
    source: str | None
    registry_version: int | None
    loaded_at: str | None
    loading: bool
    last_load: dict[str, object] | None
