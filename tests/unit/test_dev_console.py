"""`make dev`'s console: a short line per request, errors in full, routine JSON only in .dev/logs/."""

from __future__ import annotations

import json
import time

from mllab_dev import console

NOON = time.mktime((2026, 5, 1, 12, 0, 7, 0, 0, -1))


def _json(**record: object) -> str:
    return json.dumps(record) + "\n"


def test_a_gateway_request_record_is_one_short_line() -> None:
    line = console.shown(
        "gateway",
        _json(
            severity="INFO",
            message="request",
            method="POST",
            path="/auth/refresh",
            status=401,
            latency_ms=12.4,
            function="auth_refresh",
            request_id="r1",
        ),
        now=NOON,
    )
    assert line is not None and line.split() == ["12:00:07", "POST", "/auth/refresh", "401", "12", "ms", "auth_refresh"]
    lab = console.shown(
        "gateway", _json(message="request", method="GET", path="/", status=200, latency_ms=1, function=None), now=NOON
    )
    assert lab is not None and lab.rstrip().endswith("ms  -")


def test_routine_records_stay_in_the_files() -> None:
    assert console.shown("fn:catalog", _json(severity="INFO", message="model saved", uid="u1")) is None
    assert console.shown("fn:catalog", _json(severity="DEBUG", message="cache")) is None
    assert console.shown("gateway", "[2026-05-01 12:00:00 +0000] [42] [INFO] Booting worker with pid: 42\n") is None
    assert console.shown("gateway", "\n") is None


def test_errors_are_shown_in_full_with_their_trace() -> None:
    line = console.shown(
        "fn:billing",
        _json(
            severity="ERROR",
            message="paypal failed",
            status=502,
            stack_trace="Traceback (most recent call last):\n  boom\n",
        ),
    )
    assert line is not None
    first, *trace = line.splitlines()
    assert first.startswith("[fn:billing] ERROR paypal failed") and '"status": 502' in first
    assert trace == ["Traceback (most recent call last):", "  boom"]
    warning = console.shown("gateway", _json(severity="WARNING", message="upstream failed", function="jwks"))
    assert warning is not None and "upstream failed" in warning


def test_a_line_that_is_not_json_is_shown_as_it_is() -> None:
    shown = console.shown("fn:jwks", "Traceback (most recent call last):\n")
    assert shown == "[fn:jwks] Traceback (most recent call last):"
