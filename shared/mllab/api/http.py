"""Request handling for one HTTP function: a tiny router bound to the route table.

The pipeline, in order: request id and log context; route match (404/405); CORS preflight, answered
before any auth; body cap (413); auth (401); JSON body parsed into the route's pydantic model
(415/400/422); the handler; the response, with security headers, CORS and `X-Request-Id`.
Every failure is RFC 9457 `application/problem+json`; an unexpected error is a 500 that says nothing
of its cause, and a dependency outage a 503 with `Retry-After`.
"""

from __future__ import annotations

import json
import re
import secrets
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from werkzeug.wrappers import Request as RawRequest
from werkzeug.wrappers import Response as RawResponse

from mllab.api import routes
from mllab.api.routes import Auth, Csrf, Route
from mllab.platform import clients, config, log
from mllab.platform.problems import PROBLEM_JSON, PROBLEM_TYPE, Problem  # noqa: F401 - re-exported for callers

REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{8,128}")
CORS_ALLOW_HEADERS = "Authorization, Content-Type, X-CSRF-Token, X-Request-Id"
ANY_ORIGIN_ALLOW_HEADERS = "Authorization, Content-Type, X-Request-Id"  # API-key routes: no cookie, no CSRF token
CORS_EXPOSE_HEADERS = "X-Request-Id, Retry-After"
CORS_MAX_AGE = "600"

API_SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; frame-ancestors 'none'; base-uri 'none'",
    "Strict-Transport-Security": "max-age=63072000; includeSubDomains",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Resource-Policy": "same-site",
}


# A shared model's page (/m/<deployment id>, frontend/m/index.html) is made to be embedded in other
# sites with an iframe; every other page of the lab may not be framed (clickjacking).
SHARE_PAGE = re.compile(r"/m/[^/]*")
EMBEDDABLE_BY = "*"


def lab_csp(connect: str, frame_ancestors: str = "'none'") -> str:
    """The lab page's CSP (the local gateway and the deployed bucket both send it); `connect`: the
    origins besides its own it talks to (the API when on another host, the bucket for signed URLs);
    `frame_ancestors`: who may frame the page (nobody, but the share page: EMBEDDABLE_BY).
    Never 'unsafe-eval': the lab loads TF.js's es2017 build. 'wasm-unsafe-eval' lets TF.js's WASM backend
    compile its WebAssembly (it allows no JavaScript eval)."""
    return (
        "default-src 'self'; script-src 'self' 'wasm-unsafe-eval'; style-src 'self'; img-src 'self' data: blob:; "
        f"connect-src 'self' {connect}; worker-src 'self' blob:; font-src 'self'; object-src 'none'; "
        f"frame-ancestors {frame_ancestors}; base-uri 'none'; form-action 'self'"
    )


def lab_security_headers(connect: str, *, embeddable: bool = False) -> dict[str, str]:
    """The security headers of the lab's files: the API's with the lab's CSP. An `embeddable` page (the
    share page) may be framed by any site, so it has no X-Frame-Options (DENY would forbid it)."""
    if not embeddable:
        return {**API_SECURITY_HEADERS, "Content-Security-Policy": lab_csp(connect)}
    kept = {k: v for k, v in API_SECURITY_HEADERS.items() if k != "X-Frame-Options"}
    return {**kept, "Content-Security-Policy": lab_csp(connect, EMBEDDABLE_BY)}


@dataclass
class Response:
    """What a handler returns when a plain model or dict is not enough (status, headers, cookies)."""

    body: Any = None
    status: int | None = None
    headers: list[tuple[str, str]] = field(default_factory=list)


def with_cookie(body: Any, cookie: str) -> Response:
    """A body with one Set-Cookie (sign-in and refresh answer the access token this way)."""
    return Response(body=body, headers=[("Set-Cookie", cookie)])


@dataclass
class Request:
    raw: RawRequest
    route: Route
    params: dict[str, str]
    request_id: str
    body: Any = None  # the parsed model, when the route has one
    raw_body: bytes = b""
    claims: dict[str, Any] | None = None
    user: dict[str, Any] | None = None  # the user document, on routes that check session liveness
    documents: dict[str, Any] = field(default_factory=dict)  # the handler's `reads`, by path

    @property
    def headers(self) -> Any:
        return self.raw.headers

    @property
    def args(self) -> Any:
        return self.raw.args

    @property
    def cookies(self) -> Any:
        return self.raw.cookies

    @property
    def client_ip(self) -> str:
        return client_ip(self.raw)

    @property
    def user_agent(self) -> str:
        return self.raw.headers.get("User-Agent", "")[:300]

    @property
    def bearer(self) -> str:
        """The Authorization header's Bearer credential (API-key routes hand it to their domain; never logged)."""
        return bearer_of(self.raw)

    @property
    def uid(self) -> str:
        return self._signed_in()["sub"]

    @property
    def sid(self) -> str:
        """The session the access token was minted for."""
        return self._signed_in()["sid"]

    @property
    def live_user(self) -> dict[str, Any]:
        """The user document the router loaded (routes that check session liveness)."""
        if self.user is None:
            raise Problem(401, "Sign in to use this.")
        return self.user

    def _signed_in(self) -> dict[str, Any]:
        if not self.claims:
            raise Problem(401, "Sign in to use this.")
        return self.claims


Handler = Callable[[Request], Any]


def _no_bearer(detail: str) -> Problem:
    """401 for a request without the Bearer credential its route needs (RFC 6750's challenge)."""
    return Problem(401, detail, headers={"WWW-Authenticate": 'Bearer realm="mllab"'})


def bearer_of(raw: RawRequest) -> str:
    """The Authorization header's Bearer credential, "" when there is none."""
    scheme, _, credential = raw.headers.get("Authorization", "").partition(" ")
    return credential.strip() if scheme.lower() == "bearer" else ""


def client_ip(raw: RawRequest) -> str:
    """The address the load balancer appended to X-Forwarded-For, never a client-supplied entry.
    Google's load balancer appends `<client>, <lb>`, so the client is the second from the right."""
    entries = [e.strip() for e in raw.headers.get("X-Forwarded-For", "").split(",") if e.strip()]
    return entries[-2] if len(entries) >= 2 else (raw.remote_addr or "")


def request_id_of(raw: RawRequest) -> str:
    supplied = raw.headers.get("X-Request-Id", "")
    return supplied if REQUEST_ID.fullmatch(supplied) else secrets.token_hex(16)


def json_response(body: Any, status: int = 200, content_type: str = "application/json") -> RawResponse:
    payload = json.dumps(body, separators=(",", ":"), ensure_ascii=False, default=str)
    return RawResponse(payload, status=status, content_type=content_type)


def problem_response(problem: Problem, request_id: str, instance: str | None = None) -> RawResponse:
    resp = json_response(problem.body(request_id, instance), problem.status, PROBLEM_JSON)
    for name, value in problem.headers.items():
        resp.headers[name] = value
    return resp


def apply_common_headers(
    resp: RawResponse,
    request_id: str,
    origin: str | None,
    security: dict[str, str] | None = None,
    any_origin: bool = False,
) -> RawResponse:
    """Security headers, CORS for allow-listed origins (for any origin without credentials on
    `any_origin` routes), `Vary: Origin` and `X-Request-Id`."""
    for name, value in (security or API_SECURITY_HEADERS).items():
        resp.headers.setdefault(name, value)
    resp.headers.setdefault("Cache-Control", "no-store")
    resp.headers["X-Request-Id"] = request_id
    resp.vary.add("Origin")
    if any_origin:
        resp.headers["Access-Control-Allow-Origin"] = "*"
        resp.headers.setdefault("Access-Control-Expose-Headers", CORS_EXPOSE_HEADERS)
    elif origin and origin in config.settings().cors_origins:
        resp.headers["Access-Control-Allow-Origin"] = origin
        resp.headers["Access-Control-Allow-Credentials"] = "true"
        resp.headers.setdefault("Access-Control-Expose-Headers", CORS_EXPOSE_HEADERS)
    return resp


def dependency_outage(exc: BaseException) -> bool:
    """True when the error (or its cause) means a dependency is down or too slow: answer 503."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        module, name = type(current).__module__, type(current).__name__
        if module.startswith("google.api_core") and name in {
            "ServiceUnavailable",
            "DeadlineExceeded",
            "RetryError",
            "GatewayTimeout",
            "Aborted",
        }:
            return True
        if module.startswith(("httpx", "httpcore")) and (
            name.endswith("Timeout")
            or name in {"ConnectError", "ReadError", "WriteError", "RemoteProtocolError", "PoolTimeout"}
        ):
            return True
        if module.startswith(("requests", "urllib3")) and name in {
            "ConnectionError",
            "Timeout",
            "ReadTimeout",
            "ConnectTimeout",
            "ReadTimeoutError",
        }:
            return True
        if module.startswith("grpc") and "Timeout" in name:
            return True
        if isinstance(current, (TimeoutError, ConnectionError)):
            return True
        current = current.__cause__ or current.__context__
    return False


class Router:
    """The HTTP side of one function: handlers bound to its rows of the route table."""

    def __init__(self, function: str, table: tuple[Route, ...] = routes.ROUTES) -> None:
        self.function = function
        self.routes = routes.for_function(function, table)
        if not self.routes:
            raise LookupError(f"the route table has no route for function {function!r}")
        self.handlers: dict[tuple[str, str], Handler] = {}
        self.reads: dict[tuple[str, str], Callable[[str], list[Any]]] = {}
        _route_what_flask_cannot(self)

    def route(
        self, method: str, path: str, *, reads: Callable[[str], list[Any]] | None = None
    ) -> Callable[[Handler], Handler]:
        """Bind a handler. `reads(uid)`: documents the handler needs, read with the session's liveness
        check in its one round trip (`Request.documents`); only on routes that check liveness."""
        route = next((r for r in self.routes if r.method == method and r.path == path), None)
        if route is None:
            raise LookupError(f"{method} {path} is not a route of {self.function!r} in the route table")
        if reads is not None and not route.needs_live_session:
            raise ValueError(f"{method} {path} checks no session: nothing to read with it")

        def register(handler: Handler) -> Handler:
            self.handlers[(method, path)] = handler
            if reads is not None:
                self.reads[(method, path)] = reads
            return handler

        return register

    def unbound(self) -> list[Route]:
        """Routes of this function with no handler (a test keeps this empty)."""
        return [r for r in self.routes if (r.method, r.path) not in self.handlers]

    def __call__(self, raw: RawRequest) -> RawResponse:
        started = time.perf_counter()
        request_id = request_id_of(raw)
        ctx = log.bind(
            request_id=request_id, function=self.function, **log.trace_fields(raw.headers, config.settings().project)
        )
        try:
            try:
                with clients.call_scope():
                    resp = self._dispatch(raw, request_id)
            except Problem as problem:
                resp = problem_response(problem, request_id, raw.path)
            except Exception as exc:  # noqa: BLE001 - the one place that turns surprises into 500/503
                if dependency_outage(exc):
                    log.exception("dependency unavailable", exc)
                    wait = max(1, min(int(getattr(exc, "retry_after", 5) or 5), 300))  # PayPal's, when it said
                    resp = problem_response(
                        Problem(
                            503,
                            "A service we depend on is not answering. Try again in a few seconds.",
                            headers={"Retry-After": str(wait)},
                        ),
                        request_id,
                        raw.path,
                    )
                else:
                    log.exception("unhandled error", exc)
                    resp = problem_response(
                        Problem(
                            500,
                            f"Something went wrong on our side. Quote request id {request_id} if you contact support.",
                        ),
                        request_id,
                        raw.path,
                    )
            any_origin = any(r.any_origin for r, _ in routes.match_path(raw.path, self.routes))
            apply_common_headers(resp, request_id, raw.headers.get("Origin"), any_origin=any_origin)
            log.info(
                "request",
                httpRequest={
                    "requestMethod": raw.method,
                    "requestUrl": raw.path,
                    "status": resp.status_code,
                    "latency": f"{time.perf_counter() - started:.6f}s",
                    "remoteIp": client_ip(raw),
                    "userAgent": raw.headers.get("User-Agent", "")[:200],
                },
            )
            return resp
        finally:
            log.unbind(ctx)

    # --- pipeline --------------------------------------------------------------------------------

    def _dispatch(self, raw: RawRequest, request_id: str) -> RawResponse:
        candidates = routes.match_path(raw.path, self.routes)
        if not candidates:
            raise Problem(404, "There is no API endpoint at this path.")
        methods = sorted(
            {r.method for r, _ in candidates} | ({"HEAD"} if any(r.method == "GET" for r, _ in candidates) else set())
        )
        if raw.method == "OPTIONS":
            return self._preflight(raw, methods, any_origin=any(r.any_origin for r, _ in candidates))
        limit = max(_body_limit(r) for r, _ in candidates)
        if raw.content_length is not None and raw.content_length > limit:
            raise _too_large(limit)  # before 405: the cap is the function's, whatever the method
        wanted = "GET" if raw.method == "HEAD" else raw.method
        chosen = next(((r, p) for r, p in candidates if r.method == wanted), None)
        if chosen is None:
            raise Problem(
                405,
                f"{raw.method} is not allowed here; use {', '.join(methods)}.",
                headers={"Allow": ", ".join(methods + ["OPTIONS"])},
            )
        route, params = chosen
        raw_body = self._read_body(raw, route)
        if route.csrf is Csrf.ORIGIN:
            check_cookie_csrf(raw)
        claims = self._authenticate(raw, route)
        reads = self.reads.get((route.method, route.path))
        user, documents = _check_session(raw, route, claims, reads) if claims else (None, {})
        body = self._parse_body(raw, route, raw_body)
        handler = self.handlers.get((route.method, route.path))
        if handler is None:
            raise LookupError(f"no handler bound for {route.method} {route.path}")
        result = handler(Request(raw, route, params, request_id, body, raw_body, claims, user, documents))
        resp = self._render(route, result)
        resp.headers.setdefault("Cache-Control", route.cache)
        if raw.method == "HEAD":
            resp.set_data(b"")
        return resp

    def _preflight(self, raw: RawRequest, methods: list[str], any_origin: bool = False) -> RawResponse:
        origin = raw.headers.get("Origin")
        asked = raw.headers.get("Access-Control-Request-Method")
        if not origin or not asked:
            resp = RawResponse(status=204)
            resp.headers["Allow"] = ", ".join(methods + ["OPTIONS"])
            return resp
        if not any_origin and origin not in config.settings().cors_origins:
            raise Problem(403, "This origin may not call the API.", slug="cors-origin")
        if asked not in methods:
            raise Problem(
                405,
                f"{asked} is not allowed here; use {', '.join(methods)}.",
                headers={"Allow": ", ".join(methods + ["OPTIONS"])},
            )
        resp = RawResponse(status=204)
        resp.headers["Access-Control-Allow-Methods"] = ", ".join(methods)
        resp.headers["Access-Control-Allow-Headers"] = ANY_ORIGIN_ALLOW_HEADERS if any_origin else CORS_ALLOW_HEADERS
        resp.headers["Access-Control-Max-Age"] = CORS_MAX_AGE
        return resp

    def _read_body(self, raw: RawRequest, route: Route) -> bytes:
        limit = _body_limit(route)
        if raw.content_length is not None and raw.content_length > limit:
            raise _too_large(limit)
        data = raw.stream.read(limit + 1)
        if len(data) > limit:
            raise _too_large(limit)
        return data

    def _authenticate(self, raw: RawRequest, route: Route) -> dict[str, Any] | None:
        if route.auth is Auth.API_KEY:
            key = bearer_of(raw)
            if not key:
                raise _no_bearer(
                    "This endpoint needs an API key: send Authorization: Bearer mlk_... (the lab's API keys panel)."
                )
            from mllab.serving import apikeys  # only the API-key routes' functions load it

            if apikeys.parse(key) is None:  # not a key at all (a session token, say): refused before the body
                raise Problem(401, apikeys.NOT_VALID, headers={"WWW-Authenticate": 'Bearer error="invalid_token"'})
            return None  # a well-formed key is judged by the route's domain (rate-limited, constant time)
        if route.auth is not Auth.ACCESS_TOKEN:
            return None  # cookie and webhook routes authenticate in their own modules
        token = bearer_of(raw)
        if not token:
            raise _no_bearer("Sign in: this endpoint needs an access token (Authorization: Bearer ...).")
        from mllab.identity import tokens  # only access-token routes load pyjwt and cryptography

        try:
            return tokens.verify_access_token(token)
        except tokens.TokenError as exc:
            raise Problem(
                401,
                f"Your session token was refused: {exc}. Sign in again.",
                slug="invalid-token",
                headers={"WWW-Authenticate": 'Bearer realm="mllab", error="invalid_token"'},
            ) from None

    def _parse_body(self, raw: RawRequest, route: Route, data: bytes) -> Any:
        if not route.has_request:
            return None
        if raw.mimetype != "application/json":
            raise Problem(415, "Send the body as JSON with Content-Type: application/json.")
        if not route.edge_validates:
            return _json_body(data)  # the route's domain checks it (routes.Route.edge_validates)
        from pydantic import ValidationError  # loaded by the routes that have a request model, and only those

        model = route.request
        assert model is not None  # has_request
        if not data.strip() and not any(f.is_required() for f in model.model_fields.values()):
            data = b"{}"  # an empty body means "all defaults" when nothing is required
        obj = _json_body(data)
        try:
            return model.model_validate(obj)
        except ValidationError as exc:
            raise Problem(
                422, "Some fields are missing or invalid; see `errors`.", errors=field_errors(exc.errors())
            ) from None

    def _render(self, route: Route, result: Any) -> RawResponse:
        if isinstance(result, RawResponse):
            return result
        resp_meta = result if isinstance(result, Response) else Response(body=result)
        body = resp_meta.body
        status = resp_meta.status or (204 if body is None else route.status)
        if body is None:
            resp = RawResponse(status=status)
            del resp.headers["Content-Type"]  # nothing to describe
        else:
            if _is_model(body):
                body = body.model_dump(mode="json")
            elif route.edge_validates and route.response is not None:
                body = route.response.model_validate(body).model_dump(mode="json")
            resp = json_response(body, status)
        for name, value in resp_meta.headers:
            resp.headers.add(name, value)
        return resp


def _is_model(body: Any) -> bool:
    """A pydantic model, checked without importing pydantic (a function that never made one has none).
    Read from `pydantic.main` once it defines BaseModel: while another thread of the instance is still
    importing pydantic, the package in sys.modules has no BaseModel yet (and no model can exist yet)."""
    import sys

    base = getattr(sys.modules.get("pydantic.main"), "BaseModel", None)
    return base is not None and isinstance(body, base)


def _json_body(data: bytes) -> Any:
    """The body as JSON: 400 problem+json for what is not UTF-8 JSON (NaN and infinities included)."""
    try:
        return json.loads(data.decode("utf-8"), parse_constant=_refuse_constant)
    except UnicodeDecodeError:
        raise Problem(400, "The body is not UTF-8 text.", slug="malformed-json") from None
    except RecursionError:  # json's C scanner gives up past ~1,000 levels of arrays or objects
        raise Problem(
            400, "The body is not valid JSON for this API: it is nested too deeply.", slug="malformed-json"
        ) from None
    except ValueError as exc:
        msg = exc.msg if isinstance(exc, json.JSONDecodeError) else str(exc)
        raise Problem(400, f"The body is not valid JSON: {msg}.", slug="malformed-json") from None


def _check_session(
    raw: RawRequest, route: Route, claims: dict[str, Any], reads: Callable[[str], list[Any]] | None
) -> tuple[dict[str, Any] | None, dict[str, Any]]:
    """The token's session still live (its user document when the route checks, and the documents the
    handler reads with it), and the session's CSRF token on mutations."""
    from mllab.identity import sessions  # only access-token routes load the session store

    user: dict[str, Any] | None = None
    documents: dict[str, Any] = {}
    if route.needs_live_session:
        user, documents = sessions.check_live_reading(claims, reads(claims["sub"]) if reads else ())
    if route.csrf is Csrf.SESSION and not sessions.csrf_ok(claims["sid"], raw.headers.get("X-CSRF-Token", "")):
        raise Problem(403, "Missing or stale X-CSRF-Token: send the `csrf` value from GET /me.", slug="csrf")
    return user, documents


def _route_what_flask_cannot(router: Router) -> None:
    """functions-framework mounts the function at Flask's `/<path:path>`, which no path holding a
    newline matches (`%0A` in a URL): Flask answered those with its own HTML 404, without a request
    id. Created while functions-framework loads the function (inside its app context), a router takes
    those requests too, so they get the same problem+json answers as any other path."""
    import sys

    flask = sys.modules.get("flask")  # never imported here: without Flask there is no such app
    if flask is None or not flask.has_app_context():
        return
    from werkzeug.exceptions import NotFound

    flask.current_app.register_error_handler(NotFound, lambda _exc: router(flask.request))


def check_cookie_csrf(raw: RawRequest) -> None:
    """Cookie-authenticated routes (docs/security.md, CSRF): a cross-site form or a no-preflight fetch
    cannot satisfy all of these at once."""
    s = config.settings()
    if raw.method != "POST":
        raise Problem(403, "This endpoint only accepts POST.", slug="csrf")
    if raw.mimetype != "application/json":
        raise Problem(403, "Send Content-Type: application/json.", slug="csrf")
    if not raw.headers.get("X-CSRF-Token", "").strip():
        raise Problem(403, "Send a non-empty X-CSRF-Token header.", slug="csrf")
    origin = raw.headers.get("Origin")
    if not origin or origin not in s.cors_origins:
        raise Problem(403, "This request must come from the ML Lab page (Origin not allowed).", slug="csrf")
    if raw.headers.get("Sec-Fetch-Site", "").lower() == "cross-site":
        raise Problem(403, "Cross-site requests are refused here.", slug="csrf")


def _body_limit(route: Route) -> int:
    if route.auth is Auth.WEBHOOK_SIGNATURE:
        return config.LIMITS.webhook_body_bytes
    return config.LIMITS.request_body_bytes


def _too_large(limit: int) -> Problem:
    return Problem(413, f"The request body is larger than the {limit // 1024} KiB this endpoint accepts.")


def _refuse_constant(name: str) -> None:
    raise ValueError(f"{name} is not a JSON number")


def field_errors(errors: Iterable[Any]) -> list[dict[str, str]]:
    """Pydantic errors as `[{field, message}]`; never echoes the submitted value."""
    out = []
    for err in errors:
        loc = ".".join(str(p) for p in err.get("loc", ()) if p != "__root__") or "(body)"
        out.append({"field": loc, "message": err.get("msg", "invalid")})
    return out
