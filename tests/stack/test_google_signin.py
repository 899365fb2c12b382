"""Google sign-in end to end, against the local stack: the gateway, the two functions, the Firestore
emulator and oidc-provider-mock standing in for Google (docs/security.md). The browser is played by
hand (tests/stack/identity_support.py)."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import urllib.parse
from datetime import timedelta
from typing import Any

import pytest

from mllab.identity import users
from mllab.platform import clock
from mllab_dev.stack import OIDC_USERS, Stack

from .conftest import Browser, function_log, wait_for_log
from .identity_support import (
    authorize,
    callback,
    db,
    docs,
    google_identity,
    oidc_url,
    problem,
    put_identity,
    sessions_of,
    set_cookies,
    sign_in,
    start,
)

RT_COOKIE = re.compile(r"^__Host-rt=([^;]+); Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age=(\d+)$")
TX_CLEAR = "__Host-oauth_tx=; Path=/; Secure; HttpOnly; SameSite=Lax; Max-Age=0"
ALICE = next(u for u in OIDC_USERS if u["sub"] == "alice-google-0001")


# --- login -----------------------------------------------------------------------------------------


def test_login_redirects_to_the_provider_with_pkce_state_and_nonce(browser: Browser, stack: Stack) -> None:
    attempt = start(browser, "/lab?x=1#y")
    url = urllib.parse.urlsplit(attempt.authorize_url)
    assert f"{url.scheme}://{url.netloc}{url.path}" == f"{oidc_url(stack)}/oauth2/authorize"
    q = dict(urllib.parse.parse_qsl(url.query))
    assert {
        k: q[k]
        for k in (
            "response_type",
            "client_id",
            "redirect_uri",
            "scope",
            "code_challenge_method",
            "access_type",
            "prompt",
        )
    } == {
        "response_type": "code",
        "client_id": "mllab-local",
        "redirect_uri": f"{stack.gateway_url}/auth/google/callback",
        "scope": "openid email profile",
        "code_challenge_method": "S256",
        "access_type": "online",
        "prompt": "select_account",
    }
    # the transaction: keyed by sha256(cookie value), state stored only as its hash, verifier matches
    (tx,) = docs("oauth_tx")
    assert tx["_id"] == hashlib.sha256(attempt.tx_id.encode()).hexdigest()
    assert tx["state_hash"] == hashlib.sha256(attempt.state.encode()).hexdigest()
    assert tx["nonce"] == attempt.nonce and tx["return_to"] == "/lab?x=1#y"
    assert 43 <= len(tx["code_verifier"]) <= 128
    assert (
        q["code_challenge"]
        == base64.urlsafe_b64encode(hashlib.sha256(tx["code_verifier"].encode()).digest()).rstrip(b"=").decode()
    )
    assert timedelta(seconds=599) <= tx["expires_at"] - tx["created_at"] <= timedelta(seconds=600)
    assert attempt.tx_id not in json.dumps(tx, default=str) and attempt.state not in json.dumps(tx, default=str)
    # fresh per attempt
    again = start(browser, "/lab")
    assert (again.tx_id, again.state, again.nonce) != (attempt.tx_id, attempt.state, attempt.nonce)
    assert len(docs("oauth_tx")) == 2


@pytest.mark.parametrize("return_to", ["//evil.com", "https://evil.com", "/%2f%2fevil.com", "/\\evil.com"])
def test_login_refuses_an_off_site_return_to(browser: Browser, return_to: str) -> None:
    r = browser.client.get("/auth/google/login", params={"return_to": return_to})
    body = problem(r, 400)
    assert body["type"].endswith("invalid-return-to") and "return_to" in body["detail"]
    assert set_cookies(r) == [] and docs("oauth_tx") == []


# --- the happy path --------------------------------------------------------------------------------


def test_full_sign_in_sets_the_refresh_cookie_and_lands_on_the_lab(browser: Browser, stack: Stack) -> None:
    attempt, r = sign_in(browser, ALICE["sub"], "/lab")
    assert r.status_code == 302, r.text
    assert r.headers["location"] == f"{stack.gateway_url}/lab"
    cookies = set_cookies(r)
    assert TX_CLEAR in cookies
    (rt,) = [c for c in cookies if c.startswith("__Host-rt=")]
    m = RT_COOKIE.fullmatch(rt)
    assert m, rt
    assert 30 * 24 * 3600 - 60 <= int(m.group(2)) <= 30 * 24 * 3600
    assert browser.refresh_cookie == m.group(1)

    # one new user keyed by (issuer, sub), one session, no transaction left
    ident = google_identity(ALICE["sub"], stack)
    assert ident and ident["kind"] == "google"
    uid = ident["uid"]
    user = users.get(uid)
    assert user["email"] == "alice@example.com" and user["providers"] == ["google"] and user["email_verified"] is True
    (session,) = sessions_of()
    assert session["uid"] == uid and session["method"] == "google"
    assert session["user_agent"] == browser.user_agent
    assert docs("oauth_tx") == []

    # the audit log
    (entry,) = [a for a in docs("audit_log") if a["action"] == "signin"]
    assert (entry["actor"], entry["outcome"], entry["details"]["method"]) == (uid, "ok", "google")
    assert entry["details"]["account"] == "created"

    # the lab page then refreshes (cookie -> access token) and reads /me
    refreshed = browser.refresh()
    assert refreshed.status_code == 200, refreshed.text
    me = browser.request("GET", "/me")
    assert me.status_code == 200, me.text
    assert (me.json()["uid"], me.json()["email"]) == (uid, "alice@example.com")

    # the function log holds neither the code, the state, the cookies nor any token
    log = function_log(stack, "auth_google_callback")
    assert wait_for_log(log, r.headers["x-request-id"]), "the callback's request line reached its log"
    text = log.read_text()
    secrets_seen = [attempt.code, attempt.state, attempt.tx_id, m.group(1), attempt.nonce]
    if browser.access_token:
        secrets_seen.append(browser.access_token)
    for secret in secrets_seen:
        assert secret not in text
    assert not re.search(r"eyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}\.", text), "a JWT reached the log"


def test_a_second_sign_in_finds_the_same_user_and_starts_a_new_session(browser: Browser, stack: Stack) -> None:
    _, first = sign_in(browser, ALICE["sub"])
    assert first.status_code == 302
    _, second = sign_in(browser, ALICE["sub"], "/a/b")
    assert second.status_code == 302 and second.headers["location"] == f"{stack.gateway_url}/a/b"
    uid = google_identity(ALICE["sub"], stack)["uid"]
    assert len(docs("users")) == 1 and len(sessions_of(uid)) == 2
    outcomes = sorted(a["details"]["account"] for a in docs("audit_log") if a["action"] == "signin")
    assert outcomes == ["created", "existing"]


# --- transaction checks (R8): 400 and no session ---------------------------------------------------


def test_callback_without_the_cookie_is_400_and_creates_no_session(browser: Browser) -> None:
    attempt = authorize(start(browser), ALICE["sub"])
    body = problem(callback(browser, attempt, cookie=None), 400)
    assert body["type"].endswith("oauth-no-cookie")
    assert sessions_of() == [] and docs("users") == []


def test_callback_with_another_browsers_cookie_is_400(browser: Browser) -> None:
    mine = authorize(start(browser), ALICE["sub"])
    other = start(browser)
    r = callback(browser, mine, cookie=other.tx_id)  # the code and state of one attempt, the cookie of another
    assert problem(r, 400)["type"].endswith("oauth-state")
    r = callback(browser, mine, cookie="A" * 43)  # a cookie no transaction has
    assert problem(r, 400)["type"].endswith("oauth-unknown")
    assert sessions_of() == []


def test_replayed_callback_is_400(browser: Browser) -> None:
    attempt, first = sign_in(browser, ALICE["sub"])
    assert first.status_code == 302
    second = callback(browser, attempt)
    assert problem(second, 400)["type"].endswith("oauth-unknown")
    assert not [c for c in set_cookies(second) if c.startswith("__Host-rt=")]
    assert len(sessions_of()) == 1


def test_expired_transaction_is_400(browser: Browser) -> None:
    attempt = authorize(start(browser), ALICE["sub"])
    ref = db().collection("oauth_tx").document(hashlib.sha256(attempt.tx_id.encode()).hexdigest())
    ref.update({"expires_at": clock.now() - timedelta(seconds=1)})
    r = callback(browser, attempt)
    body = problem(r, 400)
    assert body["type"].endswith("oauth-expired") and "expired" in body["detail"]
    assert TX_CLEAR in set_cookies(r)
    assert sessions_of() == [] and docs("oauth_tx") == []


def test_mismatched_state_is_400_and_leaves_the_attempt_usable(browser: Browser, stack: Stack) -> None:
    attempt = authorize(start(browser), ALICE["sub"])
    forged = attempt.callback.replace(f"state={attempt.state}", "state=forged-state-value")
    assert forged != attempt.callback
    r = callback(browser, attempt, path=forged)
    assert problem(r, 400)["type"].endswith("oauth-state")
    assert set_cookies(r) == [] and sessions_of() == []
    ok = callback(browser, attempt)  # the real answer still completes (the mismatch consumed nothing)
    assert ok.status_code == 302 and ok.headers["location"] == f"{stack.gateway_url}/lab"


def test_denied_consent_goes_back_to_the_lab_with_a_marker(browser: Browser, stack: Stack) -> None:
    attempt = authorize(start(browser), ALICE["sub"], action="deny")
    assert "error=access_denied" in attempt.callback
    r = callback(browser, attempt)
    assert r.status_code == 302
    assert r.headers["location"] == f"{stack.gateway_url}/?signin_error=access_denied"
    assert set_cookies(r) == [TX_CLEAR]
    assert sessions_of() == [] and docs("oauth_tx") == []
    (entry,) = [a for a in docs("audit_log") if a["action"] == "signin"]
    assert entry["outcome"] == "refused" and entry["details"]["reason"] == "provider:access_denied"


# --- users: linking and refusals -------------------------------------------------------------------


def test_verified_password_account_is_linked_only_from_its_password_session(
    browser: Browser, stack: Stack, new_user: Any
) -> None:
    account = new_user(email=ALICE["email"], verified=True)
    _, r = sign_in(browser, ALICE["sub"])
    body = problem(r, 409)
    assert body["type"].endswith("account-exists") and "reset the password" in body["detail"]
    assert TX_CLEAR in set_cookies(r) and not [c for c in set_cookies(r) if c.startswith("__Host-rt=")]
    assert google_identity(ALICE["sub"], stack) is None and sessions_of() == []
    (entry,) = [a for a in docs("audit_log") if a["action"] == "signin"]
    assert entry["outcome"] == "refused" and entry["details"]["reason"] == "account-exists"

    assert browser.login(account["email"], account["password"]).status_code == 200
    attempt = authorize(start(browser, link=True), ALICE["sub"])
    r = callback(browser, attempt)
    assert r.status_code == 302, r.text
    assert google_identity(ALICE["sub"], stack)["uid"] == account["uid"]
    assert sorted(users.get(account["uid"])["providers"]) == ["google", "password"]
    assert len(docs("users")) == 1
    # the Google sign-in's entry (the password sign-in has no `account` detail)
    (entry,) = [a for a in docs("audit_log") if a["action"] == "signin" and "account" in a.get("details", {})]
    assert (entry["actor"], entry["outcome"], entry["details"]["account"]) == (account["uid"], "ok", "linked")


def test_unverified_password_account_is_claimed_by_the_google_owner(
    browser: Browser, stack: Stack, new_user: Any, unique: str
) -> None:
    sub, email = f"google-{unique}", f"carol-{unique}@example.com"
    put_identity(stack, sub, email=email, email_verified=True, name="Carol")
    account = new_user(email=email, verified=False)
    _, r = sign_in(browser, sub)
    assert r.status_code == 302, r.text
    assert google_identity(sub, stack)["uid"] == account["uid"]
    assert users.get(account["uid"])["providers"] == ["google"] and users.password_identity(email) is None
    (session,) = sessions_of()
    assert session["uid"] == account["uid"] and len(docs("users")) == 1
    (entry,) = [a for a in docs("audit_log") if a["action"] == "signin"]
    assert (entry["outcome"], entry["details"]["account"]) == ("ok", "claimed")


def test_google_identity_with_unverified_email_is_refused(browser: Browser, stack: Stack, unique: str) -> None:
    sub = f"google-unverified-{unique}"
    put_identity(stack, sub, email=f"dave-{unique}@example.com", email_verified=False)
    _, r = sign_in(browser, sub)
    body = problem(r, 400)
    assert body["type"].endswith("id-token-email-unverified")
    assert docs("users") == [] and sessions_of() == [] and google_identity(sub, stack) is None
    (entry,) = [a for a in docs("audit_log") if a["action"] == "signin"]
    assert entry["outcome"] == "refused" and entry["details"]["reason"] == "id_token:email-unverified"


def test_disabled_user_cannot_sign_in_with_google(browser: Browser, stack: Stack) -> None:
    _, r = sign_in(browser, ALICE["sub"])
    assert r.status_code == 302
    uid = google_identity(ALICE["sub"], stack)["uid"]
    users.update(uid, disabled=True)
    _, again = sign_in(browser, ALICE["sub"])
    assert problem(again, 403)["type"].endswith("account-disabled")
    assert len(sessions_of(uid)) == 1
