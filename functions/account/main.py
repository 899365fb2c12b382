"""The signed-in user's account: GET /me, GET /sessions, DELETE /sessions/{id}, GET /account/export,
DELETE /account. Liveness and CSRF are enforced by the router from the route table."""

import flask
import functions_framework
from werkzeug.wrappers import Response as RawResponse

from mllab import account as account_lib  # the entry point below takes the name `account`
from mllab.api import http
from mllab.identity import schemas

router = http.Router("account")


@router.route("GET", "/me", reads=account_lib.me_reads)
def get_me(request: http.Request) -> account_lib.Me:
    return account_lib.me(request.live_user, request.sid, request.documents)


@router.route("GET", "/sessions")
def list_sessions(request: http.Request) -> schemas.SessionList:
    return account_lib.session_list(request.uid, request.sid)


@router.route("DELETE", "/sessions/{id}")
def revoke_session(request: http.Request) -> None:
    account_lib.revoke_session(request.uid, request.params["id"], ip=request.client_ip)


@router.route("GET", "/account/export")
def export_account(request: http.Request) -> http.Response:
    data = account_lib.export(request.uid)
    name = f"mllab-export-{data.exported_at[:10]}.json"
    return http.Response(data, headers=[("Content-Disposition", f'attachment; filename="{name}"')])


@router.route("DELETE", "/account")
def delete_account(request: http.Request) -> None:
    account_lib.delete_account(request.live_user, request.sid, password=request.body.password, ip=request.client_ip)


@functions_framework.http
def account(request: flask.Request) -> RawResponse:
    return router(request)
