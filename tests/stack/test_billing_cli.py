"""The operator CLI's billing side (`mllab promo`, `mllab access`, `mllab billing`), run as the
installed console script against the local stack: Firestore emulator, gateway and PayPal stand-in."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from mllab.billing import entitlements, promo, subscriptions
from mllab.billing import paypal as paypal_api
from mllab.platform import audit, clients, clock
from mllab_dev.stack import Stack

from .billing_support import FREE_SUBSCRIPTION, deliveries_settled, foreign_subscription, subscribe, wait
from .conftest import Browser

FOREVER = "9999-12-31T00:00:00Z"


def _me(b: Browser) -> dict:
    r = b.request("GET", "/me")
    assert r.status_code == 200, r.text
    return r.json()


def _when(value: str) -> datetime:
    parsed = entitlements.parse_time(value)
    assert parsed is not None, value
    return parsed


def _operator_actions() -> list[dict]:
    return audit.for_actor("operator")


# --- promo create -------------------------------------------------------------------------------


def test_promo_create_with_every_option_stores_exactly_those_fields(cli) -> None:
    r = cli(
        "promo",
        "create",
        "spring-26",
        "--kind",
        "comp",
        "--days",
        "30",
        "--uses",
        "3",
        "--per-user",
        "1",
        "--starts",
        "2026-01-01",
        "--expires",
        "2099-01-01",
        "--new-users-only",
        "--json",
    )
    assert r.returncode == 0, r.stderr
    row = json.loads(r.stdout)
    now = clock.now()
    state = "scheduled" if now < datetime(2026, 1, 1, tzinfo=UTC) else "active"
    assert row == {
        "code": "SPRING-26",
        "kind": "comp",
        "days": 30,
        "used": "0/3",
        "per_user": 1,
        "new_users_only": True,
        "starts": "2026-01-01T00:00:00Z",
        "expires": "2099-01-01T00:00:00Z",
        "state": state,
    }

    doc = clients.firestore().collection(promo.CODES).document("SPRING-26").get().to_dict()
    created, updated = doc.pop("created_at"), doc.pop("updated_at")
    assert abs(created - now) < timedelta(minutes=2) and updated == created
    assert doc == {
        "code": "SPRING-26",
        "kind": "comp",
        "days": 30,
        "max_redemptions": 3,
        "redemptions": 0,
        "per_user_limit": 1,
        "new_users_only": True,
        "active": True,
        "created_by": "operator",
        "starts_at": datetime(2026, 1, 1, tzinfo=UTC),
        "expires_at": datetime(2099, 1, 1, tzinfo=UTC),
    }
    (entry,) = [e for e in _operator_actions() if e["action"] == "promo.create"]
    assert entry["target"] == "promo:SPRING-26" and entry["details"] == {"kind": "comp", "uses": 3, "days": 30}

    again = cli("promo", "create", "SPRING-26", "--days", "7", "--uses", "1", "--json")
    assert again.returncode == 1 and "already exists" in again.stderr
    assert json.loads(again.stdout) == {"error": "code SPRING-26 already exists", "exit_code": 1}
    assert clients.firestore().collection(promo.CODES).document("SPRING-26").get().get("kind") == "comp"


def _no_codes() -> bool:
    return list(clients.firestore().collection(promo.CODES).stream()) == []


def test_promo_create_usage_errors(cli) -> None:
    for args, why in (
        (("--uses", "0", "--days", "7"), "not a positive whole number"),
        (("--uses", "5", "--days", "7", "--kind", "gift"), "invalid choice"),
        (("--uses", "5", "--days", "-3"), "--days"),
        (("--days", "7"), "--uses"),
        (("--uses", "5", "--days", "7", "--starts", "next tuesday"), "not a date"),
    ):
        r = cli("promo", "create", "BADARGS", *args)
        assert r.returncode == 2, (args, r.returncode, r.stderr)
        assert why in r.stderr, (args, r.stderr)
    assert _no_codes()


def test_promo_create_refuses_a_trial_without_days(cli) -> None:
    r = cli("promo", "create", "NODAYS", "--uses", "5")
    assert r.returncode == 2, r.stderr  # a missing option is a usage error
    assert "a trial code needs --days" in r.stderr
    assert _no_codes()


@pytest.mark.parametrize(
    "args, why",
    [
        (("TWO WORDS", "--days", "7", "--uses", "5"), "letters A-Z"),
        (
            ("DATES", "--days", "7", "--uses", "5", "--starts", "2027-02-01", "--expires", "2027-01-01"),
            "--expires must be after --starts",
        ),
    ],
    ids=["code-with-spaces", "expires-before-starts"],
)
def test_promo_create_bad_code_or_dates_are_usage_errors(cli, args, why) -> None:
    r = cli("promo", "create", *args)
    assert why in r.stderr, r.stderr  # the message is right ...
    assert _no_codes()
    # ... but the exit code is not: cli.py's cmd_promo_create turns every ValueError from promo.create
    # (NewCode.check()'s argument errors as well as "already exists") into Refused, exit 1.
    assert r.returncode == 2, (
        f"a malformed argument ({args}) must be a usage error, exit 2 (the CLI's contract: "
        f"0 ok, 1 not found or refused, 2 usage); got {r.returncode}"
    )


# --- promo list / disable ---------------------------------------------------------------------------


def test_promo_list_and_disable(cli) -> None:
    promo.create(promo.NewCode(code="LIST-TRIAL", kind="trial", uses=5, days=14))
    promo.create(
        promo.NewCode(
            code="LIST-COMP",
            kind="comp",
            uses=2,
            per_user=1,
            new_users_only=True,
            expires_at=datetime(2099, 1, 1, tzinfo=UTC),
        )
    )

    text = cli("promo", "list")
    assert text.returncode == 0, text.stderr
    lines = text.stdout.splitlines()
    assert lines[0].split() == [
        "CODE",
        "KIND",
        "DAYS",
        "USED",
        "PER_USER",
        "NEW_USERS_ONLY",
        "STARTS",
        "EXPIRES",
        "STATE",
    ]
    assert lines[1].split()[:6] == ["LIST-TRIAL", "trial", "14", "0/5", "1", "False"]
    assert lines[2].split()[:6] == ["LIST-COMP", "comp", "forever", "0/2", "1", "True"]
    assert lines[1].split()[-1] == "active" and "2099-01-01T00:00:00Z" in lines[2]

    r = cli("promo", "disable", "list-trial")
    assert r.returncode == 0, r.stderr
    assert "disabled LIST-TRIAL" in r.stdout
    listed = cli("--json", "promo", "list")
    assert listed.returncode == 0, listed.stderr
    rows = {r["code"]: r for r in json.loads(listed.stdout)["codes"]}
    assert rows == {
        "LIST-TRIAL": {
            "code": "LIST-TRIAL",
            "kind": "trial",
            "days": 14,
            "used": "0/5",
            "per_user": 1,
            "new_users_only": False,
            "starts": None,
            "expires": None,
            "state": "disabled",
        },
        "LIST-COMP": {
            "code": "LIST-COMP",
            "kind": "comp",
            "days": "forever",
            "used": "0/2",
            "per_user": 1,
            "new_users_only": True,
            "starts": None,
            "expires": "2099-01-01T00:00:00Z",
            "state": "active",
        },
    }
    assert clients.firestore().collection(promo.CODES).document("LIST-TRIAL").get().get("active") is False
    assert [e["target"] for e in _operator_actions() if e["action"] == "promo.disable"] == ["promo:LIST-TRIAL"]

    r = cli("promo", "disable", "NO-SUCH-CODE", "--json")
    assert r.returncode == 1 and json.loads(r.stdout)["error"] == "there is no promo code NO-SUCH-CODE"
    assert not clients.firestore().collection(promo.CODES).document("NO-SUCH-CODE").get().exists


# --- access grant / revoke --------------------------------------------------------------------------


def test_access_grant_and_revoke(cli, member, unique: str) -> None:
    forever, ten_days = member(), member()
    assert _me(forever)["subscription"]["plan"] == "free"

    r = cli("access", "grant", forever.email.upper())
    assert r.returncode == 0, r.stderr
    assert forever.email in r.stdout and FOREVER in r.stdout
    sub = _me(forever)["subscription"]
    assert (sub["status"], sub["plan"], sub["pro_until"], sub["trial_until"]) == ("active", "pro", FOREVER, None)
    assert _me(forever)["usage"]["storage_limit_bytes"] == 5 * 1024**3

    r = cli("access", "grant", ten_days.email, "--days", "10", "--json")
    assert r.returncode == 0, r.stderr
    row = json.loads(r.stdout)
    assert row["uid"] == ten_days.uid and row["status"] == "active" and row["plan"] == "pro"
    sub = _me(ten_days)["subscription"]
    assert sub["status"] == "active" and sub["plan"] == "pro"
    assert abs(_when(sub["pro_until"]) - (clock.now() + timedelta(days=10))) < timedelta(minutes=2), sub
    assert entitlements.get(ten_days.uid)["source"] == "admin"

    r = cli("access", "revoke", forever.email, "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) | {"email": None, "uid": None} == {"email": None, "uid": None, **FREE_SUBSCRIPTION}
    sub = _me(forever)["subscription"]
    assert sub["plan"] == "free" and sub["status"] == "none"
    assert entitlements.get(forever.uid)["ever_pro"] is True  # new-users-only codes remember it
    assert _me(ten_days)["subscription"]["plan"] == "pro"  # only the named user

    r = cli("access", "grant", f"nobody-{unique}@example.com")
    assert r.returncode == 1 and "no user" in r.stderr

    actions = [
        (e["action"], e["target"], e["details"].get("status"))
        for e in _operator_actions()
        if e["action"].startswith("access.")
    ]
    assert sorted(actions) == sorted(
        [
            ("access.grant", f"user:{forever.uid}", "active"),
            ("access.grant", f"user:{ten_days.uid}", "active"),
            ("access.revoke", f"user:{forever.uid}", "none"),
        ]
    )


# --- billing resync ---------------------------------------------------------------------------------


def test_billing_resync_repairs_a_missed_cancellation(cli, member, paypal: httpx.Client) -> None:
    canceller, suspended = member(), member()
    cancel_id, suspend_id = subscribe(canceller, paypal), subscribe(suspended, paypal)
    paid_through = _when(_me(canceller)["subscription"]["next_billing_time"])

    # PayPal's state moves on, and no webhook tells us
    for sub_id, event in ((cancel_id, "cancelled"), (suspend_id, "suspended")):
        r = paypal.post(f"/_standin/subscriptions/{sub_id}/simulate", json={"event": event, "deliver": False})
        assert r.status_code == 200, r.text
    assert _me(canceller)["subscription"]["status"] == "active"

    r = cli("billing", "resync", canceller.email, "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == {"resynced": {cancel_id: "applied:canceled"}}
    sub = _me(canceller)["subscription"]
    assert sub["status"] == "canceled" and sub["plan"] == "pro", sub  # paid through
    assert _when(sub["pro_until"]) == paid_through and sub["next_billing_time"] is None
    stored = clients.firestore().collection(subscriptions.SUBSCRIPTIONS).document(cancel_id).get().to_dict()
    assert stored["status"] == "CANCELLED" and stored["uid"] == canceller.uid
    assert _me(suspended)["subscription"]["status"] == "active"  # not that user's

    # without an email: every live subscription (the cancelled one no longer is)
    r = cli("billing", "resync", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == {"resynced": {suspend_id: "applied:past_due"}}
    sub = _me(suspended)["subscription"]
    assert sub["status"] == "past_due" and sub["past_due"] is True and sub["plan"] == "pro", sub


def test_billing_resync_refuses_another_plan_and_takes_back_what_it_granted(cli, member, paypal: httpx.Client) -> None:
    b = member()
    sub_id = foreign_subscription(b.uid)  # $0.01 a year, custom_id = the user's uid
    paypal.post(f"/_standin/subscriptions/{sub_id}/approve")
    assert wait(lambda: deliveries_settled(paypal, sub_id))
    ref = clients.firestore().collection(subscriptions.SUBSCRIPTIONS).document(sub_id)
    assert wait(lambda: (ref.get().to_dict() or {}).get("refused") == "other-plan")
    # What the code before this check stored: no refusal, and the user PRO through that subscription.
    ref.update({"refused": None})
    now = clock.now()
    part = entitlements.paypal_part(paypal_api.client().get_subscription(sub_id), None, now)
    entitlements.ref(b.uid).set(entitlements.stamp(b.uid, entitlements.track({}, part), now, created=True))
    assert entitlements.is_pro(b.uid)

    r = cli("billing", "resync", b.email, "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == {"resynced": {sub_id: "refused:other-plan"}}
    assert not entitlements.is_pro(b.uid) and _me(b)["subscription"]["plan"] == "free"
    assert ref.get().to_dict()["refused"] == "other-plan" and ref.get().to_dict()["uid"] == b.uid
    assert [e["outcome"] for e in audit.for_actor(b.uid) if e["action"] == "billing.refused"][-1] == "other-plan"
    # Every live subscription (no email): refused again, PRO still not granted.
    r = cli("billing", "resync", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["resynced"][sub_id] == "refused:other-plan"
    assert not entitlements.is_pro(b.uid)


# --- billing bootstrap ------------------------------------------------------------------------------


def _bootstrap(cli, url: str) -> dict:
    r = cli("billing", "bootstrap", "--webhook-url", url, "--json")
    assert r.returncode == 0, r.stderr
    ids = json.loads(r.stdout)
    assert set(ids) == {"product_id", "plan_id", "webhook_id"}
    assert re.fullmatch(r"PROD-[A-Z0-9]+", ids["product_id"]), ids
    assert re.fullmatch(r"P-[A-Z0-9]+", ids["plan_id"]), ids
    assert re.fullmatch(r"[A-Za-z0-9]+", ids["webhook_id"]), ids
    return ids


def test_billing_bootstrap_is_idempotent(cli, stack: Stack, unique: str) -> None:
    # the stack's own environment: the same ids as the stack's bootstrap stored
    own = _bootstrap(cli, f"{stack.gateway_url}/payments/paypal/webhook")
    assert own == subscriptions.paypal_ids()

    url = f"https://hooks.example.test/paypal/{unique}"
    client = paypal_api.client()
    try:
        first = _bootstrap(cli, url)
        second = _bootstrap(cli, url)
        assert second == first, "a second bootstrap must find the product, the plan and the webhook again"
        assert (first["product_id"], first["plan_id"]) == (own["product_id"], own["plan_id"])
        assert first["webhook_id"] != own["webhook_id"]
        assert [w["id"] for w in client.list_webhooks() if w.get("url") == url] == [first["webhook_id"]]
    finally:  # the stand-in allows 10 webhooks and would deliver every event to this one too
        for hook in client.list_webhooks():
            if hook.get("url") == url:
                client.request("DELETE", f"/v1/notifications/webhooks/{hook['id']}")

    r = cli("billing", "bootstrap", "--webhook-url", "ftp://example.test/hook")
    assert r.returncode == 2 and "https" in r.stderr
