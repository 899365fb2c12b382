"""POST /auth/logout: sign out this device, the others, or everywhere."""

import flask
import functions_framework
from werkzeug.wrappers import Response as RawResponse

from mllab.api import http
from mllab.identity import auth, sessions

router = http.Router("auth_logout")


@router.route("POST", "/auth/logout")
def logout(request: http.Request) -> http.Response:
    clear = auth.logout(request.cookies.get(sessions.COOKIE), request.body.scope, ip=request.client_ip)
    return http.Response(status=204, headers=[("Set-Cookie", sessions.clear_cookie_header())] if clear else [])


@functions_framework.http
def auth_logout(request: flask.Request) -> RawResponse:
    return router(request)
