"""The local stand-in for the HTTPS load balancer: one origin serving the lab and the API.

Paths are routed by the route table exactly as the load balancer's URL map routes them (by path;
the function itself answers 405 for a wrong method). Like Google's load balancer it appends the
client and its own address to X-Forwarded-For and adds a trace header. Anything else is the static
lab from `frontend/`, or a 404 problem.
"""

from __future__ import annotations

import functools
import gzip
import json
import mimetypes
import os
import secrets
import ssl
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor
from http.client import HTTPException
from pathlib import Path
from typing import Any

import httpx
from werkzeug.wrappers import Request, Response

from mllab.api import http, openapi, routes
from mllab.platform import log
from mllab_dev import upstream

HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
    "content-length",
}
# The function's own, which the proxy's server sets anew; and the coding the proxy's client undid.
NOT_PASSED_BACK = HOP_BY_HOP | {"content-encoding", "date", "server"}
MAX_PROXY_BODY = 128 * 1024 * 1024  # the load balancer has no small cap; functions enforce their own
PROBE_AGENT = "mllab-healthz"
# The bucket is the one other origin the page talks to: signed PUTs and GETs go straight to it
# (production: https://storage.googleapis.com; locally fake-gcs-server, or moto's S3 server with STORAGE=s3).
STORAGE_ORIGIN = (
    os.environ.get("MLLAB_S3_ENDPOINT", "")
    if os.environ.get("MLLAB_STORAGE") == "s3"
    else os.environ.get("STORAGE_EMULATOR_HOST", "https://storage.googleapis.com")
).rstrip("/")
LAB_SECURITY_HEADERS = http.lab_security_headers(STORAGE_ORIGIN)
LAB_CSP = LAB_SECURITY_HEADERS["Content-Security-Policy"]
# The share page (/m/<deployment id>), which other sites may frame: as the URL map serves it (urlmap.py).
SHARE_SECURITY_HEADERS = http.lab_security_headers(STORAGE_ORIGIN, embeddable=True)
SHARE_PAGE_FILE = "m/index.html"


PATH_SAFE = "/:@!$&'()*+,;=~"  # RFC 3986 pchar delimiters kept as they are; everything else %-encoded
QUERY_SAFE = PATH_SAFE + "?%"  # the query string arrives still encoded


# Text the gateway sends gzipped to a browser that accepts it: the lab's first-load budget (60 KB) is
# counted in gzipped bytes, and the tests and Lighthouse measure what travels (docs/operations.md).
COMPRESSIBLE = ("text/", "application/javascript", "application/json", "image/svg+xml")

# What frontend/ holds but the deployed static site does not: npm's working files.
NOT_SERVED = {"node_modules", "package.json", "package-lock.json", "npm.log"}


class Gateway:
    def __init__(self, topology: dict[str, Any]) -> None:
        self.topology = topology
        self.frontend = Path(topology["frontend"]).resolve()
        self.functions: dict[str, int] = topology["functions"]
        self.upstreams = upstream.Upstreams()  # 5 s to connect, 60 s to answer
        # The PayPal stand-in serves https with the development CA: trust it (and only here, locally).
        ca = os.environ.get("MLLAB_PAYPAL_CA_FILE")
        verify = ssl.create_default_context(cafile=ca) if ca and Path(ca).is_file() else True
        self.probe = httpx.Client(timeout=5.0, headers={"User-Agent": PROBE_AGENT}, verify=verify)

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        started = time.monotonic()
        raw = Request(environ)
        request_id = http.request_id_of(raw)
        origin = raw.headers.get("Origin")
        matched = routes.match_path(raw.path)  # once per request: it tries every route of the table
        resp = self.respond(raw, request_id, origin, matched)
        if raw.headers.get("User-Agent") != PROBE_AGENT:  # the launcher's readiness probes are not requests
            # one record per request: `make dev` prints it as one short line (mllab_dev.console)
            log.info(
                "request",
                method=raw.method,
                path=raw.path,
                status=resp.status_code,
                latency_ms=round((time.monotonic() - started) * 1000, 1),
                function=matched[0][0].function if matched else None,
                request_id=request_id,
            )
        return resp(environ, start_response)

    def respond(
        self, raw: Request, request_id: str, origin: str | None, matched: list[tuple[routes.Route, dict[str, str]]]
    ) -> Response:
        lab_file = False
        try:
            if raw.path == "/healthz":
                resp = self.healthz()
            elif raw.path == "/config.json":
                # health_url: only the local gateway has one; the deployed lab shows no status section
                resp = http.json_response({"api_base": "", "env": "local", "health_url": "/healthz"})
                resp.headers["Cache-Control"] = "no-cache"
            elif raw.path == "/openapi.json" and raw.method in ("GET", "HEAD"):
                resp = http.json_response(self.openapi_document)  # generated from the route table
                resp.headers["Cache-Control"] = "no-cache"
            elif matched:
                return self.proxy(raw, request_id, matched[0][0])  # the function already set every header
            else:
                resp = self.static(raw)
                lab_file = True
        except http.Problem as problem:
            resp = http.problem_response(problem, request_id, raw.path)
        except Exception as exc:  # noqa: BLE001 - a gateway bug must still answer problem+json
            log.exception("gateway error", exc, request_id=request_id)
            resp = http.problem_response(
                http.Problem(500, "The local gateway failed; see its log."), request_id, raw.path
            )
        # Every file of the lab carries the lab's CSP, as the deployed bucket sends it: a worker script
        # (js/train-worker.js) is governed by its own response's CSP, not by the page's.
        security = LAB_SECURITY_HEADERS if lab_file or resp.mimetype == "text/html" else None
        if lab_file and resp.status_code == 200 and http.SHARE_PAGE.fullmatch(raw.path):
            security = SHARE_SECURITY_HEADERS
        http.apply_common_headers(resp, request_id, origin, security)
        return resp

    @functools.cached_property
    def openapi_document(self) -> dict[str, Any]:
        return openapi.document()

    def proxy(self, raw: Request, request_id: str, route: routes.Route) -> Response:
        port = self.functions.get(route.function)
        if port is None:
            raise http.Problem(
                503, f"{route.function} is not running in this local stack.", headers={"Retry-After": "5"}
            )
        if any(segment in (".", "..") for segment in raw.path.split("/")):
            # No route has such an id; and a client on the way that resolves dot segments would forward
            # another path than the one routed here (with httpx, GET /projects/. answered the list of projects).
            raise http.Problem(404, "There is no API endpoint at this path.")
        # Header values as the client sent them: WSGI decodes them as latin-1, and the upstream client
        # encodes them back the same way, so a non-ASCII byte in one is the function's to refuse.
        headers = {k: v for k, v in raw.headers.items() if k.lower() not in HOP_BY_HOP}
        client = raw.remote_addr or "127.0.0.1"
        prior = raw.headers.get("X-Forwarded-For")
        headers["X-Forwarded-For"] = f"{prior + ', ' if prior else ''}{client}, 127.0.0.1"
        headers["X-Forwarded-Proto"] = "http"
        headers["X-Request-Id"] = request_id
        if "X-Cloud-Trace-Context" not in headers and "traceparent" not in headers:
            headers["X-Cloud-Trace-Context"] = f"{secrets.token_hex(16)}/{int.from_bytes(os.urandom(7), 'big')};o=1"
        if raw.content_length is not None and raw.content_length > MAX_PROXY_BODY:
            raise http.Problem(413, "The request body is too large.")
        body = raw.stream.read(MAX_PROXY_BODY + 1)
        if len(body) > MAX_PROXY_BODY:
            raise http.Problem(413, "The request body is too large.")
        # The path as the client encoded it: raw.path is decoded, and a control character or a space in it
        # is not a valid request target.
        target = urllib.parse.quote(raw.path, safe=PATH_SAFE)
        if raw.query_string:
            target += "?" + urllib.parse.quote(raw.query_string, safe=QUERY_SAFE)
        try:
            answer = self.upstreams.request(port, raw.method, target, headers.items(), body)
        except TimeoutError:
            raise http.Problem(503, f"{route.function} did not answer in time.", headers={"Retry-After": "5"}) from None
        except (OSError, HTTPException) as exc:
            log.warning(
                "upstream failed",
                function=route.function,
                error_type=type(exc).__name__,
                error=str(exc),
                request_id=request_id,
            )
            raise http.Problem(503, f"{route.function} is not running.", headers={"Retry-After": "5"}) from None
        # Every Set-Cookie passes through as its own header; the proxy keeps none.
        passed = [(k, v) for k, v in answer.headers if k.lower() not in NOT_PASSED_BACK]
        return Response(answer.body, status=answer.status, headers=passed)

    def static(self, raw: Request) -> Response:
        if raw.method not in ("GET", "HEAD"):
            raise http.Problem(404, "There is no API endpoint at this path.")
        # /m/<deployment id> is the share page, whatever the id (js/share.js reads it from the path).
        rel = SHARE_PAGE_FILE if http.SHARE_PAGE.fullmatch(raw.path) else raw.path.lstrip("/") or "index.html"
        if any(ord(ch) < 32 for ch in rel):
            raise http.Problem(404, "There is nothing at this path.")
        target = (self.frontend / rel).resolve()
        if target.is_dir():
            target = target / "index.html"
        if (
            not target.is_relative_to(self.frontend)
            or not target.is_file()
            or any(part.startswith(".") or part in NOT_SERVED for part in target.relative_to(self.frontend).parts)
        ):
            raise http.Problem(404, "There is nothing at this path.")
        mime = mimetypes.guess_type(target.name)[0] or "application/octet-stream"
        body = b"" if raw.method == "HEAD" else target.read_bytes()
        zipped = mime.startswith(COMPRESSIBLE) and "gzip" in raw.headers.get("Accept-Encoding", "") and len(body) > 1024
        resp = Response(gzip.compress(body, 6) if zipped else body, mimetype=mime)
        if zipped:
            resp.headers["Content-Encoding"] = "gzip"
        resp.headers["Vary"] = "Accept-Encoding"
        resp.headers["Cache-Control"] = "no-cache"
        return resp

    def healthz(self) -> Response:
        components = self.topology["components"]
        with ThreadPoolExecutor(max_workers=max(1, len(components))) as pool:
            results = list(pool.map(self._probe, components))
        ok = all(r["state"] == "up" for r in results)
        return http.json_response({"status": "ok" if ok else "degraded", "components": results}, 200 if ok else 503)

    def _probe(self, component: dict[str, Any]) -> dict[str, Any]:
        started = time.perf_counter()
        out = {"name": component["name"], "kind": component["kind"], "port": component["port"]}
        if component["kind"] == "gateway":
            return {**out, "state": "up", "latency_ms": 0.0}
        try:
            r = self.probe.get(component["health"])
            state = "up" if r.status_code < 500 else "down"
            detail = f"HTTP {r.status_code}"
        except httpx.HTTPError as exc:
            state, detail = "down", type(exc).__name__
        return {**out, "state": state, "detail": detail, "latency_ms": round((time.perf_counter() - started) * 1000, 1)}


def create_app() -> Gateway:
    topology = json.loads(Path(os.environ["MLLAB_DEV_TOPOLOGY"]).read_text())
    return Gateway(topology)
