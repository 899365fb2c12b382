"""The operator CLI, run as the installed `mllab` console script against the Firestore emulator."""

from __future__ import annotations

import json
import os
import sys
from datetime import timedelta
from pathlib import Path

import pytest

from mllab import account
from mllab.identity import passwords, sessions, users
from mllab.platform import audit, clock
from mllab.platform.problems import Problem

MLLAB = Path(sys.executable).parent / "mllab"
SECRET = "a long operator-chosen passphrase 42"


def test_the_console_script_is_installed() -> None:
    assert MLLAB.is_file() and os.access(MLLAB, os.X_OK)


def test_user_create_reads_the_password_from_stdin_and_hashes_it(cli, unique: str) -> None:
    email = f"Op.Created+{unique}@Example.com"
    r = cli("user", "create", email, "--password-stdin", "--verified", "--name", "Operator Made", stdin=SECRET + "\n")
    assert r.returncode == 0, r.stderr
    assert SECRET not in r.stdout and SECRET not in r.stderr
    normalized = email.lower()
    assert normalized in r.stdout and "created" in r.stdout

    identity = users.password_identity(normalized)
    assert identity is not None and identity["kind"] == "password"
    assert identity["hash"].startswith("$argon2id$v=19$m=19456,t=2,p=1$")
    assert passwords.verify(identity["hash"], SECRET)  # the trailing newline is not part of it
    user = users.get(identity["uid"])
    assert (user["email"], user["name"], user["email_verified"], user["role"], user["disabled"]) == (
        normalized,
        "Operator Made",
        True,
        "user",
        False,
    )
    assert [e["action"] for e in audit.for_actor("operator")] == ["user.create"]


def test_user_create_json_and_admin_role(cli, unique: str) -> None:
    email = f"admin-{unique}@example.com"
    r = cli("user", "create", email, "--password-stdin", "--role", "admin", "--json", stdin=SECRET)
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    assert data["email"] == email and data["role"] == "admin" and data["verified"] is False
    assert users.get(data["uid"])["role"] == "admin"
    assert SECRET not in r.stdout + r.stderr


def test_user_create_refuses_an_existing_email(cli, new_user) -> None:
    u = new_user()
    r = cli("user", "create", u["email"].upper(), "--password-stdin", stdin=SECRET)
    assert r.returncode == 1
    assert "already exists" in r.stderr and SECRET not in r.stdout + r.stderr
    # a Google-only user with that address is found through the users' email field
    google_uid = users.create_google_user("https://accounts.google.com", "sub-1", "g-only@example.com", "G")
    r = cli("user", "create", "g-only@example.com", "--password-stdin", "--json", stdin=SECRET)
    assert r.returncode == 1 and "already exists" in json.loads(r.stdout)["error"]
    assert users.password_identity("g-only@example.com") is None
    assert users.get(google_uid)["providers"] == ["google"]


@pytest.mark.parametrize("password, why", [("password1234", "common"), ("short", "at least 8")])
def test_user_create_applies_the_password_policy(cli, unique: str, password: str, why: str) -> None:
    email = f"weak-{unique}@example.com"
    r = cli("user", "create", email, "--password-stdin", stdin=password + "\n")
    assert r.returncode == 1
    assert why in r.stderr and password not in r.stdout
    assert users.password_identity(email) is None


def test_user_create_usage_errors(cli, unique: str) -> None:
    r = cli("user", "create", "not-an-email", "--password-stdin", stdin=SECRET)
    assert r.returncode == 2 and "not a valid email" in r.stderr
    r = cli("user", "create", f"x-{unique}@example.com", stdin=SECRET)  # no --password-stdin, stdin not a tty
    assert r.returncode == 2 and "--password-stdin" in r.stderr
    assert users.password_identity(f"x-{unique}@example.com") is None
    r = cli("user", "create", f"y-{unique}@example.com", "--password-stdin", "--bogus", stdin=SECRET)
    assert r.returncode == 2
    assert cli("user").returncode == 2
    assert cli().returncode == 2


def test_user_list(cli, new_user) -> None:
    a = new_user(role="admin")
    b = new_user(verified=False)
    google_uid = users.create_google_user("https://accounts.google.com", "sub-2", "g-list@example.com", "G")
    r = cli("--json", "user", "list")
    assert r.returncode == 0, r.stderr
    rows = {row["email"]: row for row in json.loads(r.stdout)["users"]}
    assert set(rows) == {a["email"], b["email"], "g-list@example.com"}
    assert rows[a["email"]] | {"created": None} == {
        "email": a["email"],
        "uid": a["uid"],
        "role": "admin",
        "verified": True,
        "disabled": False,
        "providers": ["password"],
        "created": None,
        "deleted_at": None,
    }
    assert rows[a["email"]]["created"].endswith("Z")
    assert rows[b["email"]]["verified"] is False
    assert rows["g-list@example.com"]["uid"] == google_uid and rows["g-list@example.com"]["providers"] == ["google"]
    # --json after the command works too, and the table names every user
    assert json.loads(cli("user", "list", "--json").stdout) == json.loads(r.stdout)
    text = cli("user", "list")
    assert text.returncode == 0
    header = text.stdout.splitlines()[0].split()
    assert header == ["EMAIL", "UID", "ROLE", "VERIFIED", "DISABLED", "PROVIDERS", "CREATED"]
    assert a["email"] in text.stdout and a["uid"] in text.stdout and "g-list@example.com" in text.stdout


def test_user_disable_revokes_sessions_and_enable_restores(cli, new_user) -> None:
    u, bystander = new_user(), new_user()
    s1, _ = sessions.create(u["uid"], "password", user_agent="t", ip="203.0.113.9")
    sessions.create(u["uid"], "password", user_agent="t", ip="203.0.113.9")
    other, _ = sessions.create(bystander["uid"], "password", user_agent="t", ip="203.0.113.9")
    r = cli("user", "disable", u["email"], "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == {"uid": u["uid"], "email": u["email"], "disabled": True, "sessions_revoked": 2}
    doc = users.get(u["uid"])
    assert doc["disabled"] is True and doc["tokens_valid_after"] is not None
    assert sessions.for_user(u["uid"]) == []
    assert [s["id"] for s in sessions.for_user(bystander["uid"])] == [other.id]
    entry = next(e for e in audit.for_actor("operator") if e["action"] == "user.disable")
    assert entry["target"] == f"user:{u['uid']}" and entry["details"]["sessions_revoked"] == 2
    with pytest.raises(Problem):  # the revoked session's access token no longer passes
        sessions.check_live({"sub": u["uid"], "sid": s1.id, "iat": clock.timestamp()})

    r = cli("user", "enable", u["email"])
    assert r.returncode == 0, r.stderr
    assert "enabled" in r.stdout
    assert users.get(u["uid"])["disabled"] is False
    assert "user.enable" in [e["action"] for e in audit.for_actor("operator")]


def test_user_disable_and_enable_unknown_or_deleted(cli, new_user, unique: str) -> None:
    r = cli("user", "disable", f"nobody-{unique}@example.com")
    assert r.returncode == 1 and "no user" in r.stderr
    r = cli("user", "enable", f"nobody-{unique}@example.com", "--json")
    assert r.returncode == 1 and "no user" in json.loads(r.stdout)["error"]
    u = new_user()
    users.update(u["uid"], deleted_at=clock.now(), disabled=True)
    r = cli("user", "enable", u["email"])
    assert r.returncode == 1 and "deleted" in r.stderr
    assert users.get(u["uid"])["disabled"] is True


def test_sessions_revoke_prints_the_count(cli, new_user) -> None:
    u = new_user()
    for _ in range(3):
        sessions.create(u["uid"], "password", user_agent="t", ip="203.0.113.9")
    r = cli("sessions", "revoke", u["email"])
    assert r.returncode == 0, r.stderr
    assert f"revoked 3 sessions of {u['email']}" in r.stdout
    assert sessions.for_user(u["uid"]) == []
    assert users.get(u["uid"])["disabled"] is False  # signed out, not disabled
    r = cli("sessions", "revoke", u["email"], "--json")
    assert json.loads(r.stdout)["sessions_revoked"] == 0
    assert [e["action"] for e in audit.for_actor("operator")].count("sessions.revoke_all") == 2


def test_accounts_purge(cli, new_user) -> None:
    old, recent = new_user(), new_user()
    users.update(old["uid"], deleted_at=clock.now() - timedelta(days=31), disabled=True)
    users.update(recent["uid"], deleted_at=clock.now() - timedelta(days=29), disabled=True)
    r = cli("accounts", "purge", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == {"purged": 1}
    assert users.get(old["uid"]) is None and users.password_identity(old["email"]) is None
    assert users.get(recent["uid"]) is not None
    r = cli("accounts", "purge")
    assert r.returncode == 0 and "purged 0 accounts" in r.stdout
    assert account.purge(clock.now()) == 0
