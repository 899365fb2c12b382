"""Email + password accounts: register, sign in, verify, reset and change passwords."""

import flask
import functions_framework
from werkzeug.wrappers import Response as RawResponse

from mllab.api import http
from mllab.identity import auth
from mllab.platform import wire

router = http.Router("auth_password")


@router.route("POST", "/auth/register")
def register(request: http.Request) -> wire.Accepted:
    return auth.register(request.body, ip=request.client_ip)


@router.route("POST", "/auth/login")
def login(request: http.Request) -> http.Response:
    result = auth.login(request.body, ip=request.client_ip, user_agent=request.user_agent)
    return http.with_cookie(result.body(), result.cookie)


@router.route("POST", "/auth/verify-email")
def verify_email(request: http.Request) -> wire.Accepted:
    return auth.verify_email(request.body.token, ip=request.client_ip)


@router.route("POST", "/auth/verify-email/resend")
def resend_verification(request: http.Request) -> wire.Accepted:
    return auth.resend_verification(request.body.email)


@router.route("POST", "/auth/password-reset")
def request_reset(request: http.Request) -> wire.Accepted:
    return auth.request_reset(request.body.email, ip=request.client_ip)


@router.route("POST", "/auth/password-reset/confirm")
def confirm_reset(request: http.Request) -> wire.Accepted:
    return auth.confirm_reset(request.body, ip=request.client_ip)


@router.route("POST", "/auth/password-change")
def change_password(request: http.Request) -> wire.Accepted:
    return auth.change_password(request.user or {}, request.sid, request.body, ip=request.client_ip)


@functions_framework.http
def auth_password(request: flask.Request) -> RawResponse:
    return router(request)
