"""The HTTP pipeline (mllab.api.http.Router) against a custom route table, and the real jwks function
(docs/security.md)."""

from __future__ import annotations

import io
import json
import re
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from pydantic import Field
from werkzeug.test import Client, EnvironBuilder, TestResponse, run_wsgi_app
from werkzeug.wrappers import Request as RawRequest

from mllab.api import http
from mllab.api.routes import Auth, Route
from mllab.identity import tokens
from mllab.platform import clock, config
from mllab.platform.wire import Strict
from tests.unit.helpers import LogCapture

MiB = 1024 * 1024
ALLOWED_ORIGIN = "http://127.0.0.1:8080"  # in the default allow-list
FOREIGN_ORIGIN = "https://evil.example"
SECURITY_HEADERS = (
    "Content-Security-Policy",
    "Strict-Transport-Security",
    "X-Content-Type-Options",
    "X-Frame-Options",
    "Referrer-Policy",
)
HEX32 = re.compile(r"[0-9a-f]{32}")


class Item(Strict):
    name: str = Field(min_length=1, max_length=20)
    count: int = Field(ge=0)


TABLE = (
    Route("GET", "/things", "things", "list things"),
    # live=False: this table tests the pipeline; session liveness is tested on the emulator and below.
    Route("POST", "/things", "things", "create a thing", request=Item, status=201, auth=Auth.ACCESS_TOKEN, live=False),
    Route("GET", "/things/{id}", "things", "get a thing", auth=Auth.ACCESS_TOKEN, live=False),
    Route("DELETE", "/things/{id}", "things", "delete a thing", auth=Auth.ACCESS_TOKEN, live=False),
    Route("POST", "/echo", "things", "echo a body", request=Item),
    Route("GET", "/boom", "things", "always fails"),
    Route("GET", "/outage/{kind}", "things", "a dependency fails"),
    Route("GET", "/unbound", "things", "no handler on purpose"),
    Route("GET", "/elsewhere", "other", "another function's route"),
)


class SecretBoom(RuntimeError):
    pass


def _outage(kind: str) -> BaseException:
    import google.api_core.exceptions as gexc
    import httpx
    import requests

    made: dict[str, Callable[[], BaseException]] = {
        "gcp-unavailable": lambda: gexc.ServiceUnavailable("firestore is down SECRET-DETAIL"),
        "gcp-deadline": lambda: gexc.DeadlineExceeded("deadline SECRET-DETAIL"),
        "httpx-timeout": lambda: httpx.ReadTimeout("read timed out SECRET-DETAIL"),
        "httpx-connect": lambda: httpx.ConnectError("refused SECRET-DETAIL"),
        "requests-connection": lambda: requests.ConnectionError("refused SECRET-DETAIL"),
        "builtin-connection": lambda: ConnectionRefusedError("refused SECRET-DETAIL"),
        "builtin-timeout": lambda: TimeoutError("timed out SECRET-DETAIL"),
        "gcp-not-found": lambda: gexc.NotFound("no such doc SECRET-DETAIL"),
        "value-error": lambda: ValueError("bad SECRET-DETAIL"),
    }
    return made[kind]()


def make_router() -> http.Router:
    router = http.Router("things", TABLE)

    @router.route("GET", "/things")
    def list_things(req: http.Request) -> dict[str, Any]:
        return {"items": [], "next_cursor": None}

    @router.route("POST", "/things")
    def create_thing(req: http.Request) -> http.Response:
        return http.Response(
            body={"id": "t1", **req.body.model_dump(), "owner": req.uid}, headers=[("Location", "/things/t1")]
        )

    @router.route("GET", "/things/{id}")
    def get_thing(req: http.Request) -> dict[str, Any]:
        return {"id": req.params["id"], "uid": req.uid, "sid": req.claims["sid"]}

    @router.route("DELETE", "/things/{id}")
    def delete_thing(req: http.Request) -> None:
        return None

    @router.route("POST", "/echo")
    def echo(req: http.Request) -> Item:
        return req.body

    @router.route("GET", "/boom")
    def boom(req: http.Request) -> None:
        raise SecretBoom("database password is hunter2-SECRET-DETAIL")

    @router.route("GET", "/outage/{kind}")
    def outage(req: http.Request) -> None:
        kind = req.params["kind"]
        if kind == "wrapped":
            try:
                raise _outage("gcp-unavailable")
            except Exception as exc:
                raise RuntimeError("while saving SECRET-DETAIL") from exc
        raise _outage(kind)

    return router


def wsgi(router: http.Router) -> Callable[..., Any]:
    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        return router(RawRequest(environ))(environ, start_response)

    return app


@pytest.fixture
def router() -> http.Router:
    return make_router()


@pytest.fixture
def client(router: http.Router) -> Client:
    return Client(wsgi(router))


def bearer() -> dict[str, str]:
    return {"Authorization": "Bearer " + tokens.issue_access_token("user-1", "sess-1").token}


def problem(resp: TestResponse, status: int) -> dict[str, Any]:
    assert resp.status_code == status, resp.data
    assert resp.mimetype == "application/problem+json"
    body = json.loads(resp.data)
    assert set(body) >= {"type", "title", "status", "detail", "request_id"}
    assert body["status"] == status
    assert body["type"].startswith(http.PROBLEM_TYPE)
    assert body["title"] and body["detail"]
    assert body["request_id"] == resp.headers["X-Request-Id"]
    return body


def streamed(client_app: Callable[..., Any], path: str, data: bytes, **kwargs: Any) -> TestResponse:
    """A body without Content-Length, as a server delivers a chunked upload (wsgi.input_terminated)."""
    environ = EnvironBuilder(path=path, method="POST", input_stream=io.BytesIO(data), **kwargs).get_environ()
    del environ["CONTENT_LENGTH"]
    environ["HTTP_TRANSFER_ENCODING"] = "chunked"
    environ["wsgi.input_terminated"] = True
    app_iter, status, headers = run_wsgi_app(client_app, environ)
    return TestResponse(app_iter, status, headers, request=RawRequest(environ))


# --- routing -------------------------------------------------------------------------------------


def test_a_plain_get_answers_json(client: Client) -> None:
    resp = client.get("/things")
    assert resp.status_code == 200
    assert resp.mimetype == "application/json"
    assert resp.get_json() == {"items": [], "next_cursor": None}
    assert resp.headers["Cache-Control"] == "no-store"


def test_unknown_path_is_a_404_problem(client: Client) -> None:
    resp = client.get("/nothing/here")
    body = problem(resp, 404)
    assert body["type"] == "urn:mllab:problem:not-found"
    assert body["instance"] == "/nothing/here"


def test_another_functions_route_is_not_served_here(client: Client) -> None:
    problem(client.get("/elsewhere"), 404)


def test_path_parameters_do_not_cross_slashes(client: Client) -> None:
    problem(client.get("/things/a/b", headers=bearer()), 404)


def test_wrong_method_is_a_405_with_allow(client: Client) -> None:
    resp = client.put("/things/abc", headers=bearer())
    body = problem(resp, 405)
    assert set(resp.headers["Allow"].split(", ")) == {"GET", "HEAD", "DELETE", "OPTIONS"}
    assert "PUT" in body["detail"]


def test_head_is_answered_like_get_without_a_body(client: Client) -> None:
    resp = client.head("/things")
    assert resp.status_code == 200
    assert resp.data == b""


def test_create_answers_201_with_the_route_status_and_handler_headers(client: Client) -> None:
    resp = client.post("/things", json={"name": "n", "count": 2}, headers=bearer())
    assert resp.status_code == 201
    assert resp.get_json() == {"id": "t1", "name": "n", "count": 2, "owner": "user-1"}
    assert resp.headers["Location"] == "/things/t1"


def test_handler_returning_none_answers_204(client: Client) -> None:
    resp = client.delete("/things/abc", headers=bearer())
    assert resp.status_code == 204
    assert resp.data == b""


def test_router_refuses_to_bind_a_route_not_in_the_table(router: http.Router) -> None:
    with pytest.raises(LookupError):
        router.route("GET", "/elsewhere")  # belongs to another function
    with pytest.raises(LookupError):
        router.route("PUT", "/things")  # path exists, method does not
    with pytest.raises(LookupError):
        router.route("GET", "/not-in-table")
    with pytest.raises(LookupError):
        http.Router("no-such-function", TABLE)


def test_unbound_lists_routes_without_handlers_and_they_answer_500(router: http.Router, client: Client) -> None:
    assert [(r.method, r.path) for r in router.unbound()] == [("GET", "/unbound")]
    problem(client.get("/unbound"), 500)


# --- request bodies ------------------------------------------------------------------------------


def test_valid_body_is_parsed_into_the_model(client: Client) -> None:
    resp = client.post("/echo", json={"name": "widget", "count": 3})
    assert resp.status_code == 200
    assert resp.get_json() == {"name": "widget", "count": 3}


def test_json_with_charset_parameter_is_accepted(client: Client) -> None:
    resp = client.post("/echo", data=b'{"name":"a","count":1}', content_type="application/json; charset=utf-8")
    assert resp.status_code == 200


def test_body_over_1_mib_with_content_length_is_413(client: Client) -> None:
    payload = b'{"name":"a","count":1}' + b" " * MiB
    body = problem(client.post("/echo", data=payload, content_type="application/json"), 413)
    assert body["type"] == "urn:mllab:problem:payload-too-large"


def test_body_of_exactly_1_mib_is_accepted(client: Client) -> None:
    head = b'{"name":"a","count":1}'
    payload = head + b" " * (MiB - len(head))
    assert len(payload) == config.LIMITS.request_body_bytes
    assert client.post("/echo", data=payload, content_type="application/json").status_code == 200


def test_streamed_body_over_1_mib_without_content_length_is_413(router: http.Router) -> None:
    payload = b'{"name":"a","count":1}' + b" " * MiB
    resp = streamed(wsgi(router), "/echo", payload, content_type="application/json")
    body = problem(resp, 413)
    assert body["type"] == "urn:mllab:problem:payload-too-large"


def test_streamed_small_body_without_content_length_is_read(router: http.Router) -> None:
    resp = streamed(wsgi(router), "/echo", b'{"name":"chunked","count":4}', content_type="application/json")
    assert resp.status_code == 200
    assert json.loads(resp.data) == {"name": "chunked", "count": 4}


def test_body_cap_is_checked_before_the_method(client: Client) -> None:
    """A >1 MiB body to a path answers 413 even for a method the path lacks."""
    resp = client.put("/things", data=b"x" * (MiB + 1), content_type="application/json")
    problem(resp, 413)
    assert "Allow" not in resp.headers


def test_body_cap_is_checked_before_auth(client: Client) -> None:
    problem(client.post("/things", data=b"x" * (MiB + 1), content_type="application/json"), 413)


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", None])
def test_wrong_content_type_is_415(client: Client, content_type: str | None) -> None:
    kwargs = {"content_type": content_type} if content_type else {}
    body = problem(client.post("/echo", data=b'{"name":"a","count":1}', **kwargs), 415)
    assert "application/json" in body["detail"]


@pytest.mark.parametrize("payload", [b'{"name": "a", "count": 1', b"not json", b"", b"\xff\xfe{}"])
def test_malformed_json_is_400(client: Client, payload: bytes) -> None:
    body = problem(client.post("/echo", data=payload, content_type="application/json"), 400)
    assert body["type"] == "urn:mllab:problem:malformed-json"


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_non_finite_numbers_are_400(client: Client, constant: str) -> None:
    payload = f'{{"name": "a", "count": {constant}}}'.encode()
    body = problem(client.post("/echo", data=payload, content_type="application/json"), 400)
    assert constant.lstrip("-") in body["detail"]


def test_schema_violation_is_422_listing_fields_without_echoing_values(client: Client) -> None:
    submitted = {"name": "LONGVALUE-" + "Z" * 30, "count": "not-a-number-QQQ", "extra": "sekrit-value-123"}
    resp = client.post("/echo", json=submitted)
    body = problem(resp, 422)
    assert body["type"] == "urn:mllab:problem:validation-failed"
    assert {e["field"] for e in body["errors"]} == {"name", "count", "extra"}
    assert all(e["message"] for e in body["errors"])
    for value in submitted.values():
        assert value not in resp.get_data(as_text=True)


def test_missing_fields_are_422(client: Client) -> None:
    body = problem(client.post("/echo", json={}), 422)
    assert {e["field"] for e in body["errors"]} == {"name", "count"}


def test_a_json_array_instead_of_an_object_is_422(client: Client) -> None:
    body = problem(client.post("/echo", json=[1, 2]), 422)
    assert body["errors"]


# --- failures inside handlers --------------------------------------------------------------------


def test_unexpected_exception_is_a_500_that_hides_its_cause(client: Client, logs: LogCapture) -> None:
    resp = client.get("/boom")
    body = problem(resp, 500)
    text = resp.get_data(as_text=True)
    assert "SECRET-DETAIL" not in text and "hunter2" not in text and "SecretBoom" not in text
    assert body["request_id"] in body["detail"]
    (line,) = logs.find("unhandled error")
    assert line["severity"] == "ERROR"
    assert line["error_type"] == "SecretBoom"
    assert line["request_id"] == body["request_id"]


@pytest.mark.parametrize(
    "kind",
    [
        "gcp-unavailable",
        "gcp-deadline",
        "httpx-timeout",
        "httpx-connect",
        "requests-connection",
        "builtin-connection",
        "builtin-timeout",
        "wrapped",
    ],
)
def test_dependency_outage_is_a_503_with_retry_after(client: Client, logs: LogCapture, kind: str) -> None:
    resp = client.get(f"/outage/{kind}")
    body = problem(resp, 503)
    assert int(resp.headers["Retry-After"]) > 0
    assert "SECRET-DETAIL" not in resp.get_data(as_text=True)
    assert body["type"] == "urn:mllab:problem:unavailable"
    assert logs.find("dependency unavailable")


@pytest.mark.parametrize("kind", ["gcp-not-found", "value-error"])
def test_other_errors_are_not_mistaken_for_outages(client: Client, kind: str) -> None:
    resp = client.get(f"/outage/{kind}")
    problem(resp, 500)
    assert "Retry-After" not in resp.headers


def test_problem_raised_by_a_handler_is_answered_as_is() -> None:
    router = http.Router("things", TABLE)

    @router.route("GET", "/things")
    def conflict(req: http.Request) -> None:
        raise http.Problem(
            409,
            "That name is taken; pick another.",
            slug="name-taken",
            errors=[{"field": "name", "message": "taken"}],
            headers={"X-Extra": "1"},
        )

    resp = Client(wsgi(router)).get("/things")
    body = problem(resp, 409)
    assert body["type"] == "urn:mllab:problem:name-taken"
    assert body["detail"] == "That name is taken; pick another."
    assert body["errors"] == [{"field": "name", "message": "taken"}]
    assert resp.headers["X-Extra"] == "1"


# --- request id ----------------------------------------------------------------------------------


def test_valid_request_id_is_echoed(client: Client) -> None:
    resp = client.get("/things", headers={"X-Request-Id": "client-req:0001.ab_cd-ef"})
    assert resp.headers["X-Request-Id"] == "client-req:0001.ab_cd-ef"


@pytest.mark.parametrize(
    "supplied",
    [
        "has spaces in it 123",
        "line\nbreak-12345",
        "x" * 129,
        "short",
        "semi;colon-12345",
        "",
    ],
)
def test_invalid_request_id_is_replaced(client: Client, supplied: str) -> None:
    resp = client.get("/nothing", environ_overrides={"HTTP_X_REQUEST_ID": supplied})
    assert HEX32.fullmatch(resp.headers["X-Request-Id"])
    assert problem(resp, 404)["request_id"] == resp.headers["X-Request-Id"]


def test_generated_request_ids_differ(client: Client) -> None:
    assert client.get("/things").headers["X-Request-Id"] != client.get("/things").headers["X-Request-Id"]


def _every_kind_of_response(client: Client, router: http.Router) -> list[tuple[str, TestResponse]]:
    rid = {"X-Request-Id": "req-every-kind-01"}
    return [
        ("200", client.get("/things", headers=rid)),
        ("201", client.post("/things", json={"name": "n", "count": 1}, headers={**rid, **bearer()})),
        ("204", client.delete("/things/x", headers={**rid, **bearer()})),
        ("404", client.get("/missing", headers=rid)),
        ("405", client.put("/things", headers=rid)),
        ("413", client.post("/echo", data=b"x" * (MiB + 1), content_type="application/json", headers=rid)),
        (
            "413-streamed",
            streamed(wsgi(router), "/echo", b"x" * (MiB + 1), content_type="application/json", headers=rid),
        ),
        ("401", client.get("/things/x", headers=rid)),
        ("415", client.post("/echo", data=b"{}", content_type="text/plain", headers=rid)),
        ("422", client.post("/echo", json={}, headers=rid)),
        ("500", client.get("/boom", headers=rid)),
        ("503", client.get("/outage/builtin-timeout", headers=rid)),
        (
            "preflight",
            client.options(
                "/things/x", headers={**rid, "Origin": ALLOWED_ORIGIN, "Access-Control-Request-Method": "GET"}
            ),
        ),
        (
            "preflight-403",
            client.options(
                "/things/x", headers={**rid, "Origin": FOREIGN_ORIGIN, "Access-Control-Request-Method": "GET"}
            ),
        ),
        ("options-plain", client.options("/things", headers=rid)),
    ]


def test_request_id_security_headers_and_vary_on_every_response(client: Client, router: http.Router) -> None:
    for label, resp in _every_kind_of_response(client, router):
        assert resp.headers.get("X-Request-Id") == "req-every-kind-01", label
        for name in SECURITY_HEADERS:
            assert resp.headers.get(name), (label, name)
        assert "frame-ancestors 'none'" in resp.headers["Content-Security-Policy"], label
        assert resp.headers["X-Content-Type-Options"] == "nosniff", label
        assert resp.headers["X-Frame-Options"] == "DENY", label
        assert resp.headers["Strict-Transport-Security"].startswith("max-age="), label
        assert "origin" in [v.strip().lower() for v in resp.headers.get("Vary", "").split(",")], label


# --- CORS ----------------------------------------------------------------------------------------


def test_allow_listed_origin_gets_cors_headers(client: Client) -> None:
    resp = client.get("/things", headers={"Origin": ALLOWED_ORIGIN})
    assert resp.headers["Access-Control-Allow-Origin"] == ALLOWED_ORIGIN
    assert resp.headers["Access-Control-Allow-Credentials"] == "true"
    assert "X-Request-Id" in resp.headers["Access-Control-Expose-Headers"]


def test_allow_list_comes_from_settings(client: Client, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLLAB_CORS_ORIGINS", "http://lab.test:9000")
    config.reload()
    assert (
        client.get("/things", headers={"Origin": "http://lab.test:9000"}).headers["Access-Control-Allow-Origin"]
        == "http://lab.test:9000"
    )
    assert "Access-Control-Allow-Origin" not in client.get("/things", headers={"Origin": ALLOWED_ORIGIN}).headers


@pytest.mark.parametrize(
    "origin",
    [FOREIGN_ORIGIN, "http://127.0.0.1:8080.evil.example", "null", "http://127.0.0.1:8081", "HTTP://127.0.0.1:8080"],
)
def test_foreign_origin_gets_no_cors_headers(client: Client, origin: str) -> None:
    resp = client.get("/things", headers={"Origin": origin})
    assert resp.status_code == 200
    assert "Access-Control-Allow-Origin" not in resp.headers
    assert "Access-Control-Allow-Credentials" not in resp.headers


def test_cors_headers_are_also_on_errors(client: Client) -> None:
    resp = client.get("/things/x", headers={"Origin": ALLOWED_ORIGIN})
    problem(resp, 401)
    assert resp.headers["Access-Control-Allow-Origin"] == ALLOWED_ORIGIN


def test_preflight_on_a_token_route_without_authorization_succeeds(client: Client) -> None:
    resp = client.options(
        "/things/abc",
        headers={
            "Origin": ALLOWED_ORIGIN,
            "Access-Control-Request-Method": "DELETE",
            "Access-Control-Request-Headers": "authorization, content-type, x-csrf-token",
        },
    )
    assert resp.status_code == 204
    assert set(resp.headers["Access-Control-Allow-Methods"].split(", ")) == {"GET", "HEAD", "DELETE"}
    allowed = {h.strip().lower() for h in resp.headers["Access-Control-Allow-Headers"].split(",")}
    assert {"authorization", "content-type", "x-csrf-token", "x-request-id"} <= allowed
    assert int(resp.headers["Access-Control-Max-Age"]) > 0
    assert resp.headers["Access-Control-Allow-Origin"] == ALLOWED_ORIGIN
    assert resp.headers["Access-Control-Allow-Credentials"] == "true"
    assert "WWW-Authenticate" not in resp.headers


def test_preflight_from_a_foreign_origin_is_a_403_problem(client: Client) -> None:
    resp = client.options("/things/abc", headers={"Origin": FOREIGN_ORIGIN, "Access-Control-Request-Method": "GET"})
    body = problem(resp, 403)
    assert body["type"] == "urn:mllab:problem:cors-origin"
    assert "Access-Control-Allow-Origin" not in resp.headers
    assert "Access-Control-Allow-Methods" not in resp.headers


def test_preflight_for_a_method_the_path_lacks_is_405(client: Client) -> None:
    resp = client.options("/things/abc", headers={"Origin": ALLOWED_ORIGIN, "Access-Control-Request-Method": "PUT"})
    problem(resp, 405)
    assert "Access-Control-Allow-Methods" not in resp.headers


def test_preflight_on_an_unknown_path_is_404(client: Client) -> None:
    resp = client.options("/nope", headers={"Origin": ALLOWED_ORIGIN, "Access-Control-Request-Method": "GET"})
    problem(resp, 404)


def test_plain_options_lists_the_allowed_methods(client: Client) -> None:
    resp = client.options("/things")
    assert resp.status_code == 204
    assert set(resp.headers["Allow"].split(", ")) == {"GET", "HEAD", "POST", "OPTIONS"}


# --- authentication ------------------------------------------------------------------------------


@pytest.mark.parametrize("authorization", [None, "", "Bearer", "Bearer   ", "Basic dXNlcjpwYXNz", "Token abc"])
def test_missing_bearer_is_401_with_www_authenticate(client: Client, authorization: str | None) -> None:
    headers = {"Authorization": authorization} if authorization is not None else {}
    resp = client.get("/things/abc", headers=headers)
    body = problem(resp, 401)
    assert body["type"] == "urn:mllab:problem:unauthorized"
    assert resp.headers["WWW-Authenticate"].startswith("Bearer")


def test_invalid_bearer_is_401_with_invalid_token_error(client: Client) -> None:
    forged = tokens.issue_access_token("user-1", "s").token[:-4] + "AAAA"
    resp = client.get("/things/abc", headers={"Authorization": f"Bearer {forged}"})
    body = problem(resp, 401)
    assert body["type"] == "urn:mllab:problem:invalid-token"
    assert 'error="invalid_token"' in resp.headers["WWW-Authenticate"]
    assert forged not in resp.get_data(as_text=True)


def test_expired_bearer_is_401(client: Client) -> None:
    headers = bearer()
    with clock.travel(by=timedelta(minutes=11)):
        body = problem(client.get("/things/abc", headers=headers), 401)
    assert "expired" in body["detail"]


def test_valid_token_reaches_the_handler_with_its_uid(client: Client) -> None:
    token = tokens.issue_access_token("user-77", "sess-9").token
    for scheme in ("Bearer", "bearer"):
        resp = client.get("/things/abc", headers={"Authorization": f"{scheme} {token}"})
        assert resp.status_code == 200
        assert resp.get_json() == {"id": "abc", "uid": "user-77", "sid": "sess-9"}


def test_uid_on_a_route_without_auth_is_a_401() -> None:
    plain = http.Router("things", TABLE)

    @plain.route("GET", "/things")
    def who(req: http.Request) -> dict[str, str]:
        return {"uid": req.uid}

    problem(Client(wsgi(plain)).get("/things"), 401)


# --- client ip -----------------------------------------------------------------------------------


def _raw(headers: dict[str, str], remote: str = "10.0.0.9") -> RawRequest:
    return RawRequest(EnvironBuilder(path="/", headers=headers, environ_base={"REMOTE_ADDR": remote}).get_environ())


@pytest.mark.parametrize(
    ("forwarded", "expected"),
    [
        ("203.0.113.5, 35.191.0.1", "203.0.113.5"),
        ("6.6.6.6, 203.0.113.5, 35.191.0.1", "203.0.113.5"),  # a spoofed first entry is ignored
        (" 6.6.6.6 ,203.0.113.5 ,35.191.0.1 ", "203.0.113.5"),
        ("203.0.113.5", "10.0.0.9"),
        ("", "10.0.0.9"),
    ],
)
def test_client_ip_is_second_from_the_right_of_x_forwarded_for(forwarded: str, expected: str) -> None:
    headers = {"X-Forwarded-For": forwarded} if forwarded else {}
    assert http.client_ip(_raw(headers)) == expected


# --- the real jwks function ----------------------------------------------------------------------


def test_jwks_function_serves_the_public_key_set(load_function: Callable[[str], Any]) -> None:
    import jwt

    client = load_function("jwks").test_client()
    resp = client.get("/.well-known/jwks.json", headers={"Origin": ALLOWED_ORIGIN, "X-Request-Id": "jwks-req-0001"})
    assert resp.status_code == 200
    assert resp.mimetype == "application/json"
    keys = resp.get_json()["keys"]
    assert [k["kid"] for k in keys] == [k["kid"] for k in json.loads(config.secret(config.PUBLIC_KEYS))["keys"]]
    assert all("d" not in k for k in keys)
    assert resp.headers["Cache-Control"] == "public, max-age=300"
    assert resp.headers["X-Request-Id"] == "jwks-req-0001"
    assert resp.headers["Access-Control-Allow-Origin"] == ALLOWED_ORIGIN
    for name in SECURITY_HEADERS:
        assert resp.headers.get(name)

    # A token issued by mllab verifies against what the endpoint publishes, independently of mllab.
    token = tokens.issue_access_token("user-5", "s").token
    kid = jwt.get_unverified_header(token)["kid"]
    key = jwt.PyJWK(next(k for k in keys if k["kid"] == kid)).key
    claims = jwt.decode(
        token,
        key,
        algorithms=["ES256"],
        audience=config.settings().token_audience,
        issuer=config.settings().token_issuer,
    )
    assert claims["sub"] == "user-5"


def test_jwks_function_answers_problems(load_function: Callable[[str], Any]) -> None:
    client = load_function("jwks").test_client()

    resp = client.post("/.well-known/jwks.json")
    assert resp.status_code == 405
    assert resp.mimetype == "application/problem+json"
    assert set(resp.headers["Allow"].split(", ")) == {"GET", "HEAD", "OPTIONS"}

    resp = client.get("/.well-known/other.json")
    assert resp.status_code == 404
    assert resp.get_json()["request_id"] == resp.headers["X-Request-Id"]
    for name in SECURITY_HEADERS:
        assert resp.headers.get(name)

    resp = client.options(
        "/.well-known/jwks.json", headers={"Origin": ALLOWED_ORIGIN, "Access-Control-Request-Method": "GET"}
    )
    assert resp.status_code == 204
    assert resp.headers["Access-Control-Allow-Origin"] == ALLOWED_ORIGIN


def test_jwks_function_logs_one_access_line(load_function: Callable[[str], Any], logs: LogCapture) -> None:
    client = load_function("jwks").test_client()
    client.get("/.well-known/jwks.json", headers={"X-Cloud-Trace-Context": "0123456789abcdef0123456789abcdef/7"})
    (line,) = logs.find("request")
    assert line["httpRequest"]["status"] == 200
    assert line["function"] == "jwks"
    assert line["logging.googleapis.com/trace"] == "projects/demo-mllab/traces/0123456789abcdef0123456789abcdef"


def test_every_token_route_checks_session_liveness_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    from mllab.identity import sessions

    table = (
        Route("POST", "/live", "live", "a mutation", auth=Auth.ACCESS_TOKEN),
        Route("GET", "/read", "live", "a read", auth=Auth.ACCESS_TOKEN),
        Route("GET", "/opted-out", "live", "a read that opts out", auth=Auth.ACCESS_TOKEN, live=False),
    )
    assert table[0].needs_live_session and table[1].needs_live_session and not table[2].needs_live_session
    checked: list[str] = []

    def refuse(claims, also):
        checked.append(claims["sid"])
        raise http.Problem(401, "Your session has ended. Sign in again.", slug="session-ended")

    monkeypatch.setattr(sessions, "check_live_reading", refuse)
    router = http.Router("live", table)
    for route in table:
        router.route(route.method, route.path)(lambda req: {"ok": True})
    client = Client(lambda env, sr: router(RawRequest(env))(env, sr))
    token = tokens.issue_access_token("u1", "s1").token
    auth = {"Authorization": f"Bearer {token}"}
    assert client.get("/opted-out", headers=auth).status_code == 200
    for r in (client.get("/read", headers=auth), client.post("/live", headers=auth)):
        assert r.status_code == 401 and r.json["type"].endswith("session-ended")
    assert checked == ["s1", "s1"]


def test_a_handler_gets_the_documents_it_reads_with_the_liveness_check_of_the_tokens_user(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from mllab.identity import sessions

    table = (
        Route("GET", "/mine", "live", "a read", auth=Auth.ACCESS_TOKEN),
        Route("GET", "/opted-out", "live", "a read that opts out", auth=Auth.ACCESS_TOKEN, live=False),
    )
    asked: list[tuple[str, list[str]]] = []

    def live(claims, also):
        asked.append((claims["sub"], list(also)))
        return {"uid": claims["sub"]}, {path: f"snapshot of {path}" for path in also}

    monkeypatch.setattr(sessions, "check_live_reading", live)
    router = http.Router("live", table)
    router.route("GET", "/mine", reads=lambda uid: [f"usage/{uid}"])(lambda req: dict(req.documents))
    with pytest.raises(ValueError, match="checks no session"):
        router.route("GET", "/opted-out", reads=lambda uid: [f"usage/{uid}"])
    client = Client(lambda env, sr: router(RawRequest(env))(env, sr))
    token = tokens.issue_access_token("u1", "s1").token
    r = client.get("/mine", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 200 and r.json == {"usage/u1": "snapshot of usage/u1"}
    assert asked == [("u1", ["usage/u1"])]  # one check, reading the token's user's documents


# --- routes whose domain checks the body and the answer (no pydantic on their path) ----------------------


def _domain_checked_router(seen: list[Any]) -> http.Router:
    """A route naming models that do not exist: the router must never import them for such a route."""
    table = (
        Route(
            "POST",
            "/score",
            "scorer",
            "a route whose domain checks its body",
            request="no_such_module:Request",
            response="no_such_module:Response",
            edge_validates=False,
        ),
    )
    router = http.Router("scorer", table)

    @router.route("POST", "/score")
    def score(req: http.Request) -> dict[str, Any]:
        seen.append(req.body)
        return {"score": 1, "echo": req.body}

    return router


def test_a_domain_checked_route_gets_the_parsed_json_and_answers_as_it_returns() -> None:
    seen: list[Any] = []
    client = Client(wsgi(_domain_checked_router(seen)))
    resp = client.post("/score", json={"anything": [1, {"deep": None}]})
    assert resp.status_code == 200, resp.data
    assert resp.get_json() == {"score": 1, "echo": {"anything": [1, {"deep": None}]}}
    assert seen == [{"anything": [1, {"deep": None}]}]


@pytest.mark.parametrize(
    ("data", "content_type", "status", "says"),
    [
        (b'{"a": 1}', "text/plain", 415, "Content-Type: application/json"),
        (b'{"a": ', "application/json", 400, "not valid JSON"),
        (b'{"a": NaN}', "application/json", 400, "NaN is not a JSON number"),
        (b"\xff\xfe", "application/json", 400, "not UTF-8"),
        (b"", "application/json", 400, "not valid JSON"),
    ],
)
def test_a_domain_checked_route_still_refuses_what_is_not_json(
    data: bytes, content_type: str, status: int, says: str
) -> None:
    seen: list[Any] = []
    client = Client(wsgi(_domain_checked_router(seen)))
    body = problem(client.post("/score", data=data, content_type=content_type), status)
    assert says in body["detail"]
    assert seen == []  # the handler never ran


def test_an_answer_is_rendered_while_another_thread_is_still_importing_pydantic(monkeypatch) -> None:
    """The first requests of an instance arrive together: one thread imports pydantic for its route's
    model while another renders a plain answer. A half-imported pydantic (no BaseModel yet) must not
    turn that answer into a 500."""
    import sys
    import types

    monkeypatch.setitem(sys.modules, "pydantic", types.ModuleType("pydantic"))  # as while being imported
    monkeypatch.setitem(sys.modules, "pydantic.main", types.ModuleType("pydantic.main"))
    resp = Client(wsgi(make_router())).get("/things")
    assert resp.status_code == 200, resp.data
    assert resp.get_json() == {"items": [], "next_cursor": None}
