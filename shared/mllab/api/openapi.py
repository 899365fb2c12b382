"""The OpenAPI 3.1 document of the HTTP API, generated from the route table (`mllab.api.routes`) and the
wire models (`mllab.platform.wire` and each domain's `schemas`); nothing in it is written by hand.

What each part comes from:
- paths and methods, summaries, success statuses, request and response models: the route table;
- schemas: pydantic's JSON Schema (draft 2020-12, which OpenAPI 3.1 uses as is) under
  `#/components/schemas`, requests in validation mode and responses in serialization mode; a
  catalog list's page is typed with the record its `GET .../{id}` answers;
- errors: every 4xx/5xx is `application/problem+json` (`Problem`). Which ones a route answers
  follows from the route: its auth (401), CSRF (403), body (400, 413, 415, 422), path parameters
  (404), the statuses its row lists in `answers`, and the 429 (with Retry-After) and 503 (a
  dependency is down, with Retry-After) every route may answer;
- security: the bearer access token, the `__Host-rt` refresh cookie, PayPal's signature headers;
  `X-CSRF-Token` is a header parameter wherever CSRF applies;
- query parameters: what the handlers read (catalog lists: `mllab.files.catalog.LIST_FILTERS` and
  `LIST_OPTIONS`, limit and cursor; `?object=`; `?return_to=`; the provider's answer on the Google callback).

Pure: `document()` reads no settings and no clock, so the same code gives the same document.
"""

from __future__ import annotations

import functools
import re
from typing import Any

from pydantic import BaseModel, create_model
from pydantic.json_schema import models_json_schema

from mllab.api import routes
from mllab.api.routes import Auth, Csrf, Route
from mllab.billing import webhooks
from mllab.files import catalog, objects
from mllab.files import schemas as file_schemas
from mllab.identity import oauth, sessions
from mllab.identity import schemas as identity_schemas
from mllab.platform import wire
from mllab.platform.problems import PROBLEM_JSON

OPENAPI_VERSION = "3.1.0"
API_VERSION = "1"
SCHEMA_REF = "#/components/schemas/{model}"
JSON = "application/json"
ALWAYS = (429, 503)  # every route may answer these: a budget ran out, a dependency is down
REQUEST_ID = r"^[A-Za-z0-9._:-]{8,128}$"
ID_PATTERN = rf"^{objects.ID}$"

# What each error status means in this API (the detail of each problem says more).
ERROR_MEANING = {
    400: "Bad request: malformed JSON, a foreign cursor, an invalid link or sign-in answer",
    401: "Not signed in, or the token, cookie or credentials were refused",
    402: "Payment required",
    403: "Forbidden: a CSRF check failed, or the account or plan does not allow this",
    404: "Not found, or not yours (another user's id answers exactly like an unknown one)",
    409: "Conflict with the current state",
    413: "The request body (or the declared file size) is too large",
    415: "The body must be JSON (Content-Type: application/json)",
    422: "Some fields or query parameters are missing or invalid; see `errors`",
    429: "Too many requests or failed attempts; Retry-After says when to try again",
    502: "An upstream provider answered something unusable",
    503: "A service we depend on is not answering; Retry-After says when to try again",
}
WITH_RETRY_AFTER = (429, 503)

SECURITY_SCHEMES: dict[str, dict[str, Any]] = {
    "accessToken": {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "JWT",
        "description": "An ES256 access token from POST /auth/login or /auth/refresh "
        "(10 minutes; public keys at /.well-known/jwks.json).",
    },
    "apiKey": {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "mlk_<id>_<secret>",
        "description": "An API key from POST /api-keys (shown once; scoped, optionally to some deployments).",
    },
    "refreshCookie": {
        "type": "apiKey",
        "in": "cookie",
        "name": sessions.COOKIE,
        "description": "The rotating refresh token (HttpOnly, Secure, SameSite=Strict).",
    },
    # PayPal signs each delivery with these five headers together (mllab.billing.webhooks).
    **{
        _name: {
            "type": "apiKey",
            "in": "header",
            "name": header.upper(),
            "description": "PayPal's webhook signature header; the five are verified together.",
        }
        for _name, header in (
            ("paypalTransmissionId", webhooks.TRANSMISSION_ID),
            ("paypalTransmissionTime", webhooks.TRANSMISSION_TIME),
            ("paypalTransmissionSig", webhooks.TRANSMISSION_SIG),
            ("paypalCertUrl", webhooks.CERT_URL),
            ("paypalAuthAlgo", webhooks.AUTH_ALGO),
        )
    },
}
PAYPAL_SCHEMES = [name for name in SECURITY_SCHEMES if name.startswith("paypal")]

HEADERS: dict[str, dict[str, Any]] = {
    "X-Request-Id": {
        "description": "This request's id (a valid incoming X-Request-Id is kept); quote it to support.",
        "required": True,
        "schema": {"type": "string", "pattern": REQUEST_ID},
    },
    "Retry-After": {
        "description": "Seconds to wait before trying again.",
        "required": True,
        "schema": {"type": "integer", "minimum": 0},
    },
    "Location": {
        "description": "Where the browser goes next.",
        "required": True,
        "schema": {"type": "string", "minLength": 1},
    },
    "Set-Cookie": {
        "description": f"The `{sessions.COOKIE}` refresh cookie (HttpOnly, Secure, SameSite=Strict).",
        "required": True,
        "schema": {"type": "string", "minLength": 1},
    },
}


# --- query parameters the handlers read ----------------------------------------------------------


def _query(name: str, schema: dict[str, Any], description: str, *, required: bool = False) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": required, "schema": schema, "description": description}


def _list_parameters(collection: str) -> list[dict[str, Any]]:
    params = [
        _query(
            "limit",
            {"type": "integer", "minimum": 1, "maximum": catalog.MAX_LIMIT, "default": catalog.DEFAULT_LIMIT},
            "Items per page.",
        ),
        _query(
            "cursor",
            {"type": "string", "pattern": r"^[A-Za-z0-9_-]{1,200}$"},
            "The `next_cursor` of the previous page.",
        ),
    ]
    for name in catalog.LIST_FILTERS[collection]:
        params.append(_query(name, {"type": "string", "pattern": ID_PATTERN}, f"Only items with this {name}."))
    for name in catalog.LIST_OPTIONS[collection]:
        params.append(
            _query(
                name,
                {"type": "boolean", "default": False},
                f"true: each item with its {name}, as GET /{collection}/{{id}} answers it.",
            )
        )
    return params


OTHER_QUERY: dict[tuple[str, str], list[dict[str, Any]]] = {
    ("GET", "/signed/download"): [
        _query(
            "object",
            {"type": "string", "pattern": f"^{objects._NAME.pattern}$"},
            "The object name of one of your recorded files (as GET /account/export or a version lists it).",
            required=True,
        )
    ],
    ("GET", "/auth/google/login"): [
        _query(
            "return_to",
            {"type": "string", "maxLength": oauth.RETURN_TO_MAX},
            "A path on this site to come back to after signing in (default /).",
        ),
        _query(
            "link",
            {"type": "string", "enum": ["1"]},
            "1: add Google to the account of this browser's password session (its refresh cookie).",
        ),
    ],
    ("GET", "/auth/google/callback"): [
        _query("state", {"type": "string"}, "The state the provider echoes back."),
        _query("code", {"type": "string", "maxLength": 2048}, "The authorization code."),
        _query("error", {"type": "string"}, "The provider's error instead of a code (e.g. access_denied)."),
        {
            "name": oauth.TX_COOKIE,
            "in": "cookie",
            "required": False,
            "schema": {"type": "string"},
            "description": "The browser's sign-in transaction, set by GET /auth/google/login.",
        },
    ],
}


def query_parameters(route: Route) -> list[dict[str, Any]]:
    if route.method == "GET" and route.response is file_schemas.Page:
        collection = route.path.strip("/")
        if collection in catalog.LIST_FILTERS:
            return _list_parameters(collection)
    return list(OTHER_QUERY.get((route.method, route.path), []))


# --- statuses ------------------------------------------------------------------------------------


def path_parameters(route: Route) -> list[str]:
    return re.findall(r"\{([a-z_]+)\}", route.path)


def has_body(route: Route) -> bool:
    """The route reads a body: its request model, PayPal's event, or the JSON a cookie route needs."""
    return route.request is not None or route.auth is Auth.WEBHOOK_SIGNATURE or route.csrf is Csrf.ORIGIN


def success_statuses(route: Route) -> list[int]:
    return sorted({route.status, *(s for s in route.answers if s < 400)})


def error_statuses(route: Route) -> list[int]:
    """Every 4xx/5xx the route may answer (all of them problem+json)."""
    out = set(ALWAYS) | {s for s in route.answers if s >= 400}
    if route.auth in (Auth.ACCESS_TOKEN, Auth.REFRESH_COOKIE, Auth.API_KEY):
        out.add(401)
    if route.auth is Auth.WEBHOOK_SIGNATURE:
        out.add(400)  # the signature is refused
    if route.csrf is not Csrf.NONE:
        out.add(403)
    if has_body(route):
        out.add(413)
    if route.request is not None:
        out |= {400, 422}
        if route.csrf is not Csrf.ORIGIN:  # there the CSRF check refuses a non-JSON body first (403)
            out.add(415)
    if path_parameters(route):
        out.add(404)
    return sorted(out)


# --- schemas -------------------------------------------------------------------------------------


def _record_of(route: Route, table: tuple[Route, ...]) -> type[BaseModel] | None:
    """The record a list route's page holds: what its `GET <path>/{id}` answers."""
    one = next((r for r in table if r.method == "GET" and r.path == f"{route.path}/{{id}}"), None)
    return one.response if one is not None else None


@functools.cache
def page_of(record: type[BaseModel]) -> type[BaseModel]:
    """`file_schemas.Page` with its items typed (the wire shape is the same)."""
    return create_model(
        f"{record.__name__}Page",
        __doc__=f"One page of {record.__name__} records, newest first.",
        items=(list[record], ...),  # type: ignore[valid-type]  # a type built at run time, for create_model
        next_cursor=(str | None, None),
    )


def response_model(route: Route, table: tuple[Route, ...]) -> type[BaseModel] | None:
    if route.response is file_schemas.Page:
        record = _record_of(route, table)
        if record is not None:
            return page_of(record)
    return route.response


def _components(table: tuple[Route, ...]) -> tuple[dict[tuple[type[BaseModel], str], dict[str, Any]], dict[str, Any]]:
    pairs: list[tuple[type[BaseModel], str]] = [(wire.Problem, "serialization")]
    for route in table:
        if route.request is not None:
            pairs.append((route.request, "validation"))
        model = response_model(route, table)
        if model is not None:
            pairs.append((model, "serialization"))
    unique = list(dict.fromkeys(pairs))
    refs, defs = models_json_schema(unique, ref_template=SCHEMA_REF)  # type: ignore[arg-type]
    return dict(refs), defs.get("$defs", {})  # type: ignore[arg-type]


# --- operations ----------------------------------------------------------------------------------


def operation_id(route: Route) -> str:
    words = re.findall(r"[a-z0-9]+", route.path.lower())
    return "_".join([route.method.lower(), *words])


def _problem_ref(status: int) -> dict[str, str]:
    return {"$ref": f"#/components/responses/Problem{status}"}


def _header_refs(*names: str) -> dict[str, Any]:
    return {name: {"$ref": f"#/components/headers/{name}"} for name in names}


def _success(route: Route, status: int, refs: dict, table: tuple[Route, ...]) -> dict[str, Any]:
    headers = _header_refs("X-Request-Id")
    if 300 <= status < 400:
        headers.update(_header_refs("Location"))
        return {"description": "A redirect for the browser.", "headers": headers}
    model = response_model(route, table) if status == route.status else None
    if status == 204 or model is None:
        what = "Done; nothing to answer." if status == route.status else "Nothing to answer (see the summary)."
        return {"description": what, "headers": headers}
    if model is identity_schemas.AccessTokenResponse:
        headers.update(_header_refs("Set-Cookie"))  # an access token always comes with its refresh cookie
    return {
        "description": model.__doc__.strip().splitlines()[0] if model.__doc__ else model.__name__,
        "headers": headers,
        "content": {JSON: {"schema": refs[(model, "serialization")]}},
    }


def _request_body(route: Route, refs: dict) -> dict[str, Any] | None:
    if route.request is not None:
        optional = not any(f.is_required() for f in route.request.model_fields.values())
        note = " Every field is optional; an empty body means all defaults." if optional else ""
        return {
            "required": True,
            "description": f"JSON (Content-Type: application/json).{note}",
            "content": {JSON: {"schema": refs[(route.request, "validation")]}},
        }
    if route.auth is Auth.WEBHOOK_SIGNATURE:
        return {
            "required": True,
            "description": "PayPal's event notification, verified on the raw bytes.",
            "content": {
                JSON: {
                    "schema": {
                        "type": "object",
                        "required": ["id", "event_type"],
                        "properties": {
                            "id": {"type": "string"},
                            "event_type": {"type": "string"},
                            "resource_type": {"type": "string"},
                            "resource": {"type": "object"},
                            "create_time": {"type": "string"},
                        },
                    }
                }
            },
        }
    if route.csrf is Csrf.ORIGIN:
        return {
            "required": True,
            "description": "Nothing is read from the body, but it must be sent as JSON "
            "(the CSRF check): an empty body or {}.",
            "content": {JSON: {"schema": {"type": "object", "maxProperties": 0}}},
        }
    return None


def _parameters(route: Route) -> list[dict[str, Any]]:
    params: list[dict[str, Any]] = [
        {
            "name": name,
            "in": "path",
            "required": True,
            "schema": {"type": "string", "pattern": ID_PATTERN},
            "description": "An id this API gave you (32 lower-case hex characters).",
        }
        for name in path_parameters(route)
    ]
    params += query_parameters(route)
    if route.csrf is Csrf.SESSION:
        params.append(
            {
                "name": "X-CSRF-Token",
                "in": "header",
                "required": True,
                "schema": {"type": "string", "minLength": 1},
                "description": "The `csrf` value GET /me answers (bound to this session).",
            }
        )
    elif route.csrf is Csrf.ORIGIN:
        params.append(
            {
                "name": "X-CSRF-Token",
                "in": "header",
                "required": True,
                "schema": {"type": "string", "minLength": 1, "pattern": r"\S"},
                "description": "Any non-empty value (a cross-site form cannot set it).",
            }
        )
    return params


def _security(route: Route) -> list[dict[str, list[str]]]:
    if route.auth is Auth.ACCESS_TOKEN:
        return [{"accessToken": []}]
    if route.auth is Auth.API_KEY:
        return [{"apiKey": []}]
    if route.auth is Auth.REFRESH_COOKIE:
        return [{"refreshCookie": []}, {}]  # without a cookie: already signed out
    if route.auth is Auth.WEBHOOK_SIGNATURE:
        return [{name: [] for name in PAYPAL_SCHEMES}]
    return []


def _description(route: Route) -> str:
    lines = []
    if route.csrf is Csrf.ORIGIN:
        lines.append(
            "Cookie route: POST with Content-Type: application/json, a non-empty X-CSRF-Token and an "
            "Origin on the allow-list (a missing Origin is refused); Sec-Fetch-Site: cross-site is "
            "refused."
        )
    if route.needs_live_session:
        lines.append("The access token's session must still be live.")
    if route.cache != "no-store":
        lines.append(f"Cache-Control: {route.cache}.")
    lines.append(f"Served by the `{route.function}` function.")
    return " ".join(lines)


def operation(route: Route, refs: dict, table: tuple[Route, ...] = routes.ROUTES) -> dict[str, Any]:
    op: dict[str, Any] = {
        "operationId": operation_id(route),
        "summary": route.summary,
        "description": _description(route),
        "tags": [route.function],
        "security": _security(route),
    }
    params = _parameters(route)
    if params:
        op["parameters"] = params
    body = _request_body(route, refs)
    if body is not None:
        op["requestBody"] = body
    responses: dict[str, Any] = {str(s): _success(route, s, refs, table) for s in success_statuses(route)}
    responses.update({str(s): _problem_ref(s) for s in error_statuses(route)})
    op["responses"] = responses
    return op


def _problem_responses(statuses: set[int]) -> dict[str, Any]:
    out = {}
    for status in sorted(statuses):
        headers = _header_refs("X-Request-Id")
        if status in WITH_RETRY_AFTER:
            headers.update(_header_refs("Retry-After"))
        out[f"Problem{status}"] = {
            "description": ERROR_MEANING.get(status, "Error") + " (RFC 9457 problem details).",
            "headers": headers,
            "content": {PROBLEM_JSON: {"schema": {"$ref": SCHEMA_REF.format(model="Problem")}}},
        }
    return out


def document(table: tuple[Route, ...] = routes.ROUTES) -> dict[str, Any]:
    """The OpenAPI 3.1 document of every HTTP route in `table`."""
    refs, defs = _components(table)
    paths: dict[str, dict[str, Any]] = {}
    statuses: set[int] = set()
    for route in table:
        paths.setdefault(route.path, {})[route.method.lower()] = operation(route, refs, table)
        statuses.update(error_statuses(route))
    return {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": "ML Lab API",
            "version": API_VERSION,
            "description": "The HTTP API of ML Lab, generated from its route table. JSON in, JSON out; every "
            "error is RFC 9457 application/problem+json; every response carries X-Request-Id. "
            "Every route may answer 429 and 503 with Retry-After.",
        },
        "tags": [{"name": fn.name} for fn in routes.http_functions() if any(r.function == fn.name for r in table)],
        "paths": paths,
        "components": {
            "schemas": defs,
            "responses": _problem_responses(statuses),
            "headers": HEADERS,
            "securitySchemes": SECURITY_SCHEMES,
        },
    }


def main() -> None:
    """`python -m mllab.api.openapi > openapi.json`: the document, for publishing or client generators."""
    import json
    import sys

    json.dump(document(), sys.stdout, indent=1, ensure_ascii=False)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
