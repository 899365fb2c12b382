"""GET /auth/google/callback?code&state: finish Google sign-in (docs/security.md).

mllab.identity.oauth.finish checks and consumes the browser's transaction, exchanges the code, verifies the ID
token and starts a session. Success is a 302 to the lab at the stored return_to with the refresh cookie
set and the transaction cookie cleared. Failures are problem+json: 400 for a missing, mismatched,
replayed or expired transaction (no session), 400/401 for a refused ID token, 409 when a confirmed
password account owns the email (or a requested link does not fit), 403 for a disabled account. A
browser (it asks for HTML) is sent back to the lab with `?signin_error=<slug>` for those, so the page
explains what to do. When the provider reports an error instead of a code (the person pressed Cancel),
the browser goes back to the lab at `/?signin_error=<error>`.
"""

import flask
import functions_framework
from werkzeug.wrappers import Response as RawResponse

from mllab.api import http
from mllab.identity import oauth
from mllab.platform.problems import Problem

router = http.Router("auth_google_callback")

# Refusals a person can act on: a browser gets the lab page, which says what to do next.
TOLD_IN_THE_LAB = frozenset({"account-exists", "google-in-use", "google-email-mismatch", "account-disabled"})


@router.route("GET", "/auth/google/callback")
def callback(request: http.Request) -> http.Response:
    clear = ("Set-Cookie", oauth.clear_tx_cookie())
    try:
        done = oauth.finish(
            request.cookies.get(oauth.TX_COOKIE), request.args, ip=request.client_ip, user_agent=request.user_agent
        )
    except Problem as problem:
        if problem.slug in TOLD_IN_THE_LAB and "text/html" in request.headers.get("Accept", ""):
            location = oauth.lab_location(f"/?signin_error={problem.slug.replace('-', '_')}")
            return http.Response(status=302, headers=[("Location", location), clear])
        # Once the transaction is gone its cookie is useless: clear it on every later failure too.
        if not isinstance(problem, oauth.TxRefused) and "Set-Cookie" not in problem.headers:
            problem.headers["Set-Cookie"] = oauth.clear_tx_cookie()
        raise
    cookies = [("Set-Cookie", done.refresh_cookie)] if done.refresh_cookie else []
    return http.Response(status=302, headers=[("Location", done.location), *cookies, clear])


@functions_framework.http
def auth_google_callback(request: flask.Request) -> RawResponse:
    return router(request)
