"""JSON values as the API stores and answers them: Firestore values as JSON, compact stored text, the
bounds on stored user JSON, and the plain-text rule for names. Plain Python (no pydantic): the domains use
these on paths (predictions, the recorder) that never load a request model; mllab.platform.wire builds the
API's models on them."""

from __future__ import annotations

import json
import unicodedata
from datetime import UTC, date, datetime
from typing import Any

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


def plain(value: str) -> str:
    """Text people read (names, codes, reasons): any script or emoji, but no control characters (NUL,
    line breaks, escapes), unpaired surrogates or bidirectional overrides."""
    for ch in value:
        if ch in _BIDI_CONTROLS or unicodedata.category(ch) in ("Cc", "Cs"):
            raise ValueError("control characters (such as NUL, line breaks or direction overrides) are not allowed")
    return value


# The same rule as a JSON Schema pattern, so the OpenAPI document says it and generated clients (and
# the fuzzer) know it. The validator above stays the rule: it gives the readable message.
PLAIN_PATTERN = r"^[^\x00-\x1F\x7F-\x9F\u202A-\u202E\u2066-\u2069\uD800-\uDFFF]*$"


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


def bounded_json(value: dict) -> dict:
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
