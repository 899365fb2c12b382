"""POST /auth/logout: sign out this device, the others, or everywhere."""

import flask
import functions_framework

from mllab import auth, http

router = http.Router("auth_logout")
router.route("POST", "/auth/logout")(auth.logout)


@functions_framework.http
def auth_logout(request: flask.Request) -> flask.Response:
    return router(request)
