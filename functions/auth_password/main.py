"""Email + password accounts: register, sign in, verify, reset and change passwords."""

import flask
import functions_framework

from mllab import auth, http

router = http.Router("auth_password")
router.route("POST", "/auth/register")(auth.register)
router.route("POST", "/auth/login")(auth.login)
router.route("POST", "/auth/verify-email")(auth.verify_email)
router.route("POST", "/auth/verify-email/resend")(auth.resend_verification)
router.route("POST", "/auth/password-reset")(auth.request_reset)
router.route("POST", "/auth/password-reset/confirm")(auth.confirm_reset)
router.route("POST", "/auth/password-change")(auth.change_password)


@functions_framework.http
def auth_password(request: flask.Request) -> flask.Response:
    return router(request)
