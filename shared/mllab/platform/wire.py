"""The generic parts of the HTTP API's models: plain text and bounded JSON as pydantic types (the rules
live in mllab.platform.jsonvalues), the strict request base, and the models every route may answer
(problems, `Accepted`). Each domain's request and response models live in its own `schemas` module."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    GetCoreSchemaHandler,
    GetJsonSchemaHandler,
)
from pydantic_core import CoreSchema, core_schema

from mllab.platform import config
from mllab.platform.jsonvalues import PLAIN_PATTERN, bounded_json, plain


class _PlainText:
    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> CoreSchema:
        return core_schema.no_info_after_validator_function(plain, handler(source))

    def __get_pydantic_json_schema__(self, schema: CoreSchema, handler: GetJsonSchemaHandler) -> dict[str, Any]:
        return {**handler(schema), "pattern": PLAIN_PATTERN}


Plain = _PlainText()


# A JSON object the API stores and answers back: bounded in size and depth so every stored value can be
# served (the OpenAPI document carries both bounds as `x-max-bytes` / `x-max-depth`).
JsonObject = Annotated[
    dict,
    AfterValidator(bounded_json),
    Field(json_schema_extra={"x-max-bytes": config.LIMITS.json_field_bytes, "x-max-depth": config.LIMITS.json_depth}),
]


class ApiModel(BaseModel):
    """Every model of the API. Each is built (its validator and serializer) on first use, not at import:
    a function loads a domain's schemas module for the few models its routes use, and building all of
    them cost that function's cold start tens of milliseconds of CPU (docs/operations.md, cold starts)."""

    model_config = ConfigDict(defer_build=True)


class Strict(ApiModel):
    """Request bodies refuse unknown fields, so a typo is a 422, not a silent no-op."""

    model_config = ConfigDict(extra="forbid")


class FieldError(ApiModel):
    field: str
    message: str


class Problem(ApiModel):
    """RFC 9457 problem details, as every error is answered."""

    type: str
    title: str
    status: int
    detail: str
    instance: str | None = None
    request_id: str
    errors: list[FieldError] | None = Field(default=None, description="validation errors, one per field")
    resource: str | None = Field(default=None, description="limit-reached: what is counted (e.g. models)")
    limit: int | None = Field(default=None, description="limit-reached: how many the plan allows")


class Accepted(ApiModel):
    detail: str
