"""Every HTTP route of the route table, called with the credentials of a session that has ended: signed
out here, signed out everywhere, a deleted user, a disabled user. A route that needs an access token
answers 401 session-ended before it reads or signs anything; a public route answers exactly what it
answers with no credentials at all (a dead credential is worth no more than none)."""

from __future__ import annotations

import uuid
from collections.abc import Callable

import pytest

from mllab.api import routes
from mllab.api.routes import Auth
from mllab.identity import users
from mllab_dev.stack import Stack

from .conftest import PASSWORD, Browser


def end_local(b: Browser) -> None:
    assert b.request("POST", "/auth/logout", json_body={"scope": "local"}).status_code == 204


def end_global(b: Browser) -> None:
    cookie = b.refresh_cookie
    assert b.request("POST", "/auth/logout", json_body={"scope": "global"}).status_code == 204
    b.refresh_cookie = cookie  # an attacker kept a copy of the cookie, too


def delete_account(b: Browser) -> None:
    cookie = b.refresh_cookie
    assert b.request("DELETE", "/account", json_body={"password": PASSWORD}).status_code == 204
    b.refresh_cookie = cookie


def disable(b: Browser) -> None:
    users.update(b.uid, disabled=True)  # type: ignore[attr-defined]  # what `mllab user disable` writes


ENDINGS: dict[str, Callable[[Browser], None]] = {
    "signed out on this device": end_local,
    "signed out everywhere": end_global,
    "deleted": delete_account,
    "disabled": disable,
}


def concrete(path: str, ids: dict[str, str]) -> str:
    """The route's path with `{id}` as one of the user's own ids where the test has one."""
    return path.replace("{id}", ids.get(path.split("/")[1], uuid.uuid4().hex))


def call(b: Browser, route: routes.Route, path: str, *, auth: bool, cookie: bool):
    body = {} if route.method in ("POST", "PATCH", "DELETE") and route.request is not None else None
    query = {"object": f"users/{getattr(b, 'uid', 'x' * 32)}/x"} if route.path == "/signed/download" else None
    return b.request(route.method, path, json_body=body, auth=auth, cookie=cookie, params=query)


@pytest.mark.parametrize("ending", list(ENDINGS))
def test_every_route_refuses_a_session_that_has_ended(stack: Stack, member, ending: str) -> None:
    b = member()
    project = b.request("POST", "/projects", json_body={"name": "kept"})
    ids = {"projects": project.json()["id"]} if project.status_code == 201 else {}
    ids["sessions"] = b.request("GET", "/sessions").json()["items"][0]["id"]
    assert b.request("GET", "/me").status_code == 200
    ENDINGS[ending](b)

    anonymous = Browser(stack.gateway_url)
    checked = 0
    for route in routes.ROUTES:
        path = concrete(route.path, ids)
        r = call(b, route, path, auth=True, cookie=True)
        where = f"{route.method} {route.path} ({ending})"
        if route.auth is Auth.ACCESS_TOKEN:
            assert r.status_code == 401, f"{where}: {r.status_code} {r.text[:200]}"
            assert r.json()["type"].endswith("session-ended"), where
        elif route.auth is Auth.REFRESH_COOKIE:
            assert r.status_code in (204, 401), f"{where}: {r.status_code}"
            assert "access_token" not in r.text and not b.refresh_cookie, where
        else:
            none = call(anonymous, route, path, auth=False, cookie=False)
            assert (r.status_code, r.headers.get("content-type")) == (
                none.status_code,
                none.headers.get("content-type"),
            ), where
        checked += 1
    assert checked == len(routes.ROUTES)
