"""POST /auth/refresh: rotate the refresh cookie and mint a new access token."""

import flask
import functions_framework
from werkzeug.wrappers import Response as RawResponse

from mllab.api import http
from mllab.identity import auth, sessions

router = http.Router("auth_refresh")


@router.route("POST", "/auth/refresh")
def refresh(request: http.Request) -> http.Response:
    result = auth.refresh(request.cookies.get(sessions.COOKIE), ip=request.client_ip, user_agent=request.user_agent)
    if result is None:
        return http.Response(status=204)  # signed out: the lab shows the sign-in screen, no error
    return http.with_cookie(result.body(), result.cookie)


@functions_framework.http
def auth_refresh(request: flask.Request) -> RawResponse:
    return router(request)
