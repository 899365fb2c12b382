"""The account function (/me, /sessions, /account/export, DELETE /account) through the gateway, and
the purge job (in-process with a moved clock, and through Pub/Sub into the real function)."""

from __future__ import annotations

import json
import time
from datetime import timedelta

import httpx
import pytest

from mllab import account
from mllab.identity import passwords, sessions, tokens, users
from mllab.platform import audit, clients, clock, config
from mllab.platform.problems import Problem
from mllab_dev.stack import PROJECT, PURGE_TOPIC, Stack

from .billing_support import FREE_SUBSCRIPTION
from .conftest import PASSWORD, Browser, function_log, wait_for_log
from .limits_support import artifact, bucket, metrics, naming, ok, signed_in, upload, wait

ME_KEYS = {
    "uid",
    "email",
    "name",
    "role",
    "email_verified",
    "providers",
    "subscription",
    "usage",
    "predictions",
    "csrf",
}


def sign_in(uid: str, user_agent: str = "pytest-device/1.0", ip: str = "203.0.113.7") -> dict:
    """A live session and its access token, as /auth/login would make them (without HTTP)."""
    session, refresh = sessions.create(uid, "password", user_agent=user_agent, ip=ip)
    access = tokens.issue_access_token(uid, session.id)
    return {
        "sid": session.id,
        "access": access.token,
        "claims": access.claims,
        "refresh": refresh,
        "csrf": sessions.csrf_token(session.id),
    }


def headers(s: dict, *, csrf: str | None = None) -> dict:
    return {"Authorization": f"Bearer {s['access']}", "X-CSRF-Token": s["csrf"] if csrf is None else csrf}


def user_doc(uid: str) -> dict | None:
    snap = clients.firestore().collection("users").document(uid).get()
    return snap.to_dict() if snap.exists else None


def audit_actions(actor: str) -> list[str]:
    return [e["action"] for e in audit.for_actor(actor)]


def assert_problem(r: httpx.Response, status: int) -> dict:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    body = r.json()
    assert body["status"] == status and body["detail"] and body["request_id"]
    return body


# --- /me and /sessions ---------------------------------------------------------------------------


def test_me_answers_the_user_plan_usage_and_session_csrf(gateway: httpx.Client, new_user) -> None:
    u = new_user(name="Ada")
    s = sign_in(u["uid"])
    r = gateway.get("/me", headers={"Authorization": f"Bearer {s['access']}"})
    assert r.status_code == 200, r.text
    assert r.headers["cache-control"] == "no-store"
    me = r.json()
    assert set(me) == ME_KEYS
    assert (me["uid"], me["email"], me["name"], me["role"], me["email_verified"], me["providers"]) == (
        u["uid"],
        u["email"],
        "Ada",
        "user",
        True,
        ["password"],
    )
    assert me["subscription"] == FREE_SUBSCRIPTION  # a free user would be charged at approval
    assert me["usage"] == {"storage_bytes": 0, "storage_limit_bytes": 0, "uploads_today": 0, "uploads_limit": 0}
    assert me["predictions"] == {"month": clock.now().strftime("%Y-%m"), "predictions": 0, "limit": 0}  # free: none
    assert me["csrf"] == s["csrf"] and sessions.csrf_ok(s["sid"], me["csrf"])
    other = sign_in(u["uid"])
    assert not sessions.csrf_ok(other["sid"], me["csrf"])  # bound to the session


def test_me_without_or_with_a_bad_token_is_401(gateway: httpx.Client) -> None:
    assert_problem(gateway.get("/me"), 401)
    assert_problem(gateway.get("/me", headers={"Authorization": "Bearer not.a.jwt"}), 401)


def test_sessions_lists_the_users_sessions_and_marks_the_current_one(gateway: httpx.Client, new_user) -> None:
    u, stranger = new_user(), new_user()
    a = sign_in(u["uid"], user_agent="laptop/1", ip="198.51.100.1")
    b = sign_in(u["uid"], user_agent="phone/2", ip="198.51.100.2")
    sign_in(stranger["uid"])
    revoked = sign_in(u["uid"])
    sessions.revoke(revoked["sid"], "test")

    for me, other in ((a, b), (b, a)):
        r = gateway.get("/sessions", headers={"Authorization": f"Bearer {me['access']}"})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["next_cursor"] is None
        items = {item["id"]: item for item in body["items"]}
        assert set(items) == {a["sid"], b["sid"]}
        assert items[me["sid"]]["current"] is True and items[other["sid"]]["current"] is False
    item = items[b["sid"]]
    assert (item["method"], item["user_agent"], item["ip"]) == ("password", "phone/2", "198.51.100.2")
    created = item["created_at"]
    assert created.endswith("Z") and item["refreshed_at"].endswith("Z") and item["expires_at"].endswith("Z")
    assert clock.now() - timedelta(minutes=1) < _parse(created) <= clock.now()
    # the idle limit (7 days) ends a fresh session before the absolute one (30 days)
    assert abs(
        _parse(item["expires_at"]) - _parse(created) - timedelta(seconds=config.LIMITS.refresh_idle_s)
    ) < timedelta(seconds=1)


def _parse(text: str):
    from datetime import datetime

    return datetime.fromisoformat(text.replace("Z", "+00:00"))


# --- DELETE /sessions/{id} -----------------------------------------------------------------------


def test_revoking_another_users_session_is_404_and_changes_nothing(gateway: httpx.Client, new_user) -> None:
    u, victim = new_user(), new_user()
    s = sign_in(u["uid"])
    v = sign_in(victim["uid"])
    before = clients.firestore().collection("sessions").document(v["sid"]).get().to_dict()

    body = assert_problem(gateway.delete(f"/sessions/{v['sid']}", headers=headers(s)), 404)
    assert victim["email"] not in json.dumps(body)
    assert clients.firestore().collection("sessions").document(v["sid"]).get().to_dict() == before
    assert sessions.check_live(v["claims"])["uid"] == victim["uid"]
    assert gateway.get("/me", headers={"Authorization": f"Bearer {v['access']}"}).status_code == 200
    # unknown and malformed ids answer the same
    assert_problem(gateway.delete(f"/sessions/{'0' * 32}", headers=headers(s)), 404)
    assert_problem(gateway.delete("/sessions/__bad__", headers=headers(s)), 404)
    assert "session.revoke" not in audit_actions(u["uid"])


def test_revoking_own_other_session_ends_it(gateway: httpx.Client, new_user) -> None:
    u = new_user()
    a, b = sign_in(u["uid"]), sign_in(u["uid"])
    assert gateway.get("/me", headers={"Authorization": f"Bearer {b['access']}"}).status_code == 200

    r = gateway.delete(f"/sessions/{b['sid']}", headers=headers(a))
    assert r.status_code == 204, r.text
    assert r.content == b""

    assert_problem(gateway.get("/me", headers={"Authorization": f"Bearer {b['access']}"}), 401)
    with pytest.raises(Problem) as exc:
        sessions.check_live(b["claims"])
    assert exc.value.status == 401
    with pytest.raises(sessions.RefreshRefused) as refused:
        sessions.rotate(b["refresh"], user_agent="x", ip="203.0.113.7")
    assert refused.value.reason == "revoked"
    # the caller's own session is untouched; the revoked one is gone from the list
    listed = gateway.get("/sessions", headers={"Authorization": f"Bearer {a['access']}"}).json()["items"]
    assert [i["id"] for i in listed] == [a["sid"]]
    # already revoked: 404
    assert_problem(gateway.delete(f"/sessions/{b['sid']}", headers=headers(a)), 404)
    entries = [e for e in audit.for_actor(u["uid"]) if e["action"] == "session.revoke"]
    assert [e["target"] for e in entries] == [f"session:{b['sid']}"]


def test_mutations_need_the_sessions_csrf_token(gateway: httpx.Client, new_user) -> None:
    u = new_user()
    a, b = sign_in(u["uid"]), sign_in(u["uid"])
    for csrf in ("", "1", b["csrf"], a["csrf"] + "x"):
        body = assert_problem(gateway.delete(f"/sessions/{b['sid']}", headers=headers(a, csrf=csrf)), 403)
        assert body["type"].endswith("csrf")
        body = assert_problem(
            gateway.request("DELETE", "/account", json={"password": PASSWORD}, headers=headers(a, csrf=csrf)), 403
        )
        assert body["type"].endswith("csrf")
    assert sessions.check_live(b["claims"])
    doc = user_doc(u["uid"])
    assert doc["deleted_at"] is None and doc["disabled"] is False
    assert len(sessions.for_user(u["uid"])) == 2


def test_me_with_a_revoked_session_is_401(gateway: httpx.Client, new_user) -> None:
    u = new_user()
    s = sign_in(u["uid"])
    assert gateway.get("/me", headers={"Authorization": f"Bearer {s['access']}"}).status_code == 200
    assert sessions.revoke(s["sid"], "test")
    body = assert_problem(gateway.get("/me", headers={"Authorization": f"Bearer {s['access']}"}), 401)
    assert body["type"].endswith("session-ended")
    assert_problem(gateway.get("/sessions", headers={"Authorization": f"Bearer {s['access']}"}), 401)
    assert_problem(gateway.get("/account/export", headers={"Authorization": f"Bearer {s['access']}"}), 401)


# --- export --------------------------------------------------------------------------------------


def test_export_holds_the_users_data_and_no_secret(gateway: httpx.Client, new_user) -> None:
    u, stranger = new_user(name="Exported"), new_user()
    a, b = sign_in(u["uid"], user_agent="laptop/1"), sign_in(u["uid"], user_agent="phone/2")
    sign_in(stranger["uid"])
    assert gateway.delete(f"/sessions/{b['sid']}", headers=headers(a)).status_code == 204
    audit.record("test.other", actor=stranger["uid"])

    r = gateway.get("/account/export", headers={"Authorization": f"Bearer {a['access']}"})
    assert r.status_code == 200, r.text
    assert "attachment" in r.headers["content-disposition"]
    text = r.text
    data = r.json()
    # no secret of any kind
    assert "hash" not in text and "$argon2" not in text
    for secret in (a["refresh"], b["refresh"], a["access"], a["csrf"], "rt1."):
        assert secret not in text
    assert "counter" not in text and "key_version" not in text and "tokens_valid_after" not in text
    assert stranger["uid"] not in text and stranger["email"] not in text

    assert set(data) >= {"exported_at", "user", "identities", "sessions", "audit"}
    assert data["exported_at"].endswith("Z")
    assert data["user"]["uid"] == u["uid"] and data["user"]["email"] == u["email"]
    assert data["user"]["name"] == "Exported" and data["user"]["created_at"].endswith("Z")
    assert data["identities"] == [
        {
            "kind": "password",
            "email": u["email"],
            "created_at": data["identities"][0]["created_at"],
            "updated_at": data["identities"][0]["updated_at"],
        }
    ]
    listed = {s["id"]: s for s in data["sessions"]}
    assert set(listed) == {a["sid"], b["sid"]}  # revoked sessions too
    assert listed[b["sid"]]["revoked_at"].endswith("Z") and listed[b["sid"]]["revoke_reason"] == "user_revoked"
    assert listed[a["sid"]]["revoked_at"] is None and listed[a["sid"]]["user_agent"] == "laptop/1"
    assert [(e["action"], e["target"]) for e in data["audit"]] == [("session.revoke", f"session:{b['sid']}")]


def test_export_of_a_google_identity_has_iss_and_sub() -> None:
    uid = users.create_google_user("https://accounts.google.com", "g-123", "g@example.com", "G User")
    data = account.export(uid).model_dump()
    assert data["identities"][0]["kind"] == "google"
    assert (data["identities"][0]["iss"], data["identities"][0]["sub"]) == ("https://accounts.google.com", "g-123")
    assert data["user"]["providers"] == ["google"]


# --- DELETE /account -----------------------------------------------------------------------------


def test_delete_with_a_wrong_password_is_refused_and_changes_nothing(gateway: httpx.Client, new_user) -> None:
    u = new_user()
    s, other = sign_in(u["uid"]), sign_in(u["uid"])
    before = user_doc(u["uid"])
    body = assert_problem(
        gateway.request("DELETE", "/account", json={"password": "not the password"}, headers=headers(s)), 403
    )
    assert body["type"].endswith("reauthentication-required") and "password" in body["detail"]
    assert user_doc(u["uid"]) == before
    assert {x["id"] for x in sessions.for_user(u["uid"])} == {s["sid"], other["sid"]}
    assert gateway.get("/me", headers={"Authorization": f"Bearer {s['access']}"}).status_code == 200


def test_delete_with_the_password_soft_deletes_and_signs_out_everywhere(gateway: httpx.Client, new_user) -> None:
    u = new_user()
    s, other = sign_in(u["uid"]), sign_in(u["uid"])
    with clock.travel(by=timedelta(minutes=30)):  # an old sign-in: the password is what counts
        s2 = sign_in(u["uid"])
    r = gateway.request("DELETE", "/account", json={"password": PASSWORD}, headers=headers(s))
    assert r.status_code == 204, r.text

    doc = user_doc(u["uid"])
    assert doc["deleted_at"] is not None and doc["disabled"] is True
    assert doc["tokens_valid_after"] is not None
    assert abs(doc["deleted_at"] - clock.now()) < timedelta(minutes=1)
    assert sessions.for_user(u["uid"]) == []
    revoked = sessions.for_user(u["uid"], include_revoked=True)
    assert {x["id"] for x in revoked} == {s["sid"], other["sid"], s2["sid"]}
    assert all(x["revoke_reason"] == "account_deleted" for x in revoked)
    for sess in (s, other):
        assert_problem(gateway.get("/me", headers={"Authorization": f"Bearer {sess['access']}"}), 401)
    with pytest.raises(sessions.RefreshRefused):
        sessions.rotate(s["refresh"], user_agent="x", ip="203.0.113.7")
    assert "account.delete" in audit_actions(u["uid"])
    # the identity stays until the purge: no one can register the address and inherit anything
    assert users.password_identity(u["email"])["uid"] == u["uid"]


def test_delete_through_login_then_refresh_fails(stack: Stack, browser: Browser, new_user) -> None:
    u = new_user()
    r = browser.login(u["email"], u["password"])
    assert r.status_code == 200, r.text
    assert browser.csrf
    r = browser.request("DELETE", "/account", json_body={"password": u["password"]})
    assert r.status_code == 204, r.text
    assert browser.request("GET", "/me").status_code == 401
    assert browser.refresh().status_code == 401
    assert browser.login(u["email"], u["password"]).status_code != 200


def test_delete_without_password_after_a_recent_sign_in(gateway: httpx.Client, new_user) -> None:
    u = new_user()
    s, other = sign_in(u["uid"]), sign_in(u["uid"])
    r = gateway.request("DELETE", "/account", json={}, headers=headers(s))
    assert r.status_code == 204, r.text
    assert user_doc(u["uid"])["deleted_at"] is not None
    assert sessions.for_user(u["uid"]) == []
    assert_problem(gateway.get("/me", headers={"Authorization": f"Bearer {other['access']}"}), 401)


def test_delete_of_a_google_only_account_without_password(gateway: httpx.Client) -> None:
    uid = users.create_google_user("https://accounts.google.com", "g-456", "g2@example.com", "G")
    s = sign_in(uid)
    # a password for an account that has none is refused
    body = assert_problem(
        gateway.request("DELETE", "/account", json={"password": "whatever-it-is"}, headers=headers(s)), 403
    )
    assert "no password" in body["detail"]
    assert user_doc(uid)["deleted_at"] is None
    assert gateway.request("DELETE", "/account", json={}, headers=headers(s)).status_code == 204
    assert user_doc(uid)["deleted_at"] is not None


def test_delete_without_password_is_refused_for_an_old_sign_in(function_client, new_user) -> None:
    """In-process, so the clock can move: a session signed in 11 minutes ago needs the password."""
    u = new_user()
    client = function_client("account")
    s = sign_in(u["uid"])
    with clock.travel(by=timedelta(seconds=config.RECENT_SIGN_IN_S + 60)):
        token = tokens.issue_access_token(u["uid"], s["sid"]).token  # still a valid token, refreshed later
        h = {"Authorization": f"Bearer {token}", "X-CSRF-Token": s["csrf"]}
        r = client.delete("/account", json={}, headers=h)
        assert r.status_code == 403, r.data
        assert r.json["type"].endswith("reauthentication-required") and "10 minutes" in r.json["detail"]
        assert user_doc(u["uid"])["deleted_at"] is None
        assert len(sessions.for_user(u["uid"])) == 1
        # the password still works for that session
        r = client.delete("/account", json={"password": PASSWORD}, headers=h)
        assert r.status_code == 204, r.data
    assert user_doc(u["uid"])["deleted_at"] is not None


def test_delete_needs_a_json_body_and_a_string_password(gateway: httpx.Client, new_user) -> None:
    u = new_user()
    s = sign_in(u["uid"])
    assert_problem(gateway.request("DELETE", "/account", json={"password": 12345678}, headers=headers(s)), 422)
    assert_problem(gateway.request("DELETE", "/account", json={"pasword": PASSWORD}, headers=headers(s)), 422)
    assert user_doc(u["uid"])["deleted_at"] is None


# --- purge ---------------------------------------------------------------------------------------


def _owned(uid: str, email: str) -> dict[str, int]:
    from google.cloud.firestore_v1.base_query import FieldFilter

    db = clients.firestore()
    count = {
        c: len(list(db.collection(c).where(filter=FieldFilter("uid", "==", uid)).stream()))
        for c in ("identities", "sessions", "email_tokens")
    }
    count["mail_outbox"] = len(list(db.collection("mail_outbox").where(filter=FieldFilter("to", "==", email)).stream()))
    count["users"] = 1 if user_doc(uid) else 0
    return count


def _deleted_user(new_user) -> dict:
    u = new_user()
    s = sign_in(u["uid"])
    sign_in(u["uid"])
    users.issue_email_token(u["uid"], "password_reset", u["email"], 1800)
    clients.firestore().collection("mail_outbox").add({"to": u["email"], "template": "password_reset", "link": None})
    account.delete_account(users.get(u["uid"]), s["sid"], password=PASSWORD)
    assert _owned(u["uid"], u["email"]) == {
        "identities": 1,
        "sessions": 2,
        "email_tokens": 1,
        "mail_outbox": 1,
        "users": 1,
    }
    return u


def test_purge_removes_accounts_deleted_more_than_30_days_ago(new_user) -> None:
    gone, kept = _deleted_user(new_user), new_user()
    with clock.travel(by=timedelta(days=29)):
        assert account.purge(clock.now()) == 0
        recent = _deleted_user(new_user)  # deleted "29 days later": purged only 30 days after that
    assert user_doc(gone["uid"]) is not None

    with clock.travel(by=timedelta(days=31)):
        assert account.purge(clock.now()) == 1
        assert account.purge(clock.now()) == 0  # idempotent
    assert _owned(gone["uid"], gone["email"]) == {
        "identities": 0,
        "sessions": 0,
        "email_tokens": 0,
        "mail_outbox": 0,
        "users": 0,
    }
    assert users.password_identity(gone["email"]) is None
    assert _owned(kept["uid"], kept["email"])["users"] == 1 and _owned(kept["uid"], kept["email"])["identities"] == 1
    assert _owned(recent["uid"], recent["email"])["users"] == 1
    purges = [e for e in audit.for_actor("system") if e["action"] == "account.purge"]
    assert [e["target"] for e in purges] == [None]  # that it happened, never whose
    assert gone["uid"] not in json.dumps(purges, default=str) and gone["email"] not in json.dumps(purges, default=str)
    # the address is free again once purged
    assert users.create_password_user(gone["email"], passwords.hash_password(PASSWORD)) is not None


def test_purge_through_the_function_on_the_purge_topic(stack: Stack, new_user) -> None:
    u = _deleted_user(new_user)
    clients.firestore().collection("users").document(u["uid"]).update({"deleted_at": clock.now() - timedelta(days=31)})
    url = f"http://127.0.0.1:{stack.ports.pubsub}/v1/projects/{PROJECT}/topics/{PURGE_TOPIC}:publish"
    r = httpx.post(url, json={"messages": [{"data": "e30="}]}, timeout=10)
    assert r.status_code == 200, r.text

    deadline = time.monotonic() + 30
    while user_doc(u["uid"]) is not None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert user_doc(u["uid"]) is None
    assert _owned(u["uid"], u["email"]) == {
        "identities": 0,
        "sessions": 0,
        "email_tokens": 0,
        "mail_outbox": 0,
        "users": 0,
    }
    purges = [e for e in audit.for_actor("system") if e["action"] == "account.purge"]
    assert [(e["target"], e["function"]) for e in purges] == [(None, "purge_accounts")]
    assert naming([u["uid"], u["email"]]) == []


def test_after_a_purge_no_document_names_the_user_or_their_files_even_after_late_events(
    stack: Stack, new_user, cli
) -> None:
    """A PRO user with saved files, a refused upload and an operator grant; deleted, purged by
    `mllab accounts purge`; then the bucket's late events (the purge's own deletes, a redelivered
    delete, a late upload) arrive. Every collection is scanned for the uid, the email and the files."""
    u = new_user()
    lab = signed_in(stack, u, pro=True)
    project = ok(lab.request("POST", "/projects", json_body={"name": "p"}), 201)["id"]
    model = ok(lab.request("POST", "/models", json_body={"project_id": project, "name": "m"}), 201)["id"]
    ok(lab.request("POST", f"/models/{model}/versions"), 201)
    job = ok(lab.request("POST", "/jobs", json_body={"project_id": project, "model_id": model}), 201)["id"]
    base = f"users/{u['uid']}/projects/{project}"
    files = {
        f"{base}/models/{model}/versions/1/weights.bin": (b"\x00" * 32, "application/octet-stream"),
        f"{base}/models/{model}/versions/1/model.json": (b"{}", "application/json"),
        f"{base}/jobs/{job}/metrics.json": (json.dumps(metrics(model)).encode(), "application/json"),
    }
    recorded = {}
    for name, (data, content_type) in files.items():
        recorded[name] = upload(name, data, content_type)
        assert wait(lambda name=name: artifact(name, recorded[name])), name
    refused = f"{base}/models/{model}/versions/1/evil.exe"
    upload(refused, b"x", "application/octet-stream")  # outside the grammar: audited under the user
    assert wait(lambda: any(e["action"] == "object.rejected" for e in audit.for_actor(u["uid"])))
    assert ok(lab.request("GET", "/me"))["usage"]["uploads_today"] == 3

    s = sign_in(u["uid"])
    account.delete_account(users.get(u["uid"]), s["sid"], password=PASSWORD)
    users.update(u["uid"], deleted_at=clock.now() - timedelta(days=config.ACCOUNT_PURGE_AFTER_DAYS + 1))
    r = cli("accounts", "purge", "--json")
    assert r.returncode == 0 and json.loads(r.stdout) == {"purged": 1}, r.stderr

    # the purge's own object deletions, then late ones: acknowledged and dropped
    log = function_log(stack, "on_object_finalized")
    assert len(wait_for_log(log, "object deletion of a deleted account dropped", count=len(files))) >= len(files)
    from mllab.files import events, recorder

    for name, generation in recorded.items():
        recorder.delete(events.ObjectEvent("OBJECT_DELETE", bucket().name, name, generation, "late"))
    late = f"{base}/jobs/{job}/metrics.json"
    upload(late, json.dumps(metrics(model)).encode(), "application/json")  # a URL signed before the deletion
    forged = f"{base}/models/{model}/versions/1/weights.bin"
    upload(forged, b"<html>", "text/html")  # late and refused: removed without an audit entry naming anyone
    assert wait(lambda: bucket().get_blob(late) is None), "a late upload of a purged account was kept"
    assert wait(lambda: bucket().get_blob(forged) is None), "a late refused upload of a purged account was kept"
    assert list(bucket().list_blobs(prefix=f"users/{u['uid']}/")) == []

    assert naming([u["uid"], u["email"], *files, refused]) == []
    purges = [e for e in audit.for_actor("system") if e["action"] == "account.purge"]
    assert len(purges) == 1 and purges[0]["target"] is None
    assert purges[0]["details"]["removed"]["artifacts"] == 4  # 3 files + the refused one's tombstone
