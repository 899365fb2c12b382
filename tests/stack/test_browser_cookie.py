"""The refresh cookie in a real browser (Debian's Chromium through Playwright): set by sign-in on the
lab's origin, sent back to /auth/refresh, invisible to scripts, and useless to another origin."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator

import pytest

from mllab.platform import clients
from mllab_dev.stack import Stack

SIGN_IN = """async ([email, password]) => {
  const h = {"Content-Type": "application/json", "X-CSRF-Token": "1"};
  const login = await fetch("/auth/login", {method: "POST", headers: h, body: JSON.stringify({email, password})});
  const refresh = await fetch("/auth/refresh", {method: "POST", headers: h});
  const body = refresh.status === 200 ? await refresh.json() : null;
  const me = body ? await fetch("/me", {headers: {Authorization: "Bearer " + body.access_token}}) : null;
  return {login: login.status, refresh: refresh.status, me: me && me.status, scriptSees: document.cookie};
}"""

CROSS_ORIGIN_REFRESH = """async (target) => {
  try {
    const r = await fetch(target + "/auth/refresh", {method: "POST", credentials: "include",
      headers: {"Content-Type": "application/json", "X-CSRF-Token": "1"}});
    return "status " + r.status;
  } catch (e) { return "blocked: " + e.name; }
}"""


@pytest.fixture
def other_origin() -> Iterator[str]:
    """An unrelated page on another origin of this machine (the attacker's site)."""

    class Page(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            body = b"<!doctype html><title>elsewhere</title>"
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Page)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_refresh_cookie_round_trip_in_chromium(chromium, stack: Stack, new_user, other_origin: str) -> None:
    user = new_user()
    context = chromium.new_context()
    page = context.new_page()
    page.goto(stack.gateway_url + "/")
    result = page.evaluate(SIGN_IN, [user["email"], user["password"]])
    assert result["login"] == 200 and result["refresh"] == 200 and result["me"] == 200, result
    assert "__Host-rt" not in result["scriptSees"]  # HttpOnly

    [cookie] = [c for c in context.cookies() if c["name"] == "__Host-rt"]
    assert cookie["httpOnly"] and cookie["secure"] and cookie["sameSite"] == "Strict" and cookie["path"] == "/"
    assert cookie["domain"] == "127.0.0.1"  # host-only: no Domain attribute

    # Another origin's page in the same browser: the cookie cannot be ridden to rotate the session.
    from google.cloud.firestore_v1.base_query import FieldFilter

    query = clients.firestore().collection("sessions").where(filter=FieldFilter("uid", "==", user["uid"]))
    sessions = list(query.stream())
    counter_before = sessions[0].get("counter")
    attacker = context.new_page()
    attacker.goto(other_origin + "/")
    outcome = attacker.evaluate(CROSS_ORIGIN_REFRESH, stack.gateway_url)
    assert outcome.startswith("blocked") or outcome == "status 403", outcome
    snap = clients.firestore().collection("sessions").document(sessions[0].id).get()
    assert snap.get("counter") == counter_before and snap.get("revoked_at") is None
    context.close()


def test_continue_with_google_in_chromium(chromium, stack: Stack) -> None:
    """What a person does locally: press the button, pick an identity on the stand-in, land signed in."""
    context = chromium.new_context()
    page = context.new_page()
    page.set_default_timeout(20_000)
    page.goto(stack.gateway_url + "/")
    page.wait_for_selector("#signed-out:not([hidden])")
    page.click("#google")
    page.wait_for_url(f"http://127.0.0.1:{stack.ports.oidc}/**", wait_until="commit")
    page.fill("#subject-input", "alice-google-0001")
    page.click("button[type=submit]:has-text('Authorize')", no_wait_after=True)
    page.wait_for_url(stack.gateway_url + "/", wait_until="domcontentloaded")
    page.wait_for_selector("#signed-in:not([hidden])")
    assert page.text_content("#who") == "alice@example.com"  # never shown half-filled
    assert not [c for c in context.cookies() if c["name"] == "__Host-oauth_tx" and c["value"]]

    page.click("#logout")
    page.wait_for_selector("#signed-out:not([hidden])")
    page.reload()
    page.wait_for_selector("#signed-out:not([hidden])")  # the cookie is gone: still signed out
    context.close()
