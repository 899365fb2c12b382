"""Rotating refresh cookies, reuse detection, lifetimes, logout scopes, and the CSRF/CORS matrix of
the cookie-authenticated routes."""

from __future__ import annotations

import json
import threading
from datetime import timedelta

import httpx
import pytest

from mllab.identity import sessions, users
from mllab.platform import audit, clients, clock
from mllab_dev.stack import Stack

from .conftest import Browser
from .identity_support import COOKIE_ROUTES, firestore_rpcs


def _cookie_of(resp) -> str | None:
    for header in (
        resp.headers.getlist("Set-Cookie") if hasattr(resp.headers, "getlist") else resp.headers.get_list("set-cookie")
    ):
        if header.startswith("__Host-rt="):
            return header.split(";", 1)[0].split("=", 1)[1] or None
    return None


class InProcess:
    """auth_refresh in-process (so mllab.platform.clock can move), against the emulators."""

    def __init__(self, function_client, stack: Stack) -> None:
        self.client = function_client("auth_refresh")
        self.headers = {"Origin": stack.gateway_url, "X-CSRF-Token": "1", "Content-Type": "application/json"}

    def refresh(self, cookie: str | None):
        # Werkzeug's test client rebuilds Cookie from its own jar; call the WSGI app with our header.
        from werkzeug.test import EnvironBuilder, run_wsgi_app
        from werkzeug.wrappers import Response

        headers = {**self.headers, **({"Cookie": f"__Host-rt={cookie}"} if cookie else {})}
        environ = EnvironBuilder(path="/auth/refresh", method="POST", headers=headers, data=b"").get_environ()
        body, status, response_headers = run_wsgi_app(self.client.application, environ, buffered=True)
        return Response(b"".join(body), status=status, headers=response_headers)


@pytest.fixture
def signed_in(new_user):
    """A user with one session made directly: (user, session, first refresh token)."""

    def make():
        user = new_user()
        session, token = sessions.create(user["uid"], "password", user_agent="test", ip="127.0.0.1")
        return user, session, token

    return make


@pytest.fixture
def rt(function_client, stack: Stack) -> InProcess:
    return InProcess(function_client, stack)


def _session_doc(sid: str) -> dict:
    return clients.firestore().collection("sessions").document(sid).get().to_dict()


def test_no_cookie_means_signed_out_204(rt: InProcess, browser: Browser) -> None:
    r = rt.refresh(None)
    assert r.status_code == 204 and r.data == b""
    assert browser.request("POST", "/auth/refresh").status_code == 204


def test_garbage_cookie_is_401_and_cleared(rt: InProcess) -> None:
    for bad in ("x", "rt1.AAAA", "rt1." + "A" * 75, "eyJhbGciOiJub25lIn0.e30."):
        r = rt.refresh(bad)
        assert r.status_code == 401, bad
        assert "Max-Age=0" in r.headers["Set-Cookie"]


def test_two_parallel_refreshes_with_one_cookie_get_the_same_new_cookie(stack: Stack, signed_in) -> None:
    user, session, token = signed_in()
    results: list[httpx.Response] = []
    barrier = threading.Barrier(2)

    def go() -> None:
        with httpx.Client(base_url=stack.gateway_url, timeout=30) as c:
            barrier.wait(5)
            results.append(
                c.post(
                    "/auth/refresh",
                    headers={
                        "Origin": stack.gateway_url,
                        "X-CSRF-Token": "1",
                        "Content-Type": "application/json",
                        "Cookie": f"__Host-rt={token}",
                    },
                )
            )

    threads = [threading.Thread(target=go) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert [r.status_code for r in results] == [200, 200], [r.text for r in results]
    cookies = {_cookie_of(r) for r in results}
    assert len(cookies) == 1 and token not in cookies
    assert _session_doc(session.id)["counter"] == 1
    assert _session_doc(session.id)["revoked_at"] is None


def test_previous_token_within_window_gets_the_current_one(rt: InProcess, signed_in) -> None:
    _, session, first = signed_in()
    with clock.travel(to=clock.now(), freeze=True):
        second = _cookie_of(rt.refresh(first))
        assert second and second != first
    with clock.travel(by=timedelta(seconds=9)):
        again = rt.refresh(first)
        assert again.status_code == 200 and _cookie_of(again) == second
    assert _session_doc(session.id)["counter"] == 1


def test_replay_after_the_window_revokes_the_session_and_is_audited(rt: InProcess, signed_in) -> None:
    user, session, first = signed_in()
    second = _cookie_of(rt.refresh(first))
    with clock.travel(by=timedelta(seconds=11)):
        r = rt.refresh(first)
        assert r.status_code == 401 and "Max-Age=0" in r.headers["Set-Cookie"]
        assert rt.refresh(second).status_code == 401  # the whole session is gone, newest token included
    doc = _session_doc(session.id)
    assert doc["revoked_at"] is not None and doc["revoke_reason"] == "reuse_detected"
    entries = [e for e in audit.for_actor(user["uid"]) if e["action"] == "session.refresh_reuse"]
    assert len(entries) == 1 and entries[0]["target"] == f"session:{session.id}"


def test_grandparent_replay_revokes_even_inside_the_window(rt: InProcess, signed_in) -> None:
    _, session, first = signed_in()
    second = _cookie_of(rt.refresh(first))
    third = _cookie_of(rt.refresh(second))
    assert third not in (first, second)
    assert rt.refresh(first).status_code == 401
    assert _session_doc(session.id)["revoke_reason"] == "reuse_detected"


def test_a_session_refreshed_before_in_this_process_is_read_with_its_user_in_one_round_trip(
    rt: InProcess, signed_in
) -> None:
    _, session, token = signed_in()
    with firestore_rpcs() as first:
        token = _cookie_of(rt.refresh(token))
    with firestore_rpcs() as warm:
        r = rt.refresh(token)
    assert r.status_code == 200 and _cookie_of(r) not in (None, token)
    # the session (its read begins the transaction), its user, commit; then both at once, commit: one round
    # trip fewer than a bare read-modify-write through google-cloud-firestore (begin, read, commit)
    assert first == ["batch_get_documents", "batch_get_documents", "commit"]
    assert warm == ["batch_get_documents", "commit"]
    assert _session_doc(session.id)["counter"] == 2


def test_a_user_disabled_after_a_refresh_is_refused_at_the_next(rt: InProcess, signed_in) -> None:
    user, session, token = signed_in()
    token = _cookie_of(rt.refresh(token))  # this process now reads the user with the session
    clients.firestore().collection(users.USERS).document(user["uid"]).update({"disabled": True})
    assert rt.refresh(token).status_code == 401
    assert _session_doc(session.id)["revoke_reason"] == "user_disabled"


def test_idle_expiry(rt: InProcess, signed_in) -> None:
    _, session, token = signed_in()
    with clock.travel(by=timedelta(days=6, hours=23)):
        token = _cookie_of(rt.refresh(token))
        assert token
    with clock.travel(by=timedelta(days=6, hours=23) + timedelta(days=7, seconds=1)):
        assert rt.refresh(token).status_code == 401
    assert _session_doc(session.id)["revoke_reason"] == "expired_idle"


def test_absolute_expiry_even_when_active(rt: InProcess, signed_in) -> None:
    _, session, token = signed_in()
    for day in (6, 12, 18, 24, 29):
        with clock.travel(by=timedelta(days=day)):
            r = rt.refresh(token)
            assert r.status_code == 200, day
            token = _cookie_of(r)
            max_age = int(r.headers["Set-Cookie"].rsplit("Max-Age=", 1)[1])
            assert max_age <= (30 - day) * 86400  # the cookie never outlives the session
    with clock.travel(by=timedelta(days=30, seconds=1)):
        assert rt.refresh(token).status_code == 401
    assert _session_doc(session.id)["revoke_reason"] == "expired_absolute"


def test_firestore_holds_no_refresh_token(stack: Stack, new_user) -> None:
    user = new_user()
    b = Browser(stack.gateway_url)
    b.login(user["email"], user["password"])
    tokens_seen = [b.refresh_cookie]
    for _ in range(3):
        b.refresh()
        tokens_seen.append(b.refresh_cookie)
    dump = []
    for collection in clients.firestore().collections():
        for snap in collection.stream():
            dump.append(json.dumps(snap.to_dict(), default=str))
    text = "\n".join(dump)
    assert user["uid"] in text
    for token in tokens_seen:
        assert token and token not in text and token.split(".", 1)[1][24:] not in text


def _two_devices(stack: Stack, new_user):
    user = new_user()
    a, b = Browser(stack.gateway_url), Browser(stack.gateway_url)
    assert a.login(user["email"], user["password"]).status_code == 200
    assert b.login(user["email"], user["password"]).status_code == 200
    return user, a, b


def test_logout_local_ends_only_this_device(stack: Stack, new_user) -> None:
    user, a, b = _two_devices(stack, new_user)
    r = a.request("POST", "/auth/logout", json_body={"scope": "local"})
    assert r.status_code == 204 and "Max-Age=0" in r.headers["set-cookie"]
    assert a.request("GET", "/me").status_code == 401
    assert b.refresh().status_code == 200 and b.request("GET", "/me").status_code == 200


def test_logout_others_keeps_this_device(stack: Stack, new_user) -> None:
    user, a, b = _two_devices(stack, new_user)
    r = a.request("POST", "/auth/logout", json_body={"scope": "others"})
    assert r.status_code == 204 and "set-cookie" not in r.headers
    assert a.refresh().status_code == 200
    assert b.refresh().status_code == 401 and b.request("GET", "/me").status_code == 401


def test_logout_global_ends_everything_and_sets_the_watermark(stack: Stack, new_user) -> None:
    user, a, b = _two_devices(stack, new_user)
    r = a.request("POST", "/auth/logout", json_body={"scope": "global"})
    assert r.status_code == 204
    assert users.get(user["uid"])["tokens_valid_after"] is not None
    for device in (a, b):
        assert device.request("GET", "/me").status_code == 401
    assert b.refresh().status_code == 401
    assert [e for e in audit.for_actor(user["uid"]) if e["action"] == "signout"]
    c = Browser(stack.gateway_url)  # signing in again afterwards works
    assert c.login(user["email"], user["password"]).status_code == 200
    assert c.request("GET", "/me").status_code == 200


def test_logout_with_a_dead_cookie_clears_it(browser: Browser) -> None:
    """Signing this device out when its session already ended is done (204); signing out the others
    or everywhere needs a live session to act for (401). Both drop the dead cookie."""
    browser.refresh_cookie = "rt1." + "B" * 75
    r = browser.request("POST", "/auth/logout", json_body={"scope": "global"})
    assert r.status_code == 401 and "Max-Age=0" in r.headers["set-cookie"]
    assert r.json()["type"].endswith("session-ended")
    browser.refresh_cookie = "rt1." + "B" * 75
    r = browser.request("POST", "/auth/logout", json_body={"scope": "local"})
    assert r.status_code == 204 and "Max-Age=0" in r.headers["set-cookie"]
    r = Browser(browser.client.base_url.__str__()).request("POST", "/auth/logout", json_body={"scope": "local"})
    assert r.status_code == 204


# --- CSRF and CORS on the cookie-authenticated routes --------------------------------------------


def _csrf_cases(origin: str):
    good = {"Origin": origin, "X-CSRF-Token": "1", "Content-Type": "application/json"}
    return {
        "form post": {**good, "Content-Type": "application/x-www-form-urlencoded", "X-CSRF-Token": ""},
        "text/plain": {**good, "Content-Type": "text/plain"},
        "missing X-CSRF-Token": {k: v for k, v in good.items() if k != "X-CSRF-Token"},
        "missing Origin": {k: v for k, v in good.items() if k != "Origin"},
        "wrong Origin": {**good, "Origin": "https://evil.example"},
        "null Origin": {**good, "Origin": "null"},
        "lookalike Origin": {**good, "Origin": origin + ".evil.example"},
        "cross-site fetch": {**good, "Sec-Fetch-Site": "cross-site"},
    }


@pytest.mark.parametrize("path,body", COOKIE_ROUTES, ids=[p for p, _ in COOKIE_ROUTES])
def test_csrf_matrix_refuses_each_violation_with_403(stack: Stack, signed_in, path: str, body) -> None:
    user, session, token = signed_in()
    with httpx.Client(base_url=stack.gateway_url, timeout=20) as c:
        for name, headers in _csrf_cases(stack.gateway_url).items():
            content = json.dumps(body).encode() if body is not None else b""
            r = c.post(path, headers={**headers, "Cookie": f"__Host-rt={token}"}, content=content)
            assert r.status_code == 403, (name, r.status_code, r.text)
            assert r.headers["content-type"] == "application/problem+json"
            assert "set-cookie" not in r.headers, name
    doc = _session_doc(session.id)
    assert doc["counter"] == 0 and doc["revoked_at"] is None  # nothing rotated, nothing revoked


def test_same_site_fetch_metadata_is_accepted(stack: Stack, signed_in) -> None:
    _, _, token = signed_in()
    r = httpx.post(
        f"{stack.gateway_url}/auth/refresh",
        headers={
            "Origin": stack.gateway_url,
            "X-CSRF-Token": "1",
            "Content-Type": "application/json",
            "Sec-Fetch-Site": "same-origin",
            "Cookie": f"__Host-rt={token}",
        },
    )
    assert r.status_code == 200


def test_cors_preflight_and_credentials(stack: Stack) -> None:
    allowed = httpx.options(
        f"{stack.gateway_url}/auth/refresh",
        headers={
            "Origin": stack.gateway_url,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type,x-csrf-token",
        },
    )
    assert allowed.status_code == 204
    assert allowed.headers["access-control-allow-origin"] == stack.gateway_url
    assert allowed.headers["access-control-allow-credentials"] == "true"
    assert "X-CSRF-Token" in allowed.headers["access-control-allow-headers"]
    for origin in ("https://evil.example", "null"):
        refused = httpx.options(
            f"{stack.gateway_url}/auth/refresh", headers={"Origin": origin, "Access-Control-Request-Method": "POST"}
        )
        assert refused.status_code == 403 and "access-control-allow-origin" not in refused.headers
