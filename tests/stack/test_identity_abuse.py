"""The identity attacks an outside review reproduced, each played against the local stack as the
attacker played it: pre-registration takeover, lockout as a weapon, account enumeration, stale reset
links and mail floods (docs/security.md lists each threat and its defence).

Client addresses: the functions take the client from X-Forwarded-For as the load balancer writes it
(`<client>, <lb>`), so the in-process function clients below pose as different clients that way."""

from __future__ import annotations

from typing import Any

from mllab.identity import users
from mllab.platform import audit, config
from mllab_dev.stack import Stack

from .conftest import PASSWORD, Browser
from .identity_support import (
    authorize,
    callback,
    google_identity,
    mails,
    problem,
    put_identity,
    sessions_of,
    sign_in,
    start,
    token_from,
)

ATTACKER_PASSWORD = "attacker knows this one"


def from_ip(function_client, stack: Stack, ip: str):
    """post(path, body) to auth_password as a client at `ip`."""
    client = function_client("auth_password")
    headers = {"Origin": stack.gateway_url, "X-CSRF-Token": "1", "X-Forwarded-For": f"{ip}, 127.0.0.1"}
    return lambda path, body: client.post(path, json=body, headers=headers)


def victim(stack: Stack, unique: str) -> tuple[str, str]:
    """A Google account (sub, email) that has never used ML Lab."""
    sub, email = f"victim-{unique}", f"victim-{unique}@example.com"
    put_identity(stack, sub, email=email, email_verified=True, name="Victim")
    return sub, email


def google_browser(stack: Stack, sub: str) -> tuple[Browser, Any]:
    """A browser signed in with Google as `sub` (the callback's answer beside it)."""
    b = Browser(stack.gateway_url)
    _, r = sign_in(b, sub)
    if r.status_code == 302:
        assert b.refresh().status_code == 200
        b.csrf = b.request("GET", "/me").json()["csrf"]
    return b, r


# --- 1. pre-registration takeover ------------------------------------------------------------------


def test_an_unconfirmed_password_gives_way_to_the_google_owner_of_the_address(stack: Stack, unique: str) -> None:
    sub, email = victim(stack, unique)
    attacker = Browser(stack.gateway_url)
    r = attacker.request("POST", "/auth/register", json_body={"email": email, "password": ATTACKER_PASSWORD})
    assert r.status_code == 202
    uid = users.find_by_email(email)["uid"]

    owner, r = google_browser(stack, sub)
    assert r.status_code == 302, r.text
    assert google_identity(sub, stack)["uid"] == uid
    assert users.password_identity(email) is None
    assert users.get(uid)["providers"] == ["google"] and users.get(uid)["email_verified"] is True
    (notice,) = mails(email, "password_removed")
    assert "removed it" in notice["body"]

    assert owner.request("GET", "/me").json()["uid"] == uid
    assert attacker.login(email, ATTACKER_PASSWORD).status_code == 401
    # the verification link the sign-up mailed cannot bring the password back either
    link = token_from(mails(email, "verify_email")[0], "verify-email")
    attacker.request("POST", "/auth/verify-email", json_body={"token": link})
    assert attacker.login(email, ATTACKER_PASSWORD).status_code == 401
    assert [a["action"] for a in audit.for_actor(uid) if a["action"] == "identity.password_dropped"]


def test_a_confirmed_password_is_never_linked_by_a_google_sign_in_alone(
    stack: Stack, unique: str, function_client
) -> None:
    sub, email = victim(stack, unique)
    attacker = Browser(stack.gateway_url)
    assert (
        attacker.request(
            "POST", "/auth/register", json_body={"email": email, "password": ATTACKER_PASSWORD}
        ).status_code
        == 202
    )
    uid = users.find_by_email(email)["uid"]
    # the victim clicks the confirmation link the attacker's sign-up sent them; the attacker signs in
    link = token_from(mails(email, "verify_email")[0], "verify-email")
    assert attacker.request("POST", "/auth/verify-email", json_body={"token": link}).status_code == 200
    assert attacker.login(email, ATTACKER_PASSWORD).status_code == 200

    owner = Browser(stack.gateway_url)
    _, r = sign_in(owner, sub)
    body = problem(r, 409)
    assert body["type"].endswith("account-exists")
    assert "reset the password" in body["detail"] and "signs out every device" in body["detail"]
    assert google_identity(sub, stack) is None and not owner.refresh_cookie

    # the attacker cannot attach their own Google account to the address either
    put_identity(stack, f"attacker-{unique}", email=f"attacker-{unique}@example.com", email_verified=True)
    attempt = authorize(start(attacker, link=True), f"attacker-{unique}")
    assert problem(callback(attacker, attempt), 409)["type"].endswith("google-email-mismatch")
    assert [i["kind"] for i in users.identities_of(uid)] == ["password"]

    # the owner follows the advice: the reset proves the mailbox and ends the attacker's sessions
    assert owner.request("POST", "/auth/password-reset", json_body={"email": email}).status_code == 202
    token = token_from(mails(email, "password_reset")[-1], "reset-password")
    r = owner.request("POST", "/auth/password-reset/confirm", json_body={"token": token, "password": PASSWORD})
    assert r.status_code == 200
    assert attacker.request("GET", "/me").status_code == 401 and attacker.refresh().status_code == 401
    assert Browser(stack.gateway_url).login(email, ATTACKER_PASSWORD).status_code == 401

    # then, signed in with the password, the owner connects Google
    assert owner.login(email, PASSWORD).status_code == 200
    attempt = authorize(start(owner, link=True), sub)
    assert callback(owner, attempt).status_code == 302
    assert google_identity(sub, stack)["uid"] == uid
    assert sorted(users.get(uid)["providers"]) == ["google", "password"]
    again, r = google_browser(stack, sub)
    assert r.status_code == 302 and again.request("GET", "/me").json()["uid"] == uid


def test_a_link_needs_a_live_password_session(stack: Stack, unique: str, browser: Browser) -> None:
    assert problem(browser.client.get("/auth/google/login", params={"link": "1"}), 401)
    sub, _ = victim(stack, unique)
    google_user, r = google_browser(stack, sub)
    assert r.status_code == 302
    r = google_user.client.get(
        "/auth/google/login", params={"link": "1"}, headers={"Cookie": f"__Host-rt={google_user.refresh_cookie}"}
    )
    assert problem(r, 403)["type"].endswith("password-session-required")


def test_a_browser_is_sent_back_to_the_lab_with_what_to_do(stack: Stack, unique: str, new_user) -> None:
    sub, email = victim(stack, unique)
    new_user(email=email, verified=True)
    b = Browser(stack.gateway_url)
    attempt = authorize(start(b), sub)
    r = b.request(
        "GET",
        attempt.callback,
        auth=False,
        cookie=False,
        headers={"Cookie": f"__Host-oauth_tx={attempt.tx_id}", "Accept": "text/html,*/*;q=0.8"},
    )
    assert r.status_code == 302 and r.headers["location"].endswith("/?signin_error=account_exists")
    assert sessions_of() == []


# --- 2. lockout as a weapon ------------------------------------------------------------------------


def test_a_strangers_wrong_passwords_never_stop_the_owner(stack: Stack, function_client, new_user) -> None:
    user = new_user()
    stranger = from_ip(function_client, stack, "203.0.113.9")
    wrong = {"email": user["email"], "password": "not the password"}
    assert [stranger("/auth/login", wrong).status_code for _ in range(config.RATE_LIMITS.login_pair)] == [401] * 5
    blocked = stranger("/auth/login", {"email": user["email"], "password": user["password"]})
    assert blocked.status_code == 429 and int(blocked.headers["Retry-After"]) > 0  # that client, for that account
    owner = from_ip(function_client, stack, "198.51.100.20")
    assert owner("/auth/login", {"email": user["email"], "password": user["password"]}).status_code == 200

    # many addresses at once (a botnet) only slow the account down a little
    for n in range(config.RATE_LIMITS.login_account + 2):
        assert from_ip(function_client, stack, f"192.0.2.{n + 1}")("/auth/login", wrong).status_code == 401
    assert owner("/auth/login", {"email": user["email"], "password": user["password"]}).status_code == 200


def test_one_address_guessing_across_accounts_is_throttled(stack: Stack, function_client) -> None:
    guesser = from_ip(function_client, stack, "203.0.113.77")
    answers = [
        guesser("/auth/login", {"email": f"nobody-{n}@example.com", "password": "guess guess"}).status_code
        for n in range(config.RATE_LIMITS.login_ip + 1)
    ]
    assert answers[:-1] == [401] * config.RATE_LIMITS.login_ip and answers[-1] == 429
    other = from_ip(function_client, stack, "198.51.100.21")
    assert other("/auth/login", {"email": "nobody-0@example.com", "password": "guess guess"}).status_code == 401


def test_reset_requests_by_anyone_never_block_the_owners_reset(stack: Stack, function_client, new_user) -> None:
    user = new_user()
    stranger = from_ip(function_client, stack, "203.0.113.10")
    answers = [stranger("/auth/password-reset", {"email": user["email"]}) for _ in range(8)]
    assert {r.status_code for r in answers} == {202} and len({r.get_json()["detail"] for r in answers}) == 1
    assert len(mails(user["email"], "password_reset")) == config.RATE_LIMITS.mail_address

    owner = from_ip(function_client, stack, "198.51.100.30")
    assert owner("/auth/password-reset", {"email": user["email"]}).status_code == 202
    inbox = mails(user["email"], "password_reset")
    newest, older = token_from(inbox[-1], "reset-password"), token_from(inbox[0], "reset-password")
    r = owner("/auth/password-reset/confirm", {"token": newest, "password": "the owner's new one"})
    assert r.status_code == 200, r.get_data(as_text=True)
    assert owner("/auth/password-reset/confirm", {"token": older, "password": "an attacker's one"}).status_code == 400
    assert owner("/auth/login", {"email": user["email"], "password": "the owner's new one"}).status_code == 200


def test_password_checks_inside_a_session_count_per_session(stack: Stack, function_client, member) -> None:
    owner = member()
    stranger = from_ip(function_client, stack, "203.0.113.11")
    for _ in range(config.RATE_LIMITS.login_pair):
        stranger("/auth/login", {"email": owner.email, "password": "not the password"})
    r = owner.request(
        "POST", "/auth/password-change", json_body={"current_password": PASSWORD, "new_password": "a fresh passphrase"}
    )
    assert r.status_code == 200, r.text

    thief = Browser(stack.gateway_url)  # a second session of the same account
    assert thief.login(owner.email, "a fresh passphrase").status_code == 200
    for _ in range(config.RATE_LIMITS.reauth_session):
        r = thief.request("DELETE", "/account", json_body={"password": "wrong wrong wrong"})
        assert r.status_code == 403
    assert thief.request("DELETE", "/account", json_body={"password": "wrong wrong wrong"}).status_code == 429
    r = owner.request(
        "POST",
        "/auth/password-change",
        json_body={"current_password": "a fresh passphrase", "new_password": "another passphrase"},
    )
    assert r.status_code == 200, r.text


# --- 3. enumeration --------------------------------------------------------------------------------


def test_sign_up_then_sign_in_answers_alike_for_a_taken_and_a_new_address(
    stack: Stack, browser: Browser, new_user, unique: str
) -> None:
    taken = new_user()["email"]
    fresh = f"fresh-{unique}@example.com"
    answers = []
    for email in (taken, fresh):
        r = browser.request("POST", "/auth/register", json_body={"email": email, "password": ATTACKER_PASSWORD})
        assert r.status_code == 202
        answers.append(browser.login(email, ATTACKER_PASSWORD))
    strip = [{k: v for k, v in r.json().items() if k != "request_id"} for r in answers]
    assert answers[0].status_code == answers[1].status_code == 401 and strip[0] == strip[1]
    assert "confirm your email" in strip[0]["detail"] and "reset it" in strip[0]["detail"]


# --- 4. reset links --------------------------------------------------------------------------------


def test_using_one_reset_link_ends_every_older_one(stack: Stack, browser: Browser, new_user) -> None:
    user = new_user()
    for _ in range(2):
        assert browser.request("POST", "/auth/password-reset", json_body={"email": user["email"]}).status_code == 202
    older, newer = (token_from(m, "reset-password") for m in mails(user["email"], "password_reset"))
    ok = browser.request(
        "POST", "/auth/password-reset/confirm", json_body={"token": newer, "password": "first new one"}
    )
    assert ok.status_code == 200
    late = browser.request(
        "POST", "/auth/password-reset/confirm", json_body={"token": older, "password": "second one!"}
    )
    assert problem(late, 400)["type"].endswith("invalid-link")
    assert browser.login(user["email"], "first new one").status_code == 200


def test_changing_the_password_ends_outstanding_reset_links(stack: Stack, member) -> None:
    owner = member()
    assert owner.request("POST", "/auth/password-reset", json_body={"email": owner.email}).status_code == 202
    link = token_from(mails(owner.email, "password_reset")[-1], "reset-password")
    r = owner.request(
        "POST", "/auth/password-change", json_body={"current_password": PASSWORD, "new_password": "changed in the lab"}
    )
    assert r.status_code == 200
    late = owner.request("POST", "/auth/password-reset/confirm", json_body={"token": link, "password": "from the link"})
    assert problem(late, 400)["type"].endswith("invalid-link")
    assert Browser(stack.gateway_url).login(owner.email, "changed in the lab").status_code == 200


def test_a_reset_link_sets_no_password_on_a_deleted_or_disabled_account(stack: Stack, member, new_user) -> None:
    deleted, disabled = member(), new_user()
    for email in (deleted.email, disabled["email"]):
        assert deleted.request("POST", "/auth/password-reset", json_body={"email": email}).status_code == 202
    deleted_link = token_from(mails(deleted.email, "password_reset")[-1], "reset-password")
    disabled_link = token_from(mails(disabled["email"], "password_reset")[-1], "reset-password")
    assert deleted.request("DELETE", "/account", json_body={"password": PASSWORD}).status_code == 204
    users.update(disabled["uid"], disabled=True)
    anyone = Browser(stack.gateway_url)
    for link in (deleted_link, disabled_link):
        r = anyone.request(
            "POST", "/auth/password-reset/confirm", json_body={"token": link, "password": "back door 123"}
        )
        assert problem(r, 400)["type"].endswith("invalid-link")
    assert users.get(deleted.uid)["email_verified"] is True  # type: ignore[attr-defined]
    assert mails(deleted.email, "password_changed") == []


# --- 5. mail floods --------------------------------------------------------------------------------


def test_sign_ups_from_one_client_are_capped_successes_included(stack: Stack, function_client, unique: str) -> None:
    client = from_ip(function_client, stack, "203.0.113.40")
    limit = config.RATE_LIMITS.register_ip
    answers = [
        client("/auth/register", {"email": f"flood-{unique}-{n}@example.com", "password": ATTACKER_PASSWORD})
        for n in range(limit + 3)
    ]
    assert [r.status_code for r in answers] == [202] * limit + [429] * 3
    assert answers[-1].headers["Content-Type"] == "application/problem+json"
    sent = [m for m in mails_to_prefix(f"flood-{unique}-")]
    assert len(sent) == limit
    other = from_ip(function_client, stack, "198.51.100.40")
    assert (
        other("/auth/register", {"email": f"other-{unique}@example.com", "password": ATTACKER_PASSWORD}).status_code
        == 202
    )


def test_mail_to_one_address_is_capped_and_the_answer_never_says_so(stack: Stack, function_client, new_user) -> None:
    user = new_user(verified=False)
    answers = []
    for n in range(4):  # from four clients, so no client budget is what stops the mails
        client = from_ip(function_client, stack, f"192.0.2.{50 + n}")
        answers += [
            client("/auth/verify-email/resend", {"email": user["email"]}),
            client("/auth/register", {"email": user["email"], "password": ATTACKER_PASSWORD}),
        ]
    assert {r.status_code for r in answers} == {202}
    assert len({r.get_data() for r in answers}) == 1
    to_user = [m for m in mails_to_prefix(user["email"])]
    assert len(to_user) == config.RATE_LIMITS.mail_address


def mails_to_prefix(prefix: str) -> list[dict]:
    from mllab.platform import mail

    return [m for m in mail.dev_messages() if m["to"].startswith(prefix)]
