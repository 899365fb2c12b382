"""The generic parts of the HTTP API's wire format: JSON conversion and bounds, plain-text checks, the
strict request base, and the models every route may answer (problems, `Accepted`). Each domain's request
and response models live in its own `schemas` module (identity, files, billing)."""

from __future__ import annotations

import json
import unicodedata
from datetime import UTC, date, datetime
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


def jsonable(value: Any) -> Any:
    """Firestore values as JSON: timestamps as RFC 3339, recursively."""
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat().replace("+00:00", "Z")
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


# Bidirectional embeddings, overrides and isolates: they make text display in another order than it
# is stored ("abc\u202egnp.exe" shows as "abcexe.png").
_BIDI_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def _plain(value: str) -> str:
    """Text people read (names, codes, reasons): any script or emoji, but no control characters (NUL,
    line breaks, escapes), unpaired surrogates or bidirectional overrides."""
    for ch in value:
        if ch in _BIDI_CONTROLS or unicodedata.category(ch) in ("Cc", "Cs"):
            raise ValueError("control characters (such as NUL, line breaks or direction overrides) are not allowed")
    return value


# The same rule as a JSON Schema pattern, so the OpenAPI document says it and generated clients (and
# the fuzzer) know it. The validator above stays the rule: it gives the readable message.
PLAIN_PATTERN = r"^[^\x00-\x1F\x7F-\x9F\u202A-\u202E\u2066-\u2069\uD800-\uDFFF]*$"


class _PlainText:
    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> CoreSchema:
        return core_schema.no_info_after_validator_function(_plain, handler(source))

    def __get_pydantic_json_schema__(self, schema: CoreSchema, handler: GetJsonSchemaHandler) -> dict[str, Any]:
        return {**handler(schema), "pattern": PLAIN_PATTERN}


Plain = _PlainText()


def json_depth(value: Any) -> int:
    """How deep a JSON value nests (a scalar is 0, `{}` and `[]` are 1), without recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else None
        if children is None:
            continue
        deepest = max(deepest, depth)
        stack.extend((child, depth + 1) for child in children)
    return deepest


def compact_json(value: Any) -> str:
    """JSON as stored: compact, UTF-8 (not escaped), no NaN or infinities."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def _bounded_json(value: dict) -> dict:
    limits = config.LIMITS
    depth = json_depth(value)  # first: compact_json would recurse through a deep value
    if depth > limits.json_depth:
        raise ValueError(f"nested {depth} levels deep; at most {limits.json_depth} levels are stored")
    size = len(compact_json(value).encode())
    if size > limits.json_field_bytes:
        raise ValueError(
            f"{size} bytes as compact JSON; at most {limits.json_field_bytes} bytes "
            f"({limits.json_field_bytes // 1024} KiB) are stored"
        )
    return value


# A JSON object the API stores and answers back: bounded in size and depth so every stored value can be
# served (the OpenAPI document carries both bounds as `x-max-bytes` / `x-max-depth`).
JsonObject = Annotated[
    dict,
    AfterValidator(_bounded_json),
    Field(json_schema_extra={"x-max-bytes": config.LIMITS.json_field_bytes, "x-max-depth": config.LIMITS.json_depth}),
]


class Strict(BaseModel):
    """Request bodies refuse unknown fields, so a typo is a 422, not a silent no-op."""

    model_config = ConfigDict(extra="forbid")


class FieldError(BaseModel):
    field: str
    message: str


class Problem(BaseModel):
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


class Accepted(BaseModel):
    detail: str
