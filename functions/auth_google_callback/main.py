"""GET /auth/google/callback?code&state: finish Google sign-in (docs/security.md).

The browser's `__Host-oauth_tx` transaction is checked against `state` and consumed once; the code is
exchanged (with the PKCE verifier), the ID token verified, the user found, linked or created, and a new
session started. Success is a 302 to the lab at the stored return_to with the refresh cookie set and
the transaction cookie cleared. Failures are problem+json: 400 for a missing, mismatched, replayed or
expired transaction (no session), 400/401 for a refused ID token, 409 when a confirmed password account
owns the email (or a requested link does not fit), 403 for a disabled account. A browser (it asks for
HTML) is sent back to the lab with `?signin_error=<slug>` for those, so the page explains what to do.

When the provider reports an error instead of a code (`?error=access_denied`, the person pressed
Cancel), the transaction is still checked and consumed, then the browser goes back to the lab at
`/?signin_error=<error>` so the page can say so.
"""

import flask
import functions_framework

from mllab import http, log, oauth, sessions
from mllab.problems import Problem

router = http.Router("auth_google_callback")


def _finish(request: http.Request) -> http.Response:
    args = request.args
    tx = oauth.consume(request.cookies.get(oauth.TX_COOKIE), args.get("state"))
    clear = ("Set-Cookie", oauth.clear_tx_cookie())
    error = oauth.provider_error(args)
    if error is not None:
        oauth.audit_signin("refused", uid=None, ip=request.client_ip, reason=f"provider:{error}")
        return http.Response(status=302, headers=[
            ("Location", oauth.lab_location(f"/?signin_error={error}")), clear])
    try:
        answer = oauth.exchange_code(args.get("code", ""), tx.code_verifier)
        token = oauth.verify_id_token(answer["id_token"], tx.nonce)
    except oauth.IdTokenError as exc:
        log.warning("google id token refused", reason=exc.reason)
        oauth.audit_signin("refused", uid=None, ip=request.client_ip, reason=f"id_token:{exc.reason}")
        raise exc.problem() from None
    try:
        resolved = oauth.resolve_user(token, tx.link_uid)
    except Problem as problem:
        oauth.audit_signin("refused", uid=None, ip=request.client_ip, reason=problem.slug,
                           google_iss=token.iss, google_sub=token.sub)
        raise
    session, refresh = sessions.create(resolved.uid, "google", user_agent=request.user_agent, ip=request.client_ip)
    oauth.audit_signin("ok", uid=resolved.uid, ip=request.client_ip, account=resolved.outcome, sid=session.id)
    return http.Response(status=302, headers=[
        ("Location", oauth.lab_location(tx.return_to)),
        ("Set-Cookie", sessions.cookie_header(refresh, session.not_after)),
        clear])


# Refusals a person can act on: a browser gets the lab page, which says what to do next.
TOLD_IN_THE_LAB = frozenset({"account-exists", "google-in-use", "google-email-mismatch", "account-disabled"})


@router.route("GET", "/auth/google/callback")
def callback(request: http.Request) -> http.Response:
    try:
        return _finish(request)
    except Problem as problem:
        if problem.slug in TOLD_IN_THE_LAB and "text/html" in request.headers.get("Accept", ""):
            return http.Response(status=302, headers=[
                ("Location", oauth.lab_location(f"/?signin_error={problem.slug.replace('-', '_')}")),
                ("Set-Cookie", oauth.clear_tx_cookie())])
        # Once the transaction is gone its cookie is useless: clear it on every later failure too.
        if not isinstance(problem, oauth.TxRefused) and "Set-Cookie" not in problem.headers:
            problem.headers["Set-Cookie"] = oauth.clear_tx_cookie()
        raise


@functions_framework.http
def auth_google_callback(request: flask.Request) -> flask.Response:
    return router(request)
