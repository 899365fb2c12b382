"""Shared by the identity tests: Google sign-in played by hand against the OIDC stand-in, and the
mails the local stack delivered to `.dev/mail/`.

The tx cookie is `__Host-` and Secure, which a cookie jar will not send over http, so each helper
carries it in a Cookie header itself (as the Browser fixture does for the refresh cookie)."""

from __future__ import annotations

import contextlib
import re
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx

from mllab.identity import users
from mllab.platform import clients, mail
from mllab_dev.stack import Stack

from .conftest import Browser

# Every cookie-authenticated route with a body it accepts (the CSRF matrix runs over these; a test keeps
# the list equal to the route table's).
COOKIE_ROUTES = [
    ("/auth/login", {"email": "a@example.com", "password": "whatever123"}),
    ("/auth/register", {"email": "a@example.com", "password": "whatever123"}),
    ("/auth/refresh", None),
    ("/auth/logout", {"scope": "local"}),
]
TX_COOKIE = re.compile(r"^__Host-oauth_tx=([A-Za-z0-9_-]{43}); Path=/; Secure; HttpOnly; SameSite=Lax; Max-Age=600$")


@dataclass
class Attempt:
    tx_id: str
    state: str
    nonce: str
    authorize_url: str
    callback: str = ""  # path + query the provider redirected to
    code: str = ""


def db() -> Any:
    return clients.firestore()


def docs(collection: str) -> list[dict[str, Any]]:
    return [{**s.to_dict(), "_id": s.id} for s in db().collection(collection).stream()]


def set_cookies(r: httpx.Response) -> list[str]:
    return r.headers.get_list("set-cookie")


def oidc_url(stack: Stack) -> str:
    return f"http://127.0.0.1:{stack.ports.oidc}"


def put_identity(stack: Stack, sub: str, **claims: Any) -> None:
    r = httpx.put(f"{oidc_url(stack)}/users/{sub}", json=claims, timeout=10)
    assert r.status_code == 204, r.text


def start(browser: Browser, return_to: str = "/lab", *, link: bool = False) -> Attempt:
    """GET /auth/google/login; with `link`, from the browser's signed-in session (its refresh cookie)."""
    params = {"return_to": return_to, **({"link": "1"} if link else {})}
    headers = {"Cookie": f"__Host-rt={browser.refresh_cookie}"} if link and browser.refresh_cookie else {}
    r = browser.client.get("/auth/google/login", params=params, headers=headers)
    assert r.status_code == 302, r.text
    (cookie,) = set_cookies(r)
    m = TX_COOKIE.fullmatch(cookie)
    assert m, cookie
    location = r.headers["location"]
    q = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(location).query))
    return Attempt(tx_id=m.group(1), state=q["state"], nonce=q["nonce"], authorize_url=location)


def authorize(attempt: Attempt, sub: str, *, action: str | None = None) -> Attempt:
    """What the person does on the provider's page: pick an identity (or deny)."""
    r = httpx.get(attempt.authorize_url, timeout=10)
    assert r.status_code == 200 and "<form" in r.text, r.text[:300]
    form = {"action": action} if action else {"sub": sub}
    r = httpx.post(attempt.authorize_url, data=form, timeout=10)
    assert r.status_code == 302, r.text[:300]
    target = urllib.parse.urlsplit(r.headers["location"])
    attempt.callback = f"{target.path}?{target.query}"
    attempt.code = dict(urllib.parse.parse_qsl(target.query)).get("code", "")
    return attempt


def callback(
    browser: Browser, attempt: Attempt, *, cookie: str | None = "tx", path: str | None = None
) -> httpx.Response:
    headers = {"Cookie": f"__Host-oauth_tx={attempt.tx_id if cookie == 'tx' else cookie}"} if cookie else {}
    return browser.request("GET", path or attempt.callback, auth=False, cookie=False, headers=headers)


def sign_in(browser: Browser, sub: str, return_to: str = "/lab") -> tuple[Attempt, httpx.Response]:
    attempt = authorize(start(browser, return_to), sub)
    return attempt, callback(browser, attempt)


def problem(r: httpx.Response, status: int) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/problem+json"
    return r.json()


def sessions_of(uid: str | None = None) -> list[dict[str, Any]]:
    return [s for s in docs("sessions") if uid is None or s["uid"] == uid]


def google_identity(sub: str, stack: Stack) -> dict[str, Any] | None:
    return users.identity(users.google_identity_id(oidc_url(stack), sub))


def mails(to: str, template: str) -> list[dict]:
    """The messages the stack delivered to `to` with this template, oldest first."""
    return [m for m in mail.dev_messages() if m["to"] == to and m["template"] == template]


def token_from(message: dict, marker: str) -> str:
    """The one-time token a mail's link carries after `marker=`."""
    m = re.search(marker + r"=([A-Za-z0-9_-]+)", message["body"])
    assert m, message["body"]
    return m.group(1)


@contextlib.contextmanager
def firestore_rpcs() -> Iterator[list[str]]:
    """The names of the Firestore RPCs this process's client sends meanwhile ("begin_transaction",
    "batch_get_documents", "commit", ...), in order: every RPC goes through the transport's wrapped
    methods (as mllab.platform.clients bounds them), which are wrapped once more and put back after."""
    transport = clients.firestore()._firestore_api._transport
    saved = dict(transport._wrapped_methods)
    # the keys are gRPC callables, each returned by the transport's property of the RPC's name
    names = {getattr(transport, n): n for n in dir(type(transport)) if _is_rpc(type(transport), n)}
    sent: list[str] = []

    def counted(name: str, wrapped: Any) -> Any:
        def call(*args: Any, **kwargs: Any) -> Any:
            sent.append(name)
            return wrapped(*args, **kwargs)

        return call

    for method, wrapped in saved.items():
        transport._wrapped_methods[method] = counted(names.get(method, repr(method)), wrapped)
    try:
        yield sent
    finally:
        transport._wrapped_methods.clear()
        transport._wrapped_methods.update(saved)


def _is_rpc(cls: type, name: str) -> bool:
    return not name.startswith("_") and isinstance(getattr(cls, name, None), property) and name != "kind"
