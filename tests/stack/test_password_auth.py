"""Email + password accounts through the gateway, as the lab (or curl) uses them."""

from __future__ import annotations

import re
from datetime import timedelta

import httpx
import pytest

from mllab.identity import passwords, users
from mllab.platform import clock
from mllab_dev.stack import Stack

from .conftest import PASSWORD, Browser
from .identity_support import mails, token_from

COOKIE_RE = re.compile(r"^__Host-rt=rt1\.[A-Za-z0-9_-]{70,}; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age=(\d+)$")


def test_register_verify_login_me_refresh_logout(stack: Stack, browser: Browser, unique: str) -> None:
    email = f"New.User+{unique}@Example.com"
    r = browser.request("POST", "/auth/register", json_body={"email": email, "password": PASSWORD, "name": "New"})
    assert r.status_code == 202, r.text
    normalized = email.lower()

    early = browser.login(normalized, PASSWORD)  # answered like a wrong password: no enumeration
    assert early.status_code == 401
    assert early.json()["type"].endswith("bad-credentials") and "confirm your email" in early.json()["detail"]

    [message] = mails(normalized, "verify_email")
    token = token_from(message, "verify-email")
    assert browser.request("POST", "/auth/verify-email", json_body={"token": token}).status_code == 200
    assert browser.request("POST", "/auth/verify-email", json_body={"token": token}).status_code == 400  # single use

    r = browser.login(normalized, PASSWORD)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["token_type"] == "Bearer" and body["expires_in"] == 600 and body["access_token"].count(".") == 2
    cookie = COOKIE_RE.match(r.headers["set-cookie"])
    assert cookie, r.headers["set-cookie"]
    assert 29 * 86400 < int(cookie.group(1)) <= 30 * 86400  # never beyond the absolute lifetime

    me = browser.request("GET", "/me").json()
    assert me["email"] == normalized and me["email_verified"] is True and me["name"] == "New"
    assert me["subscription"]["status"] == "none" and me["usage"]["storage_bytes"] == 0 and me["csrf"]

    first = browser.refresh_cookie
    r = browser.refresh()
    assert r.status_code == 200 and COOKIE_RE.match(r.headers["set-cookie"])
    assert browser.refresh_cookie != first
    assert browser.request("GET", "/me").status_code == 200

    r = browser.request("POST", "/auth/logout", json_body={"scope": "local"})
    assert r.status_code == 204
    assert r.headers["set-cookie"] == "__Host-rt=; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age=0"
    assert browser.refresh_cookie is None
    assert browser.request("GET", "/me").status_code == 401  # the unexpired access token is dead too


def test_registering_an_existing_email_answers_the_same_and_mails_the_owner(
    stack: Stack, browser: Browser, new_user
) -> None:
    owner = new_user()
    fresh = f"fresh-{owner['uid'][:8]}@example.com"
    a = browser.request("POST", "/auth/register", json_body={"email": owner["email"], "password": "another long pass"})
    b = browser.request("POST", "/auth/register", json_body={"email": fresh, "password": "another long pass"})
    assert a.status_code == b.status_code == 202
    assert a.json() == b.json()
    assert mails(owner["email"], "already_registered")
    assert not mails(owner["email"], "verify_email")
    assert users.password_identity(owner["email"])["uid"] == owner["uid"]  # nothing replaced


@pytest.mark.parametrize(
    "password,why",
    [
        ("short12", "at least 8"),
        ("password123", "most common"),
        ("iloveyou", "most common"),
    ],
)
def test_weak_passwords_are_refused_and_nothing_is_created(
    browser: Browser, unique: str, password: str, why: str
) -> None:
    email = f"weak-{unique}@example.com"
    r = browser.request("POST", "/auth/register", json_body={"email": email, "password": password})
    assert r.status_code == 422
    assert why in r.json()["detail"] or any(why in e["message"] for e in r.json().get("errors", []))
    assert users.find_by_email(email) is None


def test_long_passphrases_and_no_composition_rules(browser: Browser, unique: str) -> None:
    for i, password in enumerate(["a" * 7 + "b", "x" * 64, "correct horse battery staple " * 4, "ünïcødé pässwörd"]):
        email = f"long-{i}-{unique}@example.com"
        r = browser.request("POST", "/auth/register", json_body={"email": email, "password": password})
        assert r.status_code == 202, (password, r.text)
        ident = users.password_identity(email)
        assert ident["hash"].startswith("$argon2id$v=19$m=19456,t=2,p=1$")
        assert passwords.verify(ident["hash"], password) and not passwords.verify(ident["hash"], password.upper())


def test_unknown_email_and_wrong_password_answer_alike(browser: Browser, new_user) -> None:
    user = new_user()
    wrong = browser.login(user["email"], "not the password at all")
    unknown = browser.login(f"nobody-{user['uid']}@example.com", "not the password at all")
    assert wrong.status_code == unknown.status_code == 401
    strip = lambda r: {k: v for k, v in r.json().items() if k not in ("request_id",)}  # noqa: E731
    assert strip(wrong) == strip(unknown)


def test_unknown_email_runs_the_dummy_argon2_verify(
    function_client, monkeypatch: pytest.MonkeyPatch, stack: Stack, new_user
) -> None:
    calls: list[str] = []
    real = passwords.dummy_verify
    monkeypatch.setattr(passwords, "dummy_verify", lambda pw: (calls.append(pw), real(pw))[1])
    client = function_client("auth_password")
    headers = {"Origin": stack.gateway_url, "X-CSRF-Token": "1"}
    r = client.post("/auth/login", json={"email": "ghost@example.com", "password": "whatever123"}, headers=headers)
    assert r.status_code == 401 and calls == ["whatever123"]
    user = new_user()
    r = client.post("/auth/login", json={"email": user["email"], "password": "whatever123"}, headers=headers)
    assert r.status_code == 401 and calls == ["whatever123"]  # a known account uses its real hash


def test_sixth_failure_from_one_client_is_throttled_then_the_window_passes(
    function_client, stack: Stack, new_user
) -> None:
    user = new_user()
    client = function_client("auth_password")
    headers = {"Origin": stack.gateway_url, "X-CSRF-Token": "1"}

    def attempt(password: str):
        return client.post("/auth/login", json={"email": user["email"], "password": password}, headers=headers)

    assert [attempt("wrong password!").status_code for _ in range(5)] == [401] * 5
    blocked = attempt(user["password"])  # this client, for this account, waits (other clients do not)
    assert blocked.status_code == 429
    assert 0 < int(blocked.headers["Retry-After"]) <= 15 * 60
    assert blocked.headers["Content-Type"] == "application/problem+json"
    with clock.travel(by=timedelta(minutes=16)):
        assert attempt(user["password"]).status_code == 200


def test_password_reset_signs_out_everywhere(stack: Stack, new_user) -> None:
    user = new_user()
    phone, laptop = Browser(stack.gateway_url), Browser(stack.gateway_url)
    assert phone.login(user["email"], user["password"]).status_code == 200
    assert laptop.login(user["email"], user["password"]).status_code == 200

    r = phone.request("POST", "/auth/password-reset", json_body={"email": user["email"]})
    unknown = phone.request("POST", "/auth/password-reset", json_body={"email": "nobody-at-all@example.com"})
    assert r.status_code == unknown.status_code == 202 and r.json() == unknown.json()
    token = token_from(mails(user["email"], "password_reset")[-1], "reset-password")
    r = phone.request(
        "POST", "/auth/password-reset/confirm", json_body={"token": token, "password": "a brand new secret"}
    )
    assert r.status_code == 200
    again = phone.request(
        "POST", "/auth/password-reset/confirm", json_body={"token": token, "password": "another one!!"}
    )
    assert again.status_code == 400

    assert phone.refresh().status_code == 401 and laptop.refresh().status_code == 401
    assert laptop.request("GET", "/me").status_code == 401
    assert Browser(stack.gateway_url).login(user["email"], user["password"]).status_code == 401
    assert Browser(stack.gateway_url).login(user["email"], "a brand new secret").status_code == 200
    assert mails(user["email"], "password_changed")


def test_password_change_can_sign_out_the_other_devices(stack: Stack, new_user) -> None:
    user = new_user()
    here, there = Browser(stack.gateway_url), Browser(stack.gateway_url)
    here.login(user["email"], user["password"])
    there.login(user["email"], user["password"])
    wrong = here.request(
        "POST",
        "/auth/password-change",
        json_body={"current_password": "nope nope nope", "new_password": "fresh secret 123"},
    )
    assert wrong.status_code == 403
    r = here.request(
        "POST",
        "/auth/password-change",
        json_body={"current_password": user["password"], "new_password": "fresh secret 123"},
    )
    assert r.status_code == 200, r.text
    assert here.refresh().status_code == 200  # this device stays signed in
    assert there.refresh().status_code == 401
    no_csrf = here.request(
        "POST",
        "/auth/password-change",
        headers={"X-CSRF-Token": "bogus"},
        json_body={"current_password": "fresh secret 123", "new_password": "another secret 1"},
    )
    assert no_csrf.status_code == 403


def test_disabled_account_cannot_sign_in(browser: Browser, new_user) -> None:
    user = new_user()
    users.update(user["uid"], disabled=True)
    r = browser.login(user["email"], user["password"])
    assert r.status_code == 403 and r.json()["type"].endswith("account-disabled")


def test_malformed_requests_are_4xx_and_change_nothing(browser: Browser, unique: str) -> None:
    email = f"x-{unique}@example.com"
    cases = [
        {"email": email},  # missing password
        {"email": "not-an-email", "password": PASSWORD},
        {"email": email, "password": PASSWORD, "admin": True},  # unknown field
        {"email": email, "password": "x" * 2000},
    ]
    for body in cases:
        r = browser.request("POST", "/auth/register", json_body=body)
        assert r.status_code == 422, (body, r.text)
        assert r.headers["content-type"] == "application/problem+json"
    assert users.find_by_email(email) is None
    r = browser.request("POST", "/auth/login", content=b"{not json", headers={"Content-Type": "application/json"})
    assert r.status_code == 400


def test_no_secret_reaches_a_log_line(stack: Stack, browser: Browser, unique: str) -> None:
    email = f"logs-{unique}@example.com"
    secret_password = f"log-canary-{unique}-pass"
    browser.request("POST", "/auth/register", json_body={"email": email, "password": secret_password})
    token = token_from(mails(email, "verify_email")[-1], "verify-email")
    browser.request("POST", "/auth/verify-email", json_body={"token": token})
    assert browser.login(email, secret_password).status_code == 200
    assert browser.request("POST", "/auth/refresh", headers={"X-Request-Id": f"logcheck-{unique}"}).status_code == 200
    secrets = [secret_password, token, browser.access_token, browser.refresh_cookie, browser.csrf]
    browser.request("POST", "/auth/logout", json_body={"scope": "global"})
    text = "\n".join(p.read_text() for p in stack.log_dir.glob("*.log"))
    assert f"logcheck-{unique}" in text  # the logs did capture this test's traffic
    for s in secrets:
        assert s and s not in text


def test_curl_style_client_without_cookie_jar(stack: Stack, new_user) -> None:
    """What docs/development.md shows: plain HTTP with the Cookie header set by hand."""
    user = new_user()
    h = {"Origin": stack.gateway_url, "X-CSRF-Token": "1", "Content-Type": "application/json"}
    with httpx.Client(base_url=stack.gateway_url) as c:
        r = c.post("/auth/login", headers=h, json={"email": user["email"], "password": user["password"]})
        rt = r.headers["set-cookie"].split(";")[0]
        me = c.get("/me", headers={"Authorization": f"Bearer {r.json()['access_token']}"})
        assert me.status_code == 200 and me.json()["uid"] == user["uid"]
        r2 = c.post("/auth/refresh", headers={**h, "Cookie": rt})
        assert r2.status_code == 200
        out = c.post(
            "/auth/logout", headers={**h, "Cookie": r2.headers["set-cookie"].split(";")[0]}, json={"scope": "local"}
        )
        assert out.status_code == 204
