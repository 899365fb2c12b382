"""Email + password accounts, refresh and sign-out: the logic behind auth_password, auth_refresh
and auth_logout. Plain arguments in (the functions' main.py read them off the request), data out; a
refusal is a Problem.

Nothing here reveals whether an email is registered: registration, resend and reset answer the same
either way (the owner gets a mail instead); a wrong password, an unknown email and an unconfirmed
account answer the same 401 after the same Argon2 work. Nothing lets a stranger lock an owner out
(docs/security.md): wrong passwords are budgeted per (account, client address) and per address, with
only a short delay per account; mails to one address are capped silently; re-checks of the current
password count per session.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from mllab.identity import passwords, schemas, sessions, tokens, users
from mllab.platform import audit, clock, config, log, mail, ratelimit, wire
from mllab.platform.problems import Problem

# One answer for a wrong password, an unknown email and an account whose email is not confirmed yet,
# so sign-in never tells whether an address has an account; the wording covers what a real person does next.
BAD_CREDENTIALS = (
    "Email or password is incorrect. If you just signed up, confirm your email first with the link "
    "we mailed you (we can send it again); if you forgot your password, reset it."
)
CHECK_INBOX = "Check your inbox: if the address can receive mail from us, a link is on its way."


def _link(fragment: str) -> str:
    # A fragment never reaches a server log: the lab reads it and POSTs the token.
    return f"{config.settings().lab_url.rstrip('/')}/#{fragment}"


@dataclass(frozen=True)
class SignedIn:
    """A session's access token and the refresh cookie that goes with it (a Set-Cookie value)."""

    access: tokens.AccessToken
    cookie: str

    def body(self) -> schemas.AccessTokenResponse:
        return schemas.AccessTokenResponse(access_token=self.access.token, expires_in=self.access.expires_in)


def _signed_in(uid: str, method: str, *, ip: str, user_agent: str) -> SignedIn:
    session, refresh = sessions.create(uid, method, user_agent=user_agent, ip=ip)
    access = tokens.issue_access_token(uid, session.id)
    audit.record("signin", actor=uid, target=f"session:{session.id}", ip=ip, method=method)
    return SignedIn(access, sessions.cookie_header(refresh, session.not_after))


def _policy(password: str, email: str, field: str = "password") -> None:
    problem = passwords.policy_problem(password, email=email)
    if problem:
        raise Problem(422, problem, errors=[{"field": field, "message": problem}])


def _account_mail(email: str, template: str, link: Callable[[], str]) -> bool:
    """Send an account mail unless this address had its share of them in the window. Held back
    silently: the answer to the client is the same either way, and the newest link already in the
    inbox keeps working. `link` is called only when the mail goes (it may mint a one-time token)."""
    if ratelimit.over("mail_address", email):
        log.info("account mail held back: the address had its share", template=template)
        return False
    ratelimit.fail("mail_address", email)
    mail.send(email, template, link())
    return True


def _token_link(uid: str, purpose: str, email: str, ttl_s: int, fragment: str) -> Callable[[], str]:
    return lambda: _link(f"{fragment}={users.issue_email_token(uid, purpose, email, ttl_s)}")


# --- registration and verification ---------------------------------------------------------------


def register(body: schemas.RegisterRequest, *, ip: str) -> wire.Accepted:
    email = users.normalize_email(body.email)
    retry = ratelimit.over("register_ip", ip)
    if retry:
        raise ratelimit.refuse(
            "register_ip",
            retry,
            ip=ip,
            detail=f"Too many sign-ups from your network. Try again in {ratelimit.human(retry)}.",
        )
    _policy(body.password, email)
    ratelimit.fail("register_ip", ip)  # every sign-up counts, not only failures: each one can send a mail
    password_hash = passwords.hash_password(body.password)  # hashed either way: equal cost
    existing = users.find_by_email(email)
    uid = None if existing else users.create_password_user(email, password_hash, name=body.name)
    if uid is None:
        owner = existing or users.find_by_email(email)
        _account_mail(email, "already_registered", lambda: _link("signin"))
        audit.record("register", actor=owner["uid"] if owner else None, outcome="exists", ip=ip)
    else:
        _account_mail(
            email, "verify_email", _token_link(uid, "verify", email, config.EMAIL_VERIFY_TTL_S, "verify-email")
        )
        audit.record("register", actor=uid, outcome="ok", ip=ip)
    return wire.Accepted(detail=CHECK_INBOX)


def verify_email(token: str, *, ip: str) -> wire.Accepted:
    doc = users.consume_email_token(token, "verify")
    user = users.get(doc["uid"])
    if not user or user.get("email") != doc["email"]:
        raise Problem(400, "This link is invalid, already used or expired. Ask for a new one.", slug="invalid-link")
    users.update(doc["uid"], email_verified=True)
    audit.record("email.verify", actor=doc["uid"], ip=ip)
    return wire.Accepted(detail="Your email is confirmed. You can sign in now.")


def resend_verification(raw_email: str) -> wire.Accepted:
    email = users.normalize_email(raw_email)
    ident = users.password_identity(email)
    user = users.get(ident["uid"]) if ident else None
    if user and not user.get("email_verified") and not user.get("disabled"):
        _account_mail(
            email, "verify_email", _token_link(user["uid"], "verify", email, config.EMAIL_VERIFY_TTL_S, "verify-email")
        )
    return wire.Accepted(detail=CHECK_INBOX)


# --- sign-in -------------------------------------------------------------------------------------


def _bad_credentials(email: str, ip: str, uid: str | None, outcome: str) -> Problem:
    ratelimit.count(("login_pair", f"{email}|{ip}"), ("login_ip", ip), ("login_account", email))
    audit.record("signin", actor=uid, outcome=outcome, ip=ip, method="password")
    return Problem(401, BAD_CREDENTIALS, slug="bad-credentials")


def _throttle_login(email: str, ip: str) -> None:
    """429 for this client only (per account and address, and per address); for the account as a
    whole, at most a short delay, so nobody else's guesses stop the owner from signing in."""
    (_, pair), (_, per_ip), (account_failures, _) = ratelimit.estimates(
        ("login_pair", f"{email}|{ip}"), ("login_ip", ip), ("login_account", email)
    )
    if pair or per_ip:
        raise ratelimit.refuse("login_pair" if pair else "login_ip", max(pair, per_ip), ip=ip)
    delay = ratelimit.progressive_delay(account_failures)
    if delay:
        time.sleep(delay)


def login(body: schemas.LoginRequest, *, ip: str, user_agent: str) -> SignedIn:
    email = users.normalize_email(body.email)
    _throttle_login(email, ip)
    ident = users.password_identity(email)
    if ident is None:
        passwords.dummy_verify(body.password)
        raise _bad_credentials(email, ip, None, "bad_credentials")
    if not passwords.verify(ident["hash"], body.password):
        raise _bad_credentials(email, ip, ident["uid"], "bad_credentials")
    user = users.get(ident["uid"])
    if not user or user.get("disabled") or user.get("deleted_at"):
        audit.record("signin", actor=ident["uid"], outcome="disabled", ip=ip, method="password")
        raise Problem(
            403, "This account is disabled. Contact support if you think this is a mistake.", slug="account-disabled"
        )
    if not user.get("email_verified"):
        # Answered like a wrong password: otherwise sign-up + sign-in would tell who has an account.
        raise _bad_credentials(email, ip, ident["uid"], "email_not_verified")
    if passwords.needs_rehash(ident["hash"]):
        users.set_password_hash(email, passwords.hash_password(body.password))
    return _signed_in(ident["uid"], "password", ip=ip, user_agent=user_agent)


# --- passwords -----------------------------------------------------------------------------------


def request_reset(raw_email: str, *, ip: str) -> wire.Accepted:
    """Always 202: a reset must stay possible for the owner whoever else asks, so the limits (per
    client address, per mailbox) only hold mails back, and links already mailed keep working."""
    email = users.normalize_email(raw_email)
    if ratelimit.over("reset_ip", ip):
        log.info("reset mail held back: the client address had its share")
        return wire.Accepted(detail=CHECK_INBOX)
    ratelimit.fail("reset_ip", ip)
    ident = users.password_identity(email)
    if ident and _account_mail(
        email,
        "password_reset",
        _token_link(ident["uid"], "reset", email, config.PASSWORD_RESET_TTL_S, "reset-password"),
    ):
        audit.record("password.reset_requested", actor=ident["uid"], ip=ip)
    return wire.Accepted(detail=CHECK_INBOX)


def confirm_reset(body: schemas.PasswordResetConfirmRequest, *, ip: str) -> wire.Accepted:
    doc = users.consume_email_token(body.token, "reset")
    user = users.get(doc["uid"])
    changed = (user or {}).get("password_changed_at")
    if (
        not user
        or user.get("email") != doc["email"]
        or user.get("disabled")
        or user.get("deleted_at")
        or users.password_identity(doc["email"]) is None
        or (changed and doc["created_at"] <= changed)
    ):
        # Using one link, or changing the password, ends every link issued before it; a disabled or
        # deleted account takes no new password.
        raise Problem(400, "This link is invalid, already used or expired. Ask for a new one.", slug="invalid-link")
    _policy(body.password, doc["email"])
    users.set_password_hash(doc["email"], passwords.hash_password(body.password))
    revoked = sessions.revoke_all(doc["uid"], "password_reset")
    # Controlling the mailbox proves the address; every old access token dies with its sessions.
    now = clock.now()
    users.update(doc["uid"], email_verified=True, tokens_valid_after=now, password_changed_at=now)
    mail.send(doc["email"], "password_changed", _link("reset-password"))
    audit.record("password.reset", actor=doc["uid"], ip=ip, sessions_revoked=revoked)
    return wire.Accepted(detail="Your password is changed and every device was signed out. Sign in again.")


def change_password(user: dict[str, Any], sid: str, body: schemas.PasswordChangeRequest, *, ip: str) -> wire.Accepted:
    """`user`: the signed-in user's document (with its uid), as the liveness check read it."""
    uid, email = user["uid"], user.get("email", "")
    ident = users.password_identity(email)
    ratelimit.check("reauth_session", sid, ip=ip)
    if ident is None or ident["uid"] != uid or not passwords.verify(ident["hash"], body.current_password):
        ratelimit.fail("reauth_session", sid)
        audit.record("password.change", actor=uid, outcome="bad_credentials", ip=ip)
        raise Problem(
            403,
            "The current password is not correct.",
            slug="wrong-password",
            errors=[{"field": "current_password", "message": "not correct"}],
        )
    _policy(body.new_password, email, "new_password")
    users.set_password_hash(email, passwords.hash_password(body.new_password))
    users.update(uid, password_changed_at=clock.now())  # ends every outstanding reset link
    revoked = sessions.revoke_all(uid, "password_change", except_sid=sid) if body.sign_out_others else 0
    mail.send(email, "password_changed", _link("reset-password"))
    audit.record("password.change", actor=uid, ip=ip, sessions_revoked=revoked)
    others = f" {revoked} other device(s) were signed out." if body.sign_out_others else ""
    return wire.Accepted(detail=f"Your password is changed.{others}")


# --- refresh and sign-out ------------------------------------------------------------------------


def refresh(cookie: str | None, *, ip: str, user_agent: str) -> SignedIn | None:
    """A new access token and the rotated cookie; None when there is no cookie (signed out: the lab
    shows the sign-in screen, no error)."""
    if not cookie:
        return None
    try:
        session, token = sessions.rotate(cookie, user_agent=user_agent, ip=ip)
    except sessions.RefreshRefused as exc:
        log.info("refresh refused", reason=exc.reason, sid=exc.sid)
        raise Problem(
            401,
            "Your session has ended. Sign in again.",
            slug="session-ended",
            headers={"Set-Cookie": sessions.clear_cookie_header()},
        ) from None
    access = tokens.issue_access_token(session.uid, session.id)
    return SignedIn(access, sessions.cookie_header(token, session.not_after))


def logout(cookie: str | None, scope: str, *, ip: str) -> bool:
    """Sign out this device, the others, or everywhere. True when this device's cookie should be
    cleared (every scope but `others`)."""
    if not cookie:
        return True  # already signed out on this device
    current = sessions.find_by_token(cookie)
    if current is None:
        if scope == "local":  # what was asked is already true: say so quietly and drop the dead cookie
            return True
        raise Problem(
            401,
            "This device is already signed out.",
            slug="session-ended",
            headers={"Set-Cookie": sessions.clear_cookie_header()},
        )
    uid, sid = current["uid"], current["id"]
    if scope == "local":
        sessions.revoke(sid, "logout")
        count = 1
    elif scope == "others":
        count = sessions.revoke_all(uid, "logout_others", except_sid=sid)
    else:
        count = sessions.revoke_all(uid, "logout_global")
        users.update(uid, tokens_valid_after=clock.now())
    audit.record("signout", actor=uid, target=f"session:{sid}", ip=ip, scope=scope, sessions_revoked=count)
    return scope != "others"
