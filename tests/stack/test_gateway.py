"""The gateway as a user reaches it: one origin for the lab and the API."""

from __future__ import annotations

import httpx
import pytest

from mllab.api import routes
from mllab_dev.stack import PUSHED, Stack

from .conftest import function_log, wait_for_log


def test_healthz_lists_every_component_up(gateway: httpx.Client, stack: Stack) -> None:
    r = gateway.get("/healthz")
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "ok"
    names = {c["name"]: c["state"] for c in body["components"]}
    functions = {fn.name for fn in routes.for_store(stack.storage)}  # the functions this file store runs
    expected = {"firestore", "pubsub", "gcs", "oidc", "paypal", "gateway"} | {f"fn:{name}" for name in functions}
    # the recorder's events, delivered at its deploy concurrency (mllab_dev.pusher), on the store that sends them
    expected |= {f"pusher:{name}" for name in PUSHED if name in functions}
    assert set(names) == expected
    assert set(names.values()) == {"up"}


def test_jwks_through_gateway_is_public_ec_p256(gateway: httpx.Client) -> None:
    r = gateway.get("/.well-known/jwks.json")
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/json"
    keys = r.json()["keys"]
    assert keys, "at least one key is published"
    for key in keys:
        assert key["kty"] == "EC" and key["crv"] == "P-256" and key["alg"] == "ES256"
        assert key["kid"]
        assert "d" not in key and not ({"p", "q", "dp", "dq", "qi", "k"} & set(key))


def test_unknown_path_is_404_problem(gateway: httpx.Client) -> None:
    for path in ("/no-such-thing", "/api/v9/x", "/.well-known/nope"):
        r = gateway.get(path)
        assert r.status_code == 404
        assert r.headers["content-type"] == "application/problem+json"
        problem = r.json()
        assert problem["status"] == 404 and problem["type"].endswith("not-found")
        assert problem["request_id"] == r.headers["x-request-id"]


def test_foreign_origin_gets_no_cors_allow(gateway: httpx.Client, stack: Stack) -> None:
    r = gateway.get("/.well-known/jwks.json", headers={"Origin": "https://evil.example"})
    assert r.status_code == 200
    assert "access-control-allow-origin" not in r.headers
    assert "Origin" in r.headers["vary"]
    ok = gateway.get("/.well-known/jwks.json", headers={"Origin": stack.gateway_url})
    assert ok.headers["access-control-allow-origin"] == stack.gateway_url
    assert ok.headers["access-control-allow-credentials"] == "true"


def test_foreign_origin_preflight_refused(gateway: httpx.Client) -> None:
    r = gateway.options(
        "/.well-known/jwks.json", headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "GET"}
    )
    assert r.status_code == 403
    assert r.headers["content-type"] == "application/problem+json"
    assert "access-control-allow-origin" not in r.headers


def test_body_over_one_mib_is_413_problem(gateway: httpx.Client) -> None:
    body = b"{" + b" " * (1024 * 1024) + b"}"
    r = gateway.post("/.well-known/jwks.json", content=body, headers={"Content-Type": "application/json"})
    assert r.status_code == 413
    assert r.headers["content-type"] == "application/problem+json"
    assert "KiB" in r.json()["detail"]


@pytest.mark.parametrize("path", ["/", "/healthz", "/config.json", "/.well-known/jwks.json", "/missing", "/lab.js"])
def test_every_response_has_request_id_and_security_headers(gateway: httpx.Client, path: str) -> None:
    r = gateway.get(path)
    assert len(r.headers["x-request-id"]) >= 16
    assert r.headers["x-content-type-options"] == "nosniff"
    assert "frame-ancestors 'none'" in r.headers["content-security-policy"]
    assert r.headers["strict-transport-security"].startswith("max-age=")


def test_only_the_share_page_may_be_framed_by_other_sites(gateway: httpx.Client) -> None:
    """/m/<deployment id> is the share page (its embed snippet frames it elsewhere); every other page of
    the lab, and the API, refuse to be framed."""
    for path in ("/m/0123456789abcdef0123456789abcdef", "/m/", "/m/?id=0123456789abcdef0123456789abcdef"):
        r = gateway.get(path)
        assert r.status_code == 200 and "js/share.js" in r.text, path
        assert "frame-ancestors * ;" in r.headers["content-security-policy"].replace(";", " ;"), path
        assert "x-frame-options" not in r.headers, path
    for path in ("/", "/index.html", "/lab.css", "/js/share.js", "/m/a/b", "/me"):
        r = gateway.get(path)
        assert "frame-ancestors 'none'" in r.headers["content-security-policy"], path
        assert r.headers["x-frame-options"] == "DENY", path


def test_supplied_request_id_is_echoed_end_to_end(gateway: httpx.Client) -> None:
    rid = "test-request-0123456789"
    r = gateway.get("/.well-known/jwks.json", headers={"X-Request-Id": rid})
    assert r.headers["x-request-id"] == rid


def test_lab_page_served_same_origin_with_csp(gateway: httpx.Client) -> None:
    r = gateway.get("/")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/html")
    assert "<title>ML Lab" in r.text
    csp = r.headers["content-security-policy"]
    assert "default-src 'self'" in csp and "object-src 'none'" in csp
    assert gateway.get("/config.json").json() == {"api_base": "", "env": "local", "health_url": "/healthz"}
    # Text travels gzipped to a client that accepts it, and as it is to one that does not.
    zipped = gateway.get("/lab.css", headers={"Accept-Encoding": "gzip"})
    plain = gateway.get("/lab.css", headers={"Accept-Encoding": "identity"})
    assert zipped.headers["content-encoding"] == "gzip" and "content-encoding" not in plain.headers
    assert zipped.text == plain.text and int(zipped.headers["content-length"]) < len(plain.content)


@pytest.mark.parametrize(
    "path", ["/../pyproject.toml", "/%2e%2e/pyproject.toml", "/..%2fMakefile", "/.hidden", "/%00index.html"]
)
def test_static_files_cannot_escape_frontend(gateway: httpx.Client, path: str) -> None:
    r = gateway.get(path)
    assert r.status_code == 404
    assert "[project]" not in r.text and "PREFLIGHT" not in r.text


def test_xff_from_client_is_not_trusted(gateway: httpx.Client, stack: Stack) -> None:
    """The function sees the address the gateway appended, not a spoofed one."""
    rid = "xff-check-0123456789abcdef"
    gateway.get("/.well-known/jwks.json", headers={"X-Forwarded-For": "6.6.6.6", "X-Request-Id": rid})
    lines = wait_for_log(function_log(stack, "jwks"), rid)
    assert lines and '"remoteIp": "127.0.0.1"' in lines[-1] and "6.6.6.6" not in lines[-1]
