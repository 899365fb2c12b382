"""POST /auth/refresh: rotate the refresh cookie and mint a new access token."""

import flask
import functions_framework

from mllab import auth, http

router = http.Router("auth_refresh")
router.route("POST", "/auth/refresh")(auth.refresh)


@functions_framework.http
def auth_refresh(request: flask.Request) -> flask.Response:
    return router(request)
