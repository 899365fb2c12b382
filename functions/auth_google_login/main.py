"""GET /auth/google/login?return_to=/path[&link=1]: start Google sign-in (docs/security.md).

Stores a fresh `oauth_tx` (state hash, nonce, PKCE verifier, return_to), binds it to this browser with
`__Host-oauth_tx` (SameSite=Lax, 10 minutes) and redirects to the provider's authorization endpoint.
An invalid `return_to` is a 400 problem; the logic lives in mllab.identity.oauth. With `link=1` the browser's
refresh cookie must belong to a live session signed in with a password: Google is then added to that
account (and only for the Google account of the same address).
"""

import flask
import functions_framework
from werkzeug.wrappers import Response as RawResponse

from mllab.api import http
from mllab.identity import oauth, sessions

router = http.Router("auth_google_login")


@router.route("GET", "/auth/google/login")
def login(request: http.Request) -> http.Response:
    values = request.args.getlist("return_to")
    if len(values) > 1:
        raise oauth.BadReturnTo()
    return_to = oauth.validate_return_to(values[0] if values else None)
    link_uid = oauth.link_requester(request.cookies.get(sessions.COOKIE)) if request.args.get("link") == "1" else None
    tx_id, url = oauth.begin(return_to, link_uid)
    return http.Response(status=302, headers=[("Location", url), ("Set-Cookie", oauth.tx_cookie(tx_id))])


@functions_framework.http
def auth_google_login(request: flask.Request) -> RawResponse:
    return router(request)
