"""Structured logs in Cloud Logging's format, with redaction (docs/security.md, logs)."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from werkzeug.test import Client
from werkzeug.wrappers import Request as RawRequest

from mllab.api import http
from mllab.api.routes import Auth, Route
from mllab.identity import tokens
from mllab.platform import clock, log
from tests.unit.helpers import LogCapture

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACE_KEY = "logging.googleapis.com/trace"
SPAN_KEY = "logging.googleapis.com/spanId"
SAMPLED_KEY = "logging.googleapis.com/trace_sampled"


def test_each_line_is_one_json_object_with_severity_message_and_time(logs: LogCapture) -> None:
    moment = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
    with clock.travel(to=moment, freeze=True):
        log.info("first thing", count=3)
        log.warning("second\nthing")
        log.error("third thing", nested={"a": [1, 2]})
    lines = logs.text.splitlines()
    assert len(lines) == 3
    records = [json.loads(line) for line in lines]
    assert [r["severity"] for r in records] == ["INFO", "WARNING", "ERROR"]
    assert [r["message"] for r in records] == ["first thing", "second\nthing", "third thing"]
    assert all(r["time"] == "2030-01-02T03:04:05Z" for r in records)
    assert records[0]["count"] == 3
    assert records[2]["nested"] == {"a": [1, 2]}


def test_levels_below_the_minimum_are_dropped(logs: LogCapture, monkeypatch: pytest.MonkeyPatch) -> None:
    log.debug("hidden")
    monkeypatch.setattr(log, "min_level", "ERROR")
    log.warning("also hidden")
    log.error("shown")
    assert [r["message"] for r in logs.records()] == ["shown"]


def test_exception_carries_type_and_stack_trace(logs: LogCapture) -> None:
    try:
        raise KeyError("missing-thing")
    except KeyError as exc:
        log.exception("it failed", exc)
    (record,) = logs.records()
    assert record["severity"] == "ERROR"
    assert record["error_type"] == "KeyError"
    assert "Traceback" in record["stack_trace"] and "missing-thing" in record["stack_trace"]


def test_non_json_values_are_logged_as_text(logs: LogCapture) -> None:
    log.info("odd values", when=datetime(2030, 1, 1, tzinfo=UTC), items={1, 2}, none=None)
    (record,) = logs.records()
    assert record["when"] == "2030-01-01 00:00:00+00:00"
    assert sorted(record["items"]) == [1, 2]
    assert record["none"] is None


# --- trace context -------------------------------------------------------------------------------


def test_cloud_trace_context_maps_to_trace_and_hex_span_id() -> None:
    fields = log.trace_fields({"X-Cloud-Trace-Context": f"{TRACE_ID}/123;o=1"}, "my-proj")
    assert fields[TRACE_KEY] == f"projects/my-proj/traces/{TRACE_ID}"
    # X-Cloud-Trace-Context carries the span id in decimal; Cloud Logging wants 16 hex digits.
    assert fields[SPAN_KEY] == "000000000000007b"
    assert fields[SAMPLED_KEY] is True


@pytest.mark.parametrize(("span", "expected"), [("1", "0000000000000001"), (str(2**64 - 1), "ffffffffffffffff")])
def test_cloud_trace_context_span_id_range(span: str, expected: str) -> None:
    assert log.trace_fields({"X-Cloud-Trace-Context": f"{TRACE_ID}/{span}"}, "p")[SPAN_KEY] == expected


@pytest.mark.parametrize("span", ["0", str(2**64), "9" * 5000])
def test_cloud_trace_context_with_an_impossible_span_id_keeps_only_the_trace(span: str) -> None:
    fields = log.trace_fields({"X-Cloud-Trace-Context": f"{TRACE_ID}/{span};o=1"}, "p")
    assert fields[TRACE_KEY] == f"projects/p/traces/{TRACE_ID}"
    assert SPAN_KEY not in fields


def test_cloud_trace_context_without_span_or_option() -> None:
    fields = log.trace_fields({"x-cloud-trace-context": TRACE_ID.upper()}, "p")
    assert fields[TRACE_KEY] == f"projects/p/traces/{TRACE_ID}"
    assert SPAN_KEY not in fields
    assert fields[SAMPLED_KEY] is False


def test_traceparent_maps_to_trace_and_span() -> None:
    fields = log.trace_fields({"traceparent": f"00-{TRACE_ID}-00f067aa0ba902b7-01"}, "p")
    assert fields == {TRACE_KEY: f"projects/p/traces/{TRACE_ID}", SPAN_KEY: "00f067aa0ba902b7", SAMPLED_KEY: True}
    unsampled = log.trace_fields({"traceparent": f"00-{TRACE_ID}-00f067aa0ba902b7-00"}, "p")
    assert unsampled[SAMPLED_KEY] is False


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"X-Cloud-Trace-Context": "not-a-trace"},
        {"X-Cloud-Trace-Context": f"{TRACE_ID}/abc;o=1"},
        {"traceparent": "00-" + "0" * 32 + "-00f067aa0ba902b7-01"},
        {"traceparent": f"00-{TRACE_ID}-short-01"},
    ],
)
def test_missing_or_malformed_trace_headers_give_no_trace(headers: dict[str, str]) -> None:
    assert log.trace_fields(headers, "p") == {}


def test_bound_context_appears_on_every_line_until_unbound(logs: LogCapture) -> None:
    token = log.bind(
        request_id="req-1234567890", **log.trace_fields({"X-Cloud-Trace-Context": f"{TRACE_ID}/1;o=1"}, "proj")
    )
    inner = log.bind(user="u1")
    log.info("inside")
    log.unbind(inner)
    log.info("outer")
    log.unbind(token)
    log.info("after")
    inside, outer, after = logs.records()
    assert inside["request_id"] == outer["request_id"] == "req-1234567890"
    assert inside[TRACE_KEY] == "projects/proj/traces/" + TRACE_ID
    assert inside["user"] == "u1" and "user" not in outer
    assert "request_id" not in after and TRACE_KEY not in after


# --- redaction -----------------------------------------------------------------------------------

JWT = "eyJhbGciOiJFUzI1NiIsInR5cCI6ImF0K2p3dCJ9.eyJzdWIiOiJ1c2VyLTEifQ.c2lnbmF0dXJlLXNlY3JldC1zaWduYXR1cmUtc2VjcmV0"
PEM = (
    "-----BEGIN PRIVATE KEY-----\nMIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgPEMSECRETPEMSECRET\n"
    "-----END PRIVATE KEY-----"
)


@pytest.mark.parametrize(
    ("message", "secret"),
    [
        (f"token is {JWT} ok", "c2lnbmF0dXJlLXNlY3JldC1zaWduYXR1cmUtc2VjcmV0"),
        ("header Authorization: Bearer xyzSECRETbearer123 sent", "xyzSECRETbearer123"),
        ("auth basic dXNlcjpwYXNzd29yZA== sent", "dXNlcjpwYXNzd29yZA"),
        (
            "GET https://storage.googleapis.com/b/o?X-Goog-Algorithm=GOOG4-RSA-SHA256"
            "&X-Goog-Signature=abcdef0123456789SIGSECRET&X-Goog-Expires=600",
            "abcdef0123456789SIGSECRET",
        ),
        ("reset link https://lab.example.com/reset?token=RESETSECRET42&x=1", "RESETSECRET42"),
        ("cookie: __Host-rt=REFRESHSECRET987; Path=/", "REFRESHSECRET987"),
        (f"key material {PEM} end", "PEMSECRETPEMSECRET"),
    ],
)
def test_secret_shaped_values_are_masked_in_messages_and_fields(logs: LogCapture, message: str, secret: str) -> None:
    log.info(message, detail=message, nested={"list": [message]})
    assert secret not in logs.text
    (record,) = logs.records()
    for value in (record["message"], record["detail"], record["nested"]["list"][0]):
        assert log.REDACTED in value


def _every_pattern(text: str) -> str:
    for pattern, repl in log._SECRET_VALUES:
        text = pattern.sub(repl, text)
    return text


# Text made of what the patterns look for, and of what they do not.
_PIECES = st.sampled_from(
    [
        "eyJ",
        "hbGci",
        ".",
        "Bearer ",
        "bAsIc ",
        "?",
        "&",
        "sig=",
        "token=",
        "key=",
        "__Host-rt=",
        "; ",
        "-----BEGIN ",
        "RSA PRIVATE KEY-----",
        "-----END ",
        "abc",
        "Z9_-",
        " ",
        "/me",
        "\n",
    ]
)


@given(st.lists(_PIECES, max_size=12).map("".join) | st.text(max_size=60))
def test_a_value_passed_over_by_the_quick_check_is_one_no_pattern_would_change(text: str) -> None:
    assert log.redact(text) == _every_pattern(text)


@pytest.mark.parametrize(
    "field",
    [
        "password",
        "new_password",
        "refresh_token",
        "access_token",
        "authorization",
        "Authorization",
        "cookie",
        "Set-Cookie",
        "csrf",
        "X-CSRF-Token",
        "client_secret",
        "private_key",
        "code",
        "d",
    ],
)
def test_fields_named_like_secrets_are_masked(logs: LogCapture, field: str) -> None:
    log.info("event", **{field: "plain-looking-value-777"}, headers={field: "plain-looking-value-777"})
    assert "plain-looking-value-777" not in logs.text
    (record,) = logs.records()
    assert record[field] == log.REDACTED
    assert record["headers"][field] == log.REDACTED


def test_ordinary_fields_are_not_masked(logs: LogCapture) -> None:
    log.info("event", user="alice", object="users/u1/models/m/weights.bin", size=12)
    (record,) = logs.records()
    assert record["user"] == "alice"
    assert record["object"] == "users/u1/models/m/weights.bin"
    assert record["size"] == 12


def test_empty_secret_fields_stay_empty(logs: LogCapture) -> None:
    log.info("event", password="", token=None)
    (record,) = logs.records()
    assert record["password"] == ""
    assert record["token"] is None


def test_a_real_access_token_never_reaches_the_log(logs: LogCapture) -> None:
    token = tokens.issue_access_token("user-1", "s").token
    log.info(f"got {token}", value=token, header=f"Bearer {token}")
    for part in token.split("."):
        assert part not in logs.text


_URLSAFE = st.text(
    alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_", min_size=16, max_size=64
)


@given(secret=_URLSAFE, head=_URLSAFE, body=_URLSAFE, where=st.sampled_from(["sig", "body", "head"]))
def test_random_jwt_shaped_secrets_never_appear(secret: str, head: str, body: str, where: str) -> None:
    parts = {"head": head, "body": body, "sig": secret}
    parts[where] = secret
    jwt_like = f"eyJ{parts['head']}.{parts['body']}.{parts['sig']}"
    out = io.StringIO()
    saved, log.stream = log.stream, out
    try:
        log.info(f"value {jwt_like} seen", field=jwt_like, items=[{"v": jwt_like}])
    finally:
        log.stream = saved
    assert secret not in out.getvalue()
    assert log.REDACTED in out.getvalue()


@given(secret=_URLSAFE, field=st.sampled_from(["password", "refresh_token", "authorization", "cookie", "csrf"]))
def test_random_secret_fields_never_appear(secret: str, field: str) -> None:
    out = io.StringIO()
    saved, log.stream = log.stream, out
    try:
        log.info("login attempt", **{field: secret}, body={"user": "a", field: secret})
        log.info("header", value=f"Bearer {secret}")
    finally:
        log.stream = saved
    assert secret not in out.getvalue()
    assert out.getvalue().count(log.REDACTED) == 3


# --- the router's request log line ---------------------------------------------------------------

_TABLE = (
    Route("GET", "/private", "logtest", "needs a token", auth=Auth.ACCESS_TOKEN, live=False),
    Route("GET", "/public", "logtest", "open"),
)


def _client() -> Client:
    router = http.Router("logtest", _TABLE)

    @router.route("GET", "/private")
    def private(req: http.Request) -> dict[str, Any]:
        log.info("handler ran", uid=req.uid)
        return {"uid": req.uid}

    @router.route("GET", "/public")
    def public(req: http.Request) -> dict[str, Any]:
        return {"ok": True}

    return Client(lambda environ, start_response: router(RawRequest(environ))(environ, start_response))


def test_access_log_line_has_status_and_never_the_bearer_token(logs: LogCapture) -> None:
    token = tokens.issue_access_token("user-9", "s").token
    resp = _client().get(
        "/private",
        headers={
            "Authorization": f"Bearer {token}",
            "X-Request-Id": "req-abcdef123",
            "X-Cloud-Trace-Context": f"{TRACE_ID}/42;o=1",
            "User-Agent": "pytest-agent",
            "X-Forwarded-For": "198.51.100.7, 203.0.113.1",
        },
    )
    assert resp.status_code == 200
    (handler_line,) = logs.find("handler ran")
    (access,) = logs.find("request")
    assert access["httpRequest"]["status"] == 200
    assert access["httpRequest"]["requestMethod"] == "GET"
    assert access["httpRequest"]["requestUrl"] == "/private"
    assert access["httpRequest"]["remoteIp"] == "198.51.100.7"
    assert access["httpRequest"]["userAgent"] == "pytest-agent"
    assert access["httpRequest"]["latency"].endswith("s")
    for record in (handler_line, access):
        assert record["request_id"] == "req-abcdef123"
        assert record["function"] == "logtest"
        assert record[TRACE_KEY] == f"projects/demo-mllab/traces/{TRACE_ID}"
    assert handler_line["uid"] == "user-9"
    for part in token.split("."):
        assert part not in logs.text


def test_access_log_line_for_a_refused_token(logs: LogCapture) -> None:
    resp = _client().get("/private", headers={"Authorization": "Bearer not-a-valid-token-SECRET55"})
    assert resp.status_code == 401
    (access,) = logs.find("request")
    assert access["httpRequest"]["status"] == 401
    assert "not-a-valid-token-SECRET55" not in logs.text
    assert access["request_id"] == resp.headers["X-Request-Id"]


def test_context_does_not_leak_between_requests(logs: LogCapture) -> None:
    client = _client()
    client.get("/public", headers={"X-Request-Id": "first-request-id"})
    log.info("between requests")
    client.get("/public", headers={"X-Request-Id": "second-request-id"})
    first, between, second = logs.records()
    assert first["request_id"] == "first-request-id"
    assert "request_id" not in between
    assert second["request_id"] == "second-request-id"


def test_malformed_cloud_trace_header_falls_back_to_traceparent() -> None:
    fields = log.trace_fields(
        {"X-Cloud-Trace-Context": "not-a-trace", "traceparent": f"00-{TRACE_ID}-00f067aa0ba902b7-01"}, "p"
    )
    assert fields["logging.googleapis.com/trace"] == f"projects/p/traces/{TRACE_ID}"
    assert fields["logging.googleapis.com/spanId"] == "00f067aa0ba902b7"
