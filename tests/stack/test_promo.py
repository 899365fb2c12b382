"""Promo codes end to end: codes made by the operator (CLI or `promo.create`), redeemed by signed-in
users through the gateway (POST /promo/apply), with what that changes (/me, the storage gate, the
export) and what it must not (refusals change nothing, contention never gives more than the uses)."""

from __future__ import annotations

import json
import threading
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta

import httpx

from mllab.billing import entitlements, promo, subscriptions
from mllab.identity import passwords, sessions, tokens, users
from mllab.platform import audit, clients, clock, config
from mllab.platform.problems import PROBLEM_TYPE, Problem
from mllab_dev.stack import Stack

from .billing_support import FREE_SUBSCRIPTION
from .conftest import Browser
from .storage_support import WEIGHTS, model_with_version, ok

GIB = 1024**3
FOREVER = "9999-12-31T00:00:00Z"


# --- helpers -------------------------------------------------------------------------------------


def _code(code: str, kind: str = "trial", *, uses: int = 10, days: int | None = 14, **kw) -> dict:
    return promo.create(promo.NewCode(code=code, kind=kind, uses=uses, days=days, **kw))


def _apply(b: Browser, code: str) -> httpx.Response:
    return b.request("POST", "/promo/apply", json_body={"code": code})


def _problem(r: httpx.Response, status: int, slug: str) -> dict:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json"), r.headers
    body = r.json()
    assert body["type"] == PROBLEM_TYPE + slug, body
    assert body["status"] == status and body["detail"] and body["request_id"], body
    return body


def _code_doc(code: str) -> dict:
    return clients.firestore().collection(promo.CODES).document(code).get().to_dict()


def _redemptions(code: str) -> list[dict]:
    return [
        s.to_dict() | {"id": s.id}
        for s in clients.firestore().collection(promo.REDEMPTIONS).stream()
        if s.get("code") == code
    ]


def _when(value: str) -> datetime:
    parsed = entitlements.parse_time(value)
    assert parsed is not None, value
    return parsed


def _about(value: str, expected: datetime, slack: timedelta = timedelta(minutes=2)) -> bool:
    return abs(_when(value) - expected) < slack


def _promo_audit(uid: str) -> list[dict]:
    return [e for e in audit.for_actor(uid) if e["action"] == "promo.apply"]


# --- the happy path ------------------------------------------------------------------------------


def test_a_cli_made_trial_code_is_redeemed_through_the_gateway(cli, member) -> None:
    r = cli("promo", "create", "TRIAL14", "--days", "14", "--uses", "5")
    assert r.returncode == 0, r.stderr
    assert "TRIAL14" in r.stdout
    b = member()
    assert b.request("GET", "/me").json()["subscription"]["plan"] == "free"

    applied = ok(_apply(b, "TRIAL14"))
    assert applied["code"] == "TRIAL14" and applied["kind"] == "trial" and applied["days"] == 14
    assert applied["subscription"]["status"] == "trial" and applied["subscription"]["plan"] == "pro"
    now = clock.now()

    me = ok(b.request("GET", "/me"))
    sub = me["subscription"]
    assert sub["status"] == "trial" and sub["plan"] == "pro" and sub["past_due"] is False
    assert _about(sub["trial_until"], now + timedelta(days=14)), sub
    assert sub["pro_until"] == sub["trial_until"]
    assert me["usage"]["storage_limit_bytes"] == 5 * GIB and me["usage"]["uploads_limit"] == 200

    listed = cli("promo", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    (row,) = json.loads(listed.stdout)["codes"]
    assert row["code"] == "TRIAL14" and row["used"] == "1/5" and row["state"] == "active"

    (entry,) = _promo_audit(b.uid)
    assert entry["outcome"] == "ok" and entry["target"] == "promo:TRIAL14"
    assert entry["details"]["kind"] == "trial" and entry["details"]["days"] == 14
    assert entry["request_id"], entry

    doc = clients.firestore().collection(promo.REDEMPTIONS).document(f"TRIAL14_{b.uid}_1").get()
    assert doc.exists, "no promo_redemptions/<CODE>_<uid>_1"
    assert doc.get("uid") == b.uid and doc.get("days") == 14 and doc.get("n") == 1 and doc.get("kind") == "trial"
    ent = entitlements.get(b.uid)
    assert ent["plan"] == "pro" and ent["status"] == "trial" and ent["source"] == "promo" and ent["ever_pro"] is True
    assert _code_doc("TRIAL14")["redemptions"] == 1


def test_the_code_is_normalised(member) -> None:
    _code("TRIAL14")
    b = member()
    applied = ok(_apply(b, " trial14 "))
    assert applied["code"] == "TRIAL14" and applied["subscription"]["status"] == "trial"
    assert [r["id"] for r in _redemptions("TRIAL14")] == [f"TRIAL14_{b.uid}_1"]


# --- contention (hot documents) ------------------------------------------------


def _racers(n: int) -> list[dict]:
    """n users with a live session each, made directly (no Argon2: these never sign in by password)."""
    out = []
    for _ in range(n):
        uid = users.create_password_user(
            f"racer-{uuid.uuid4().hex[:10]}@example.com", passwords.DUMMY_HASH, verified=True
        )
        s, _ = sessions.create(uid, "password", user_agent="pytest-racer", ip="203.0.113.7")
        out.append({"uid": uid, "token": tokens.issue_access_token(uid, s.id).token, "csrf": sessions.csrf_token(s.id)})
    return out


def _check_exactly_ten_won(code: str, winners: set[str]) -> None:
    assert _code_doc(code)["redemptions"] == 10
    docs = _redemptions(code)
    assert len(docs) == 10, [d["id"] for d in docs]
    assert {d["uid"] for d in docs} == winners
    ents = {s.id: s.to_dict() for s in clients.firestore().collection(entitlements.COLLECTION).stream()}
    assert set(ents) == winners and all(e["status"] == "trial" for e in ents.values())


def test_fifty_racers_through_the_gateway_get_exactly_ten_uses(stack: Stack) -> None:
    _code("RUSH", uses=10, days=7)
    racers = _racers(50)
    barrier = threading.Barrier(50)

    with httpx.Client(
        base_url=stack.gateway_url, timeout=90, limits=httpx.Limits(max_connections=64, max_keepalive_connections=64)
    ) as client:

        def go(racer: dict) -> tuple[str, httpx.Response]:
            barrier.wait(timeout=30)
            return racer["uid"], client.post(
                "/promo/apply",
                json={"code": "RUSH"},
                headers={
                    "Authorization": f"Bearer {racer['token']}",
                    "X-CSRF-Token": racer["csrf"],
                    "Origin": stack.gateway_url,
                },
            )

        with ThreadPoolExecutor(50) as pool:
            answers = list(pool.map(go, racers))

    statuses = Counter(r.status_code for _, r in answers)
    assert not [r for _, r in answers if r.status_code >= 500], [r.text for _, r in answers if r.status_code >= 500]
    assert statuses[200] == 10, statuses
    refused = [r for _, r in answers if r.status_code != 200]
    # Every racer here is a different user with a valid session; they share one client address (as people
    # behind one NAT do). A "used up" answer is not a guess, so it must not spend the address's failure
    # budget (failures only, so concurrent legitimate calls are never throttled).
    assert statuses[429] == 0, (
        f"{statuses[429]} of 50 legitimate racers were answered 429: promo.apply() counts every refusal but "
        "promo-busy (here promo-used-up) against the per-IP budget (promo_ip=30), so 40 used-up answers from one "
        "address throttle the racers still in flight",
        statuses,
    )
    assert all(r.status_code == 409 for r in refused), (statuses, {r.text for r in refused if r.status_code != 409})
    slugs = Counter(r.json()["type"].removeprefix(PROBLEM_TYPE) for r in refused)
    assert set(slugs) <= {"promo-used-up", "promo-busy"}, slugs
    winners = {uid for uid, r in answers if r.status_code == 200}
    _check_exactly_ten_won("RUSH", winners)


def test_fifty_racers_in_process_get_exactly_ten_uses(stack: Stack) -> None:
    _code("RUSH-INPROC", uses=10, days=7)
    racers = [
        users.create_password_user(f"inproc-{uuid.uuid4().hex[:10]}@example.com", passwords.DUMMY_HASH)
        for _ in range(50)
    ]
    barrier = threading.Barrier(50)

    def go(uid: str):
        barrier.wait(timeout=30)
        try:
            return uid, promo.apply(uid, "RUSH-INPROC")
        except Exception as exc:  # noqa: BLE001 - sorted below
            return uid, exc

    with ThreadPoolExecutor(50) as pool:
        results = list(pool.map(go, racers))

    won = {uid for uid, r in results if not isinstance(r, Exception)}
    errors = [r for _, r in results if isinstance(r, Exception)]
    unexpected = [repr(e) for e in errors if not (isinstance(e, Problem) and e.status == 409)]
    assert not unexpected, unexpected
    assert len(won) == 10, (len(won), Counter(e.slug for e in errors))
    assert {e.slug for e in errors} <= {"promo-used-up", "promo-busy"}
    _check_exactly_ten_won("RUSH-INPROC", won)


# --- caps and stacking ---------------------------------------------------------------------------


def test_the_per_user_cap_and_stacked_trials(member) -> None:
    _code("TWICE", days=10, uses=10, per_user=2)  # `mllab promo create ... --per-user 2`: test_billing_cli.py
    b = member()
    first = ok(_apply(b, "TWICE"))
    second = ok(_apply(b, "TWICE"))
    now = clock.now()
    assert _about(first["subscription"]["trial_until"], now + timedelta(days=10))
    assert _about(second["subscription"]["trial_until"], now + timedelta(days=20)), second  # stacked
    assert _about(ok(b.request("GET", "/me"))["subscription"]["trial_until"], now + timedelta(days=20))

    body = _problem(_apply(b, "twice"), 409, "promo-already-used")
    assert "TWICE" in body["detail"] and "2 times" in body["detail"]
    assert sorted(d["id"] for d in _redemptions("TWICE")) == [f"TWICE_{b.uid}_1", f"TWICE_{b.uid}_2"]
    assert _code_doc("TWICE")["redemptions"] == 2
    assert _about(ok(b.request("GET", "/me"))["subscription"]["trial_until"], now + timedelta(days=20))
    assert [e["outcome"] for e in _promo_audit(b.uid)].count("promo-already-used") == 1


# --- refusals change nothing ---------------------------------------------------------------------


def test_refused_codes_answer_422_and_change_nothing(cli, member) -> None:
    now = clock.now()
    _code("OLD-CODE", expires_at=now - timedelta(days=1))
    starts = (now + timedelta(days=3)).replace(second=0, microsecond=0)
    _code("SOON-CODE", starts_at=starts)
    _code("OFF-CODE")
    r = cli("promo", "disable", "off-code")
    assert r.returncode == 0 and "OFF-CODE" in r.stdout, r.stderr
    b = member()

    expired = _problem(_apply(b, "OLD-CODE"), 422, "promo-expired")
    assert "OLD-CODE" in expired["detail"] and (now - timedelta(days=1)).strftime("%Y-%m-%d") in expired["detail"]
    soon = _problem(_apply(b, "soon-code"), 422, "promo-not-started")
    assert "SOON-CODE" in soon["detail"] and starts.strftime("%Y-%m-%d %H:%M") in soon["detail"]
    off = _problem(_apply(b, "OFF-CODE"), 422, "promo-disabled")
    assert "OFF-CODE" in off["detail"]
    unknown = _problem(_apply(b, "NO-SUCH-CODE"), 422, "promo-unknown")
    assert "NO-SUCH-CODE" in unknown["detail"] and "spelling" in unknown["detail"]
    for bad in ("x", "!!!"):
        body = _problem(_apply(b, bad), 422, "promo-unknown")
        assert "letters" in body["detail"] and "spelling" in body["detail"], body
    r = b.request("POST", "/promo/apply", json_body={"code": "  "})  # empty after stripping: schema validation
    assert r.status_code == 422 and r.headers["content-type"].startswith("application/problem+json")

    assert entitlements.get(b.uid) is None
    assert ok(b.request("GET", "/me"))["subscription"] == FREE_SUBSCRIPTION
    for code in ("OLD-CODE", "SOON-CODE", "OFF-CODE"):
        assert _code_doc(code)["redemptions"] == 0
    assert list(clients.firestore().collection(promo.REDEMPTIONS).stream()) == []
    outcomes = Counter(e["outcome"] for e in _promo_audit(b.uid))
    assert outcomes == {"promo-expired": 1, "promo-not-started": 1, "promo-disabled": 1, "promo-unknown": 3}


def test_failures_are_counted_then_429(member) -> None:
    _code("GOOD-CODE")
    b = member()
    limit = config.RATE_LIMITS.promo_user
    for i in range(limit):
        _problem(_apply(b, f"GUESS-{i:03d}"), 422, "promo-unknown")
    r = _apply(b, "GOOD-CODE")
    body = _problem(r, 429, "rate-limited")
    assert int(r.headers["retry-after"]) > 0 and "Try again" in body["detail"]

    assert entitlements.get(b.uid) is None and _code_doc("GOOD-CODE")["redemptions"] == 0
    entries = _promo_audit(b.uid)
    assert len(entries) == limit and {e["outcome"] for e in entries} == {"promo-unknown"}
    assert sorted(e["target"] for e in entries) == [f"promo:GUESS-{i:03d}" for i in range(limit)]
    throttled = [e for e in audit.for_actor(None) if e["action"] == "ratelimit.refused"]  # type: ignore[arg-type]
    assert [e["target"] for e in throttled] == ["promo_user"] and throttled[0]["outcome"] == "429"


def test_new_users_only(member) -> None:
    _code("NEWBIE", new_users_only=True)
    veteran = member()
    subscriptions.set_grant(veteran.uid, lambda d, now: entitlements.with_grant(d, 1, now))
    subscriptions.set_grant(veteran.uid, lambda d, now: entitlements.without_grants(d), action="access.revoke")
    assert entitlements.get(veteran.uid)["ever_pro"] is True
    assert ok(veteran.request("GET", "/me"))["subscription"]["plan"] == "free"

    body = _problem(_apply(veteran, "NEWBIE"), 403, "promo-new-users-only")
    assert "NEWBIE" in body["detail"] and "new" in body["detail"]
    assert _code_doc("NEWBIE")["redemptions"] == 0

    fresh = member()
    assert ok(_apply(fresh, "NEWBIE"))["subscription"]["status"] == "trial"
    assert _code_doc("NEWBIE")["redemptions"] == 1


def test_no_trial_on_top_of_an_active_paypal_subscription(member) -> None:
    _code("TRIAL30", days=30)
    b = member()
    now = clock.now()
    snapshot = {
        "id": "I-PROMOTEST1234",
        "status": "ACTIVE",
        "plan_id": "P-PROMOTEST",
        "custom_id": b.uid,
        "create_time": clock.rfc3339(now - timedelta(days=1)),
        "status_update_time": clock.rfc3339(now - timedelta(days=1)),
        "billing_info": {
            "outstanding_balance": {"currency_code": "USD", "value": "0.00"},
            "failed_payments_count": 0,
            "last_payment": {
                "amount": {"currency_code": "USD", "value": "15.00"},
                "time": clock.rfc3339(now - timedelta(days=1)),
            },
            "next_billing_time": clock.rfc3339(now + timedelta(days=30)),
        },
    }
    doc = entitlements.stamp(
        b.uid, entitlements.track({}, entitlements.paypal_part(snapshot, None, now)), now, created=True
    )
    entitlements.ref(b.uid).set(doc)
    assert ok(b.request("GET", "/me"))["subscription"]["status"] == "active"

    body = _problem(_apply(b, "TRIAL30"), 409, "promo-already-pro")
    assert "subscription" in body["detail"] and "trial" in body["detail"]
    ent = entitlements.get(b.uid)
    assert ent.get("trial_until") is None and ent["status"] == "active"
    assert _code_doc("TRIAL30")["redemptions"] == 0 and _redemptions("TRIAL30") == []


def test_a_comp_code_without_days_is_pro_for_good(member) -> None:
    _code("COMP-FOREVER", "comp", uses=1, days=None)
    b = member()
    applied = ok(_apply(b, "comp-forever"))
    assert applied["kind"] == "comp" and applied["days"] is None
    assert applied["subscription"]["status"] == "active" and applied["subscription"]["pro_until"] == FOREVER
    sub = ok(b.request("GET", "/me"))["subscription"]
    assert (sub["status"], sub["plan"], sub["pro_until"], sub["trial_until"]) == ("active", "pro", FOREVER, None)
    ent = entitlements.get(b.uid)
    assert ent["source"] == "promo" and ent["comp_until"] == entitlements.FOREVER


# --- what a trial unlocks ------------------------------------------------------------------------


def test_the_storage_gate_opens_with_a_trial(member) -> None:
    _code("SAVE-TRIAL", days=7)
    b = member()
    _, model_id, n = model_with_version(b)
    ask = {"kind": "weights", "model_id": model_id, "version": n, "size": len(WEIGHTS)}
    body = _problem(b.request("POST", "/signed/upload", json_body=ask), 403, "plan-required")
    assert "PRO" in body["detail"] and "promo" in body["detail"] and "trial" in body["detail"]

    ok(_apply(b, "SAVE-TRIAL"))
    signed = ok(b.request("POST", "/signed/upload", json_body=ask))
    assert signed["method"] == "PUT" and signed["url"] and signed["object"].endswith("/weights.bin")
    assert signed["object"].startswith(f"users/{b.uid}/")
    put = httpx.put(signed["url"], content=WEIGHTS, headers=signed["headers"], timeout=20)
    assert put.status_code == 200, put.text


def test_the_account_export_holds_the_entitlement_and_redemptions(member) -> None:
    _code("EXPORT-ME", days=5)
    b = member()
    ok(_apply(b, "EXPORT-ME"))
    exported = ok(b.request("GET", "/account/export"))
    assert exported["entitlement"]["status"] == "trial" and exported["entitlement"]["plan"] == "pro"
    assert exported["entitlement"]["source"] == "promo" and exported["entitlement"]["trial_until"]
    (redemption,) = exported["promo_redemptions"]
    assert redemption["code"] == "EXPORT-ME" and redemption["kind"] == "trial" and redemption["days"] == 5
    assert redemption["n"] == 1 and redemption["created_at"]
    assert "uid" not in redemption
