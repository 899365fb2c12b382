"""Email + password accounts, refresh and sign-out: the logic behind auth_password, auth_refresh
and auth_logout.

Nothing here reveals whether an email is registered: registration, resend and reset answer the same
either way (the owner gets a mail instead), and an unknown email costs the same Argon2 work as a
wrong password. Failures feed the brute-force counters; over budget is a 429 with Retry-After.
"""

from __future__ import annotations

from typing import Any

from mllab import audit, clock, config, log, mail, passwords, ratelimit, schemas, sessions, tokens, users
from mllab.http import Request, Response
from mllab.problems import Problem

BAD_CREDENTIALS = "Email or password is incorrect."
CHECK_INBOX = "Check your inbox: if the address can receive mail from us, a link is on its way."


def _link(fragment: str) -> str:
    # A fragment never reaches a server log: the lab reads it and POSTs the token.
    return f"{config.settings().lab_url.rstrip('/')}/#{fragment}"


def _signed_in(req: Request, uid: str, method: str, status: int = 200) -> Response:
    session, refresh = sessions.create(uid, method, user_agent=req.user_agent, ip=req.client_ip)
    access = tokens.issue_access_token(uid, session.id)
    audit.record("signin", actor=uid, target=f"session:{session.id}", ip=req.client_ip, method=method)
    body = schemas.AccessTokenResponse(access_token=access.token, expires_in=access.expires_in)
    return Response(body=body, status=status, headers=[("Set-Cookie", sessions.cookie_header(refresh, session.not_after))])


def _policy(password: str, email: str, field: str = "password") -> None:
    problem = passwords.policy_problem(password, email=email)
    if problem:
        raise Problem(422, problem, errors=[{"field": field, "message": problem}])


# --- registration and verification ---------------------------------------------------------------

def register(req: Request) -> schemas.Accepted:
    body: schemas.RegisterRequest = req.body
    email = users.normalize_email(body.email)
    ratelimit.check("register_ip", req.client_ip, ip=req.client_ip)
    _policy(body.password, email)
    password_hash = passwords.hash_password(body.password)  # hashed either way: equal cost
    existing = users.find_by_email(email)
    uid = None if existing else users.create_password_user(email, password_hash, name=body.name)
    if uid is None:
        ratelimit.fail("register_ip", req.client_ip)
        owner = existing or users.find_by_email(email)
        mail.send(email, "already_registered", _link("signin"))
        audit.record("register", actor=owner["uid"] if owner else None, outcome="exists", ip=req.client_ip)
    else:
        token = users.issue_email_token(uid, "verify", email, config.EMAIL_VERIFY_TTL_S)
        mail.send(email, "verify_email", _link(f"verify-email={token}"))
        audit.record("register", actor=uid, outcome="ok", ip=req.client_ip)
    return schemas.Accepted(detail=CHECK_INBOX)


def verify_email(req: Request) -> schemas.Accepted:
    doc = users.consume_email_token(req.body.token, "verify")
    user = users.get(doc["uid"])
    if not user or user.get("email") != doc["email"]:
        raise Problem(400, "This link is invalid, already used or expired. Ask for a new one.", slug="invalid-link")
    users.update(doc["uid"], email_verified=True)
    audit.record("email.verify", actor=doc["uid"], ip=req.client_ip)
    return schemas.Accepted(detail="Your email is confirmed. You can sign in now.")


def resend_verification(req: Request) -> schemas.Accepted:
    email = users.normalize_email(req.body.email)
    ratelimit.check("resend_account", email, ip=req.client_ip)
    ratelimit.fail("resend_account", email)  # every resend counts: it sends a mail
    ident = users.password_identity(email)
    user = users.get(ident["uid"]) if ident else None
    if user and not user.get("email_verified") and not user.get("disabled"):
        token = users.issue_email_token(user["uid"], "verify", email, config.EMAIL_VERIFY_TTL_S)
        mail.send(email, "verify_email", _link(f"verify-email={token}"))
    return schemas.Accepted(detail=CHECK_INBOX)


# --- sign-in -------------------------------------------------------------------------------------

def login(req: Request) -> Response:
    body: schemas.LoginRequest = req.body
    email = users.normalize_email(body.email)
    ip = req.client_ip
    ratelimit.check("login_account", email, ip=ip)
    ratelimit.check("login_ip", ip, ip=ip)
    ident = users.password_identity(email)
    if ident is None:
        passwords.dummy_verify(body.password)
        ok = False
    else:
        ok = passwords.verify(ident["hash"], body.password)
    if not ok:
        ratelimit.fail("login_account", email)
        ratelimit.fail("login_ip", ip)
        audit.record("signin", actor=ident["uid"] if ident else None, outcome="bad_credentials", ip=ip,
                     method="password")
        raise Problem(401, BAD_CREDENTIALS, slug="bad-credentials")
    user = users.get(ident["uid"])
    if not user or user.get("disabled") or user.get("deleted_at"):
        audit.record("signin", actor=ident["uid"], outcome="disabled", ip=ip, method="password")
        raise Problem(403, "This account is disabled. Contact support if you think this is a mistake.",
                      slug="account-disabled")
    if not user.get("email_verified"):
        raise Problem(403, "Confirm your email address first: open the link we mailed you. We can send the "
                           "link again (resend the verification mail).", slug="email-not-verified")
    if passwords.needs_rehash(ident["hash"]):
        users.set_password_hash(email, passwords.hash_password(body.password))
    return _signed_in(req, ident["uid"], "password")


# --- passwords -----------------------------------------------------------------------------------

def request_reset(req: Request) -> schemas.Accepted:
    email = users.normalize_email(req.body.email)
    ratelimit.check("reset_account", email, ip=req.client_ip)
    ratelimit.check("reset_ip", req.client_ip, ip=req.client_ip)
    ratelimit.fail("reset_account", email)  # every request mails: each one counts
    ratelimit.fail("reset_ip", req.client_ip)
    ident = users.password_identity(email)
    if ident:
        token = users.issue_email_token(ident["uid"], "reset", email, config.PASSWORD_RESET_TTL_S)
        mail.send(email, "password_reset", _link(f"reset-password={token}"))
        audit.record("password.reset_requested", actor=ident["uid"], ip=req.client_ip)
    return schemas.Accepted(detail=CHECK_INBOX)


def confirm_reset(req: Request) -> schemas.Accepted:
    body: schemas.PasswordResetConfirmRequest = req.body
    doc = users.consume_email_token(body.token, "reset")
    _policy(body.password, doc["email"])
    users.set_password_hash(doc["email"], passwords.hash_password(body.password))
    revoked = sessions.revoke_all(doc["uid"], "password_reset")
    # Controlling the mailbox proves the address; every old access token dies with its sessions.
    users.update(doc["uid"], email_verified=True, tokens_valid_after=clock.now())
    mail.send(doc["email"], "password_changed", _link("reset-password"))
    audit.record("password.reset", actor=doc["uid"], ip=req.client_ip, sessions_revoked=revoked)
    return schemas.Accepted(detail="Your password is changed and every device was signed out. Sign in again.")


def change_password(req: Request) -> schemas.Accepted:
    body: schemas.PasswordChangeRequest = req.body
    user: dict[str, Any] = req.user or {}
    email = user.get("email", "")
    ident = users.password_identity(email)
    ratelimit.check("login_account", email, ip=req.client_ip)
    if ident is None or ident["uid"] != req.uid or not passwords.verify(ident["hash"], body.current_password):
        ratelimit.fail("login_account", email)
        audit.record("password.change", actor=req.uid, outcome="bad_credentials", ip=req.client_ip)
        raise Problem(403, "The current password is not correct.", slug="wrong-password",
                      errors=[{"field": "current_password", "message": "not correct"}])
    _policy(body.new_password, email, "new_password")
    users.set_password_hash(email, passwords.hash_password(body.new_password))
    revoked = sessions.revoke_all(req.uid, "password_change", except_sid=req.claims["sid"]) if body.sign_out_others else 0
    mail.send(email, "password_changed", _link("reset-password"))
    audit.record("password.change", actor=req.uid, ip=req.client_ip, sessions_revoked=revoked)
    others = f" {revoked} other device(s) were signed out." if body.sign_out_others else ""
    return schemas.Accepted(detail=f"Your password is changed.{others}")


# --- refresh and sign-out ------------------------------------------------------------------------

def refresh(req: Request) -> Response:
    cookie = req.cookies.get(sessions.COOKIE)
    if not cookie:
        return Response(status=204)  # signed out: the lab shows the sign-in screen, no error
    try:
        session, token = sessions.rotate(cookie, user_agent=req.user_agent, ip=req.client_ip)
    except sessions.RefreshRefused as exc:
        log.info("refresh refused", reason=exc.reason, sid=exc.sid)
        raise Problem(401, "Your session has ended. Sign in again.", slug="session-ended",
                      headers={"Set-Cookie": sessions.clear_cookie_header()}) from None
    access = tokens.issue_access_token(session.uid, session.id)
    body = schemas.AccessTokenResponse(access_token=access.token, expires_in=access.expires_in)
    return Response(body=body, headers=[("Set-Cookie", sessions.cookie_header(token, session.not_after))])


def logout(req: Request) -> Response:
    scope = req.body.scope
    clear = [("Set-Cookie", sessions.clear_cookie_header())]
    cookie = req.cookies.get(sessions.COOKIE)
    if not cookie:
        return Response(status=204, headers=clear)  # already signed out on this device
    current = sessions.find_by_token(cookie)
    if current is None:
        if scope == "local":  # what was asked is already true: say so quietly and drop the dead cookie
            return Response(status=204, headers=clear)
        raise Problem(401, "This device is already signed out.", slug="session-ended",
                      headers={"Set-Cookie": sessions.clear_cookie_header()})
    uid, sid = current["uid"], current["id"]
    if scope == "local":
        sessions.revoke(sid, "logout")
        count = 1
    elif scope == "others":
        count = sessions.revoke_all(uid, "logout_others", except_sid=sid)
        clear = []
    else:
        count = sessions.revoke_all(uid, "logout_global")
        users.update(uid, tokens_valid_after=clock.now())
    audit.record("signout", actor=uid, target=f"session:{sid}", ip=req.client_ip, scope=scope, sessions_revoked=count)
    return Response(status=204, headers=clear)
