"""What the gateway passes on to the functions: any path and query a client can send (found by
tests/stack/test_fuzz.py). The gateway stands in for the load balancer, which forwards both as sent."""

from __future__ import annotations

import http.client
import json
import time

import httpx

from .conftest import Browser


def _problem(r: httpx.Response, status: int) -> dict:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/problem+json"
    assert r.headers.get("x-request-id")
    return r.json()


def test_control_characters_and_spaces_in_a_path_reach_the_function(member) -> None:
    """The gateway rebuilt the URL from the decoded path: httpx refused a control character in it,
    and the gateway answered 500."""
    b: Browser = member()
    for raw in ("%7F", "%05x", "a%09b", "%20", "%C3%A9%0A"):
        body = _problem(b.request("GET", f"/projects/{raw}"), 404)
        assert "No project of yours" in body["detail"]


def test_an_encoded_percent_is_passed_on_encoded(member) -> None:
    """The path is re-encoded once: %2525 reaches the function as %25, never as a bare '%'."""
    b: Browser = member()
    assert "No project of yours" in _problem(b.request("GET", "/projects/%2525"), 404)["detail"]
    assert "No project of yours" in _problem(b.request("GET", "/projects/%25"), 404)["detail"]


def test_a_long_query_string_reaches_the_function(gateway: httpx.Client) -> None:
    """The gateway's gunicorn refused request lines over 4094 bytes with an HTML 414; the functions'
    own gunicorn takes any length, and the function answers (here: no sign-in attempt, 400)."""
    r = gateway.get("/auth/google/callback", params={"state": "s" * 3000, "code": "c" * 3000})
    assert _problem(r, 400)["type"].startswith("urn:mllab:problem:oauth-")


def test_the_query_string_is_passed_as_sent(member) -> None:
    b: Browser = member()
    r = b.request("GET", "/projects?limit=1&cursor=%2A")  # an encoded '*' is not a cursor character
    assert _problem(r, 400)["type"] == "urn:mllab:problem:bad-cursor"
    assert b.request("GET", "/projects?limit=%31").status_code == 200  # '%31' is '1'


def test_a_non_ascii_header_value_reaches_the_function(member) -> None:
    """WSGI hands header values over decoded as latin-1 and httpx encodes text headers as ASCII: the
    gateway answered 500 to a CSRF token with an accented byte. The function refuses it (403)."""
    b: Browser = member()
    r = b.request("POST", "/billing/cancel", json_body={}, headers={"X-CSRF-Token": "jeton-é".encode("latin-1")})
    assert "X-CSRF-Token" in _problem(r, 403)["detail"]


def test_a_non_ascii_forwarded_for_entry_is_passed_on(gateway: httpx.Client) -> None:
    """A client's own X-Forwarded-For entry with a latin-1 byte: the gateway appends to it as bytes
    (it answered 500 when it built the header as text), and the function takes the client address
    the load balancer would have appended, never the client's entry."""
    r = gateway.get("/billing/plans", headers={"X-Forwarded-For": "caf\xe9".encode("latin-1")})
    assert r.status_code == 200, r.text


def test_an_idle_keep_alive_connection_is_not_dropped(gateway: httpx.Client) -> None:
    """make load lost ~0.1% of requests as "connection closed": gunicorn closed idle client connections
    after 2 s while a user paused 1-5 s, and a request sent as it closed got no answer. The gateway keeps
    them open as the load balancer does (610 s), so a connection idle past 2 s still answers."""
    url = httpx.URL(str(gateway.base_url))
    conn = http.client.HTTPConnection(url.host, url.port, timeout=10)
    conn.auto_open = 0  # never reconnect behind the test's back: the same socket or a failure
    conn.connect()
    try:
        for pause in (0, 3):
            time.sleep(pause)
            conn.request("GET", "/openapi.json")
            r = conn.getresponse()
            assert r.status == 200 and json.loads(r.read())["openapi"].startswith("3.1"), pause
    finally:
        conn.close()
