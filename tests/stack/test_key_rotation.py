"""`mllab keys rotate` against the running stack (docs/operations.md, runbook): a new key signs at once and its
tokens work through the gateway, tokens signed before keep working until they expire, the JWKS lists
both keys until a prune after the old key's last token expired. The stack's key files are put back
afterwards; no function process signs during the test, so none can hold the rotated key."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime

import httpx
import jwt
import pytest

from mllab.identity import sessions, tokens, users
from mllab.ops import keys
from mllab.platform import clock, config
from mllab_dev.stack import Stack


@pytest.fixture
def restore_keys(stack: Stack) -> Iterator[None]:
    directory = config.local_secrets_dir()
    assert directory == stack.dev_dir / "secrets"
    saved = {name: (directory / name).read_text() for name in (config.SIGNING_KEYS, config.PUBLIC_KEYS)}
    tokens.reset_caches()
    yield
    for name in (config.PUBLIC_KEYS, config.SIGNING_KEYS):
        keys.replace_file(directory / name, saved[name])
    tokens.reset_caches()


def _session() -> tuple[str, str]:
    uid = users.create_google_user(
        "https://accounts.google.com", uuid.uuid4().hex, f"keys-{uuid.uuid4().hex[:8]}@example.com", "Keys"
    )
    session, _ = sessions.create(uid, "google", user_agent="keys", ip="203.0.113.9")
    return uid, session.id


def _me(gateway: httpx.Client, token: str) -> httpx.Response:
    return gateway.get("/me", headers={"Authorization": f"Bearer {token}"})


def _me_eventually(gateway: httpx.Client, token: str) -> httpx.Response:
    """A verifier re-reads the public set on an unknown kid at most every RELOAD_INTERVAL_S: one that
    loaded it just before the rotation accepts the new kid within that interval."""
    deadline = time.monotonic() + tokens.RELOAD_INTERVAL_S + 15
    while True:
        r = _me(gateway, token)
        if r.status_code != 401 or time.monotonic() > deadline:
            return r
        time.sleep(0.5)


def _at(timestamp: int) -> datetime:
    return datetime.fromtimestamp(timestamp, UTC)


def _jwks_kids(gateway: httpx.Client) -> list[str]:
    r = gateway.get("/.well-known/jwks.json")
    assert r.status_code == 200, r.text
    return [k["kid"] for k in r.json()["keys"]]


def test_rotate_then_prune_through_the_stack(stack: Stack, gateway: httpx.Client, cli, restore_keys: None) -> None:
    uid, sid = _session()
    old = tokens.issue_access_token(uid, sid)
    old_kid = jwt.get_unverified_header(old.token)["kid"]
    assert old_kid in _jwks_kids(gateway)

    done = cli("keys", "rotate", "--json")
    assert done.returncode == 0, done.stderr
    rotated = json.loads(done.stdout)
    new_kid = rotated["signing"]["kid"]
    assert new_kid != old_kid and [k["kid"] for k in rotated["retired"]] == [old_kid]
    assert rotated["where"] == str(stack.dev_dir / "secrets")
    listed = cli("keys", "list")
    assert listed.returncode == 0 and new_kid in listed.stdout and "signing" in listed.stdout
    private = json.loads((stack.dev_dir / "secrets" / config.SIGNING_KEYS).read_text())
    material = {k[m] for k in private["keys"] for m in ("d", "x", "y")}
    assert len(material) == 6
    for out in (done, listed):
        assert not [v for v in material if v in out.stdout + out.stderr]

    # a new token carries the new kid and works through the gateway; the old one still does
    tokens.reset_caches()  # this process signs like a fresh instance
    new = tokens.issue_access_token(uid, sid)
    assert jwt.get_unverified_header(new.token)["kid"] == new_kid
    r = _me_eventually(gateway, new.token)
    assert r.status_code == 200 and r.json()["uid"] == uid, r.text
    r = _me(gateway, old.token)
    assert r.status_code == 200 and r.json()["uid"] == uid, r.text
    assert _jwks_kids(gateway) == [old_kid, new_kid]

    # the old token verifies until it expires (this process's clock moves; the functions' does not)
    with clock.travel(to=_at(old.claims["exp"] - 1), freeze=True):
        assert tokens.verify_access_token(old.token)["sub"] == uid
    with clock.travel(to=_at(old.claims["exp"]), freeze=True), pytest.raises(tokens.TokenError, match="expired"):
        tokens.verify_access_token(old.token)

    # the old public key goes only once no token it signed can still be valid
    retired_at = private["keys"][0]["retired_at"]
    with clock.travel(to=_at(retired_at + tokens.retired_grace_s() - 1), freeze=True):
        assert keys.prune(keys.LocalStore())["dropped"] == []
    assert _jwks_kids(gateway) == [old_kid, new_kid]
    with clock.travel(to=_at(retired_at + tokens.retired_grace_s()), freeze=True):
        pruned = keys.prune(keys.LocalStore())
    assert [k["kid"] for k in pruned["dropped"]] == [old_kid]
    assert _jwks_kids(gateway) == [new_kid]
    r = _me(gateway, new.token)
    assert r.status_code == 200, r.text
