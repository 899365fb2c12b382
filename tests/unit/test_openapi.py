"""The OpenAPI document (mllab.api.openapi): generated from the route table and the wire models, valid
OpenAPI 3.1, one operation per route with its statuses, schemas, parameters and security, and
served by the local gateway at /openapi.json."""

from __future__ import annotations

import json
import re
from typing import Any

import jsonschema_rs
import pytest
import schemathesis
from hypothesis import example, given
from hypothesis import strategies as st

from mllab import account
from mllab.api import openapi, routes
from mllab.api.routes import Auth, Csrf
from mllab.files import catalog
from mllab.files import schemas as file_schemas
from mllab.identity import schemas as identity_schemas
from mllab.platform import jsonvalues, wire

DOC = openapi.document()
ROUTES = routes.ROUTES
PROBLEM = {"$ref": "#/components/schemas/Problem"}


def op(route: routes.Route) -> dict[str, Any]:
    return DOC["paths"][route.path][route.method.lower()]


def resolve(node: dict[str, Any]) -> dict[str, Any]:
    """Follow one local $ref (#/components/...)."""
    if "$ref" not in node:
        return node
    target: Any = DOC
    for part in node["$ref"].removeprefix("#/").split("/"):
        target = target[part]
    return target


def json_schema(response: dict[str, Any], media: str = "application/json") -> dict[str, Any]:
    return resolve(response)["content"][media]["schema"]


def ids(route: routes.Route) -> str:
    return f"{route.method} {route.path}"


# --- the document as a whole ---------------------------------------------------------------------


def test_it_is_a_valid_openapi_3_1_document() -> None:
    assert DOC["openapi"].startswith("3.1.")
    schemathesis.openapi.from_dict(DOC).validate()  # the OpenAPI 3.1 meta-schema schemathesis ships


def test_a_broken_document_is_refused_by_the_same_validator() -> None:
    """The validation above can fail: a response without its description is not OpenAPI."""
    broken = json.loads(json.dumps(DOC))
    del broken["paths"]["/me"]["get"]["responses"]["200"]["description"]
    with pytest.raises(jsonschema_rs.ValidationError):
        schemathesis.openapi.from_dict(broken).validate()


@pytest.mark.parametrize("name", sorted(DOC["components"]["schemas"]))
def test_every_component_is_a_valid_json_schema_2020_12(name: str) -> None:
    jsonschema_rs.meta.validate(DOC["components"]["schemas"][name])


def test_every_ref_resolves() -> None:
    refs = re.findall(r'"\$ref": "([^"]+)"', json.dumps(DOC))
    assert refs
    for ref in set(refs):
        assert resolve({"$ref": ref}), ref


def test_generation_is_pure_and_json() -> None:
    assert openapi.document() == DOC
    assert json.loads(json.dumps(DOC)) == DOC


def test_components_are_pydantics_own_schemas() -> None:
    """Not written by hand: a component is what pydantic says the model is (refs rebased)."""
    for model, mode in (
        (identity_schemas.LoginRequest, "validation"),
        (account.Me, "serialization"),
        (wire.Problem, "serialization"),
        (file_schemas.SignUpload, "validation"),
    ):
        own = model.model_json_schema(mode=mode, ref_template=openapi.SCHEMA_REF)
        own.pop("$defs", None)
        assert DOC["components"]["schemas"][model.__name__] == own


# --- every route ---------------------------------------------------------------------------------


def test_every_route_is_one_operation_and_nothing_else() -> None:
    documented = {(method.upper(), path) for path, item in DOC["paths"].items() for method in item}
    assert documented == {(r.method, r.path) for r in ROUTES}
    operation_ids = [op(r)["operationId"] for r in ROUTES]
    assert len(set(operation_ids)) == len(operation_ids)


@pytest.mark.parametrize("route", ROUTES, ids=ids)
def test_the_success_status_and_its_body(route: routes.Route) -> None:
    responses = op(route)["responses"]
    success = responses[str(route.status)]
    assert resolve(success["headers"]["X-Request-Id"])["required"] is True
    if route.status in (204, 302):
        assert "content" not in success
    else:
        model = openapi.response_model(route, ROUTES)
        assert model is not None
        assert json_schema(success) == {"$ref": f"#/components/schemas/{model.__name__}"}
    if route.status == 302:
        assert resolve(success["headers"]["Location"])["required"] is True
    assert op(route)["summary"] == route.summary


@pytest.mark.parametrize("route", ROUTES, ids=ids)
def test_every_error_is_a_problem_and_429_and_503_are_everywhere(route: routes.Route) -> None:
    responses = op(route)["responses"]
    errors = sorted(int(s) for s in responses if int(s) >= 400)
    assert {429, 503} <= set(errors)
    assert set(route.answers) <= {int(s) for s in responses}
    for status in errors:
        response = resolve(responses[str(status)])
        assert response["content"] == {"application/problem+json": {"schema": PROBLEM}}
        assert resolve(response["headers"]["X-Request-Id"])["required"] is True
        if status in (429, 503):
            assert resolve(response["headers"]["Retry-After"])["required"] is True


@pytest.mark.parametrize("route", ROUTES, ids=ids)
def test_errors_follow_from_auth_csrf_body_and_path(route: routes.Route) -> None:
    statuses = {int(s) for s in op(route)["responses"]}
    assert (401 in statuses) >= (route.auth in (Auth.ACCESS_TOKEN, Auth.REFRESH_COOKIE, Auth.API_KEY))
    assert (403 in statuses) >= (route.csrf is not Csrf.NONE)
    assert (404 in statuses) >= ("{" in route.path)
    if route.request is not None:
        assert {400, 413, 422} <= statuses
        assert (415 in statuses) == (route.csrf is not Csrf.ORIGIN)  # there the CSRF check refuses first (403)
    if not openapi.has_body(route):
        assert 413 not in statuses and "requestBody" not in op(route)


@pytest.mark.parametrize("route", ROUTES, ids=ids)
def test_the_request_body_is_the_routes_model(route: routes.Route) -> None:
    body = op(route).get("requestBody")
    if route.request is None:
        assert body is None or route.auth is Auth.WEBHOOK_SIGNATURE or route.csrf is Csrf.ORIGIN
        return
    assert body["required"] is True
    assert body["content"] == {
        "application/json": {"schema": {"$ref": f"#/components/schemas/{route.request.__name__}"}}
    }


@pytest.mark.parametrize("route", ROUTES, ids=ids)
def test_security_and_csrf(route: routes.Route) -> None:
    operation = op(route)
    headers = {p["name"]: p for p in operation.get("parameters", []) if p["in"] == "header"}
    expected = {
        Auth.NONE: [],
        Auth.ACCESS_TOKEN: [{"accessToken": []}],
        Auth.REFRESH_COOKIE: [{"refreshCookie": []}, {}],
        Auth.API_KEY: [{"apiKey": []}],
        Auth.WEBHOOK_SIGNATURE: [{name: [] for name in openapi.PAYPAL_SCHEMES}],
    }[route.auth]
    assert operation["security"] == expected
    if route.csrf is Csrf.NONE:
        assert "X-CSRF-Token" not in headers
    else:
        assert headers["X-CSRF-Token"]["required"] is True


@pytest.mark.parametrize("route", ROUTES, ids=ids)
def test_path_parameters_come_from_the_template(route: routes.Route) -> None:
    in_path = [p["name"] for p in op(route).get("parameters", []) if p["in"] == "path"]
    assert in_path == re.findall(r"\{([a-z_]+)\}", route.path)


def test_security_schemes() -> None:
    schemes = DOC["components"]["securitySchemes"]
    assert schemes["accessToken"] == {
        **schemes["accessToken"],
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "JWT",
    }
    assert (schemes["refreshCookie"]["in"], schemes["refreshCookie"]["name"]) == ("cookie", "__Host-rt")
    assert sorted(schemes[n]["name"] for n in openapi.PAYPAL_SCHEMES) == [
        "PAYPAL-AUTH-ALGO",
        "PAYPAL-CERT-URL",
        "PAYPAL-TRANSMISSION-ID",
        "PAYPAL-TRANSMISSION-SIG",
        "PAYPAL-TRANSMISSION-TIME",
    ]
    assert all(schemes[n]["in"] == "header" for n in openapi.PAYPAL_SCHEMES)


@pytest.mark.parametrize("collection", catalog.COLLECTIONS)
def test_catalog_lists_take_limit_cursor_and_their_filters(collection: str) -> None:
    route = next(r for r in ROUTES if r.method == "GET" and r.path == f"/{collection}")
    query = {p["name"]: p for p in op(route)["parameters"] if p["in"] == "query"}
    assert set(query) == {"limit", "cursor", *catalog.LIST_FILTERS[collection], *catalog.LIST_OPTIONS[collection]}
    for name in catalog.LIST_OPTIONS[collection]:
        assert query[name]["schema"] == {"type": "boolean", "default": False}
    assert (query["limit"]["schema"]["minimum"], query["limit"]["schema"]["maximum"]) == (1, catalog.MAX_LIMIT)
    page = DOC["components"]["schemas"][json_schema(op(route)["responses"]["200"])["$ref"].rsplit("/", 1)[1]]
    record = op(next(r for r in ROUTES if r.method == "GET" and r.path == f"/{collection}/{{id}}"))
    assert page["properties"]["items"]["items"] == json_schema(record["responses"]["200"])
    assert page["required"] == ["items"]


# --- the plain-text rule --------------------------------------------------------------------------

PLAIN = re.compile(jsonvalues.PLAIN_PATTERN)


def _accepted(value: str) -> bool:
    try:
        jsonvalues.plain(value)
    except ValueError:
        return False
    return True


@given(st.text(alphabet=st.characters(codec=None, exclude_categories=())))
@example("\ud800")
@example("abc\u202egnp.exe")
@example("name\n")
@example("Zoë 🎉 数据")
def test_the_documents_pattern_is_the_validators_rule(value: str) -> None:
    assert _accepted(value) == bool(PLAIN.fullmatch(value)), repr(value)


def test_every_plain_text_field_carries_the_pattern() -> None:
    fields = [
        (model, name)
        for model in {r.request for r in ROUTES if r.request is not None}
        for name, f in model.model_fields.items()
        if wire.Plain in f.metadata
    ]
    assert len(fields) >= 4  # names, the email, promo codes, reasons
    components = DOC["components"]["schemas"]
    for model, name in fields:
        prop = components[model.__name__]["properties"][name]
        schema = next((s for s in prop.get("anyOf", [prop]) if s.get("type") == "string"), prop)
        assert schema["pattern"] == jsonvalues.PLAIN_PATTERN, (model.__name__, name)
        with pytest.raises(ValueError, match="control characters"):
            model.model_validate({name: "a\x00b"})


# --- golden operations -----------------------------------------------------------------------------


def test_golden_post_auth_login() -> None:
    login = DOC["paths"]["/auth/login"]["post"]
    assert login["operationId"] == "post_auth_login"
    assert login["security"] == []
    assert sorted(login["responses"]) == ["200", "400", "401", "403", "413", "422", "429", "503"]
    ok = login["responses"]["200"]
    assert json_schema(ok) == {"$ref": "#/components/schemas/AccessTokenResponse"}
    assert sorted(ok["headers"]) == ["Set-Cookie", "X-Request-Id"]
    assert DOC["components"]["schemas"]["LoginRequest"] == {
        "additionalProperties": False,
        "type": "object",
        "title": "LoginRequest",
        "required": ["email", "password"],
        "properties": {
            "email": {
                "format": "email",
                "maxLength": 254,
                "minLength": 3,
                "title": "Email",
                "type": "string",
                "pattern": jsonvalues.PLAIN_PATTERN,
            },
            "password": {"maxLength": 1024, "minLength": 1, "title": "Password", "type": "string"},
        },
    }
    assert [p["name"] for p in login["parameters"]] == ["X-CSRF-Token"]
    assert "Origin" in login["description"]


def test_golden_delete_session() -> None:
    delete = DOC["paths"]["/sessions/{id}"]["delete"]
    assert delete["security"] == [{"accessToken": []}]
    assert sorted(delete["responses"]) == ["204", "401", "403", "404", "429", "503"]
    assert delete["parameters"][0] == {
        "name": "id",
        "in": "path",
        "required": True,
        "schema": {"type": "string", "pattern": "^[0-9a-f]{32}$"},
        "description": "An id this API gave you (32 lower-case hex characters).",
    }
    assert delete["parameters"][1]["name"] == "X-CSRF-Token"


def test_golden_refresh_answers_204_when_signed_out() -> None:
    refresh = DOC["paths"]["/auth/refresh"]["post"]
    assert sorted(refresh["responses"]) == ["200", "204", "401", "403", "413", "429", "503"]
    assert "content" not in refresh["responses"]["204"]
    assert refresh["requestBody"]["content"]["application/json"]["schema"] == {"type": "object", "maxProperties": 0}


def test_golden_paypal_webhook() -> None:
    hook = DOC["paths"]["/payments/paypal/webhook"]["post"]
    assert sorted(hook["responses"]) == ["200", "400", "409", "413", "429", "503"]
    assert hook["requestBody"]["content"]["application/json"]["schema"]["required"] == ["id", "event_type"]
    assert json_schema(hook["responses"]["200"]) == {"$ref": "#/components/schemas/WebhookAck"}


def test_golden_google_login_and_signed_download_queries() -> None:
    login = DOC["paths"]["/auth/google/login"]["get"]
    assert sorted(login["responses"]) == ["302", "400", "401", "403", "429", "502", "503"]
    assert login["parameters"][0] == {
        "name": "return_to",
        "in": "query",
        "required": False,
        "schema": {"type": "string", "maxLength": 512},
        "description": "A path on this site to come back to after signing in (default /).",
    }
    assert [(p["name"], p["schema"]) for p in login["parameters"][1:]] == [("link", {"type": "string", "enum": ["1"]})]
    download = DOC["paths"]["/signed/download"]["get"]["parameters"][0]
    assert (download["name"], download["in"], download["required"]) == ("object", "query", True)
    pattern = re.compile(download["schema"]["pattern"])
    good = f"users/{'a' * 32}/projects/{'b' * 32}/models/{'c' * 32}/versions/3/model.json"
    assert pattern.fullmatch(good) and not pattern.fullmatch("users/../etc/passwd")


# --- served by the gateway ------------------------------------------------------------------------


def test_the_gateway_serves_it(tmp_path) -> None:
    from werkzeug.test import Client

    from mllab_dev.gateway import Gateway

    (tmp_path / "index.html").write_text("<!doctype html>")
    app = Gateway({"frontend": str(tmp_path), "functions": {}, "components": []})
    client = Client(app)
    r = client.get("/openapi.json")
    assert r.status_code == 200 and r.mimetype == "application/json"
    assert r.get_json() == DOC
    assert r.headers["X-Request-Id"]
    assert client.post("/openapi.json").status_code == 404  # only GET and HEAD


def test_python_m_mllab_openapi_prints_it(capsys: pytest.CaptureFixture[str]) -> None:
    openapi.main()
    assert json.loads(capsys.readouterr().out) == DOC
