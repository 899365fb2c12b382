"""Structured logging: one JSON object per line in Cloud Logging's format.

Request context (request id, trace) lives in a contextvar set by `mllab.api.http`. A redaction guard
runs on every record: fields named like secrets are masked, and values that look like tokens
(JWTs, bearer credentials, signed-URL signatures, cookies) are masked wherever they appear.
"""

from __future__ import annotations

import contextvars
import functools
import json
import re
import sys
import threading
import traceback
from collections.abc import Mapping
from typing import Any, TextIO

from mllab.platform import clock

REDACTED = "[REDACTED]"

_SECRET_KEY = re.compile(
    r"(^d$|^code$|pass(word|wd|phrase)?|secret|token|authorization|cookie|csrf|api_?key|private|"
    r"credential|signature|session_?key|verifier|otp)",
    re.IGNORECASE,
)
_SECRET_VALUES = [
    # JWT / JWS compact serialisation
    (re.compile(r"eyJ[A-Za-z0-9_-]{2,}\.[A-Za-z0-9_-]{2,}\.[A-Za-z0-9_-]*"), REDACTED),
    (re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]+"), r"\1 " + REDACTED),
    # query parameters that carry credentials (signed URLs, OAuth codes, reset links)
    (
        re.compile(
            r"(?i)([?&](?:x-goog-signature|x-goog-credential|signature|sig|token|code|state|"
            r"access_token|refresh_token|id_token|key|password)=)[^&#\s\"']+"
        ),
        r"\1" + REDACTED,
    ),
    (re.compile(r"(?i)(__Host-[A-Za-z0-9_-]+=)[^;\s\"']+"), r"\1" + REDACTED),
    (re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]*?-----END [A-Z ]*PRIVATE KEY-----"), REDACTED),
]

_context: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar("mllab_log_context", default=None)
_write_lock = threading.Lock()
_LEVELS = {"DEBUG": 10, "INFO": 20, "NOTICE": 25, "WARNING": 30, "ERROR": 40, "CRITICAL": 50}

stream: TextIO = sys.stdout  # tests may point this elsewhere
min_level = "INFO"


@functools.lru_cache(maxsize=1024)
def _secret_key(key: str) -> bool:
    return bool(_SECRET_KEY.search(key.replace("-", "_")))  # few distinct keys: each decided once


def _may_hold_secret(text: str) -> bool:
    """False only when no pattern of _SECRET_VALUES can match: each needs one of these substrings (a
    JWT "eyJ", a credential scheme, a parameter's or cookie's "=", a PEM header). Most values (paths,
    ids, statuses) skip the five regular expressions (about half of a log line's cost)."""
    if "=" in text or "eyJ" in text or "-----BEGIN" in text:
        return True
    lowered = text.lower()
    return "bearer" in lowered or "basic" in lowered


def redact(value: Any, key: str = "") -> Any:
    """Mask secrets in a value, recursively; keys that name a secret mask their whole value."""
    if key and _secret_key(key) and value not in (None, "", [], {}):
        return REDACTED
    if isinstance(value, str):
        if not _may_hold_secret(value):
            return value
        for pattern, repl in _SECRET_VALUES:
            value = pattern.sub(repl, value)
        return value
    if isinstance(value, Mapping):
        return {str(k): redact(v, str(k)) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [redact(v) for v in value]
    if isinstance(value, (int, float, bool)) or value is None:
        return value
    return redact(str(value))


def trace_fields(headers: Mapping[str, str] | Any, project: str) -> dict[str, Any]:
    """Cloud Logging trace fields from `X-Cloud-Trace-Context` or W3C `traceparent`."""
    trace_id = span_id = None
    sampled = False
    cloud = headers.get("X-Cloud-Trace-Context") or headers.get("x-cloud-trace-context")
    parent = headers.get("traceparent")
    if cloud:
        m = re.fullmatch(r"([0-9a-fA-F]{32})(?:/(\d+))?(?:;o=([01]))?", cloud.strip())
        if m:
            trace_id, span_id, sampled = m.group(1).lower(), m.group(2), m.group(3) == "1"
            # This header carries the span id in decimal; Cloud Logging wants 16 hex digits.
            span_id = f"{int(span_id):016x}" if span_id and len(span_id) <= 20 and 0 < int(span_id) < 2**64 else None
    if not trace_id and parent:  # also when X-Cloud-Trace-Context was present but malformed
        m = re.fullmatch(r"[0-9a-f]{2}-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})", parent.strip())
        if m and m.group(1) != "0" * 32:
            trace_id, span_id, sampled = m.group(1), m.group(2), int(m.group(3), 16) & 1 == 1
    if not trace_id:
        return {}
    out: dict[str, Any] = {"logging.googleapis.com/trace": f"projects/{project}/traces/{trace_id}"}
    if span_id:
        out["logging.googleapis.com/spanId"] = span_id
    out["logging.googleapis.com/trace_sampled"] = sampled
    return out


def bind(**fields: Any) -> contextvars.Token:
    """Attach fields (request id, trace) to every line logged in this context."""
    current = dict(_context.get() or {})
    current.update(fields)
    return _context.set(current)


def context() -> dict[str, Any]:
    """The fields bound to the current context (request id, trace, function)."""
    return dict(_context.get() or {})


def unbind(token: contextvars.Token) -> None:
    _context.reset(token)


def emit(severity: str, message: str, **fields: Any) -> None:
    if _LEVELS.get(severity, 20) < _LEVELS.get(min_level, 20):
        return
    record: dict[str, Any] = {"severity": severity, "message": message, "time": clock.rfc3339()}
    record.update(_context.get() or {})
    record.update(fields)
    safe = {k: (v if k.startswith("logging.googleapis.com/") else redact(v, k)) for k, v in record.items()}
    safe["message"] = redact(message)
    line = json.dumps(safe, default=str, ensure_ascii=False)
    with _write_lock:
        stream.write(line + "\n")
        stream.flush()


def debug(message: str, **fields: Any) -> None:
    emit("DEBUG", message, **fields)


def info(message: str, **fields: Any) -> None:
    emit("INFO", message, **fields)


def warning(message: str, **fields: Any) -> None:
    emit("WARNING", message, **fields)


def error(message: str, **fields: Any) -> None:
    emit("ERROR", message, **fields)


def exception(message: str, exc: BaseException, **fields: Any) -> None:
    """An error with its stack trace (Error Reporting picks up `stack_trace`)."""
    stack = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    emit("ERROR", message, error_type=type(exc).__name__, stack_trace=stack, **fields)
