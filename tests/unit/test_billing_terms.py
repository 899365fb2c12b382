"""Which PayPal subscriptions entitle (only the configured PRO plan at its price and currency), the
alert that watches the refusals, when a delayed start's PRO begins and ends, and the mail keys that
make each billing mail go out once per event."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from mllab.billing import entitlements, subscriptions
from mllab.platform import log
from tests.unit.helpers import LogCapture

ROOT = Path(__file__).resolve().parents[2]
PLAN_ID = "P-PRO000000000000000000001"
NOW = datetime(2026, 12, 7, 9, 0, tzinfo=UTC)


def plan(value: str = "15.00", currency: str = "USD") -> dict[str, Any]:
    return {
        "id": PLAN_ID,
        "billing_cycles": [
            {
                "tenure_type": "REGULAR",
                "sequence": 1,
                "pricing_scheme": {"fixed_price": {"value": value, "currency_code": currency}},
            }
        ],
    }


def subscription(**fields: Any) -> dict[str, Any]:
    return {"id": "I-AAAAAAAAAAAA", "status": "ACTIVE", "plan_id": PLAN_ID, "custom_id": "u1", **fields}


def paid(value: str, currency: str = "USD") -> dict[str, Any]:
    return {"last_payment": {"amount": {"value": value, "currency_code": currency}, "time": "2026-12-07T09:00:00Z"}}


@pytest.mark.parametrize(
    ("snapshot", "configured", "reason"),
    [
        (subscription(), plan(), None),
        (subscription(billing_info=paid("15.00")), plan(), None),
        (subscription(billing_info=paid("15")), plan(), None),  # the same amount, written differently
        (subscription(plan_id="P-OTHER00000000000000000001"), plan(), "other-plan"),
        (subscription(plan_id="P-OTHER00000000000000000001", billing_info=paid("0.01")), None, "other-plan"),
        (subscription(plan_overridden=True), plan(), "plan-overridden"),
        (subscription(plan={"billing_cycles": []}), plan(), "plan-overridden"),
        (subscription(), plan("0.01"), "plan-price"),
        (subscription(), plan("15.00", "EUR"), "plan-price"),
        (subscription(), {"id": PLAN_ID}, "plan-price"),
        (subscription(billing_info=paid("0.01")), plan(), "payment-amount"),
        (subscription(billing_info=paid("15.00", "EUR")), plan(), "payment-amount"),
    ],
)
def test_only_the_pro_plan_at_its_price_and_currency_entitles(snapshot, configured, reason) -> None:
    assert subscriptions.refusal(snapshot, PLAN_ID, "15.00", "USD", configured) == reason


# --- the alert policy matches the refusal's log line ---------------------------------------------

_CLAUSE = re.compile(r'\s*([\w.]+)\s*(>=|=)\s*("(?:[^"\\]|\\.)*"|\w+)\s*')
_SEVERITIES = ["DEFAULT", "DEBUG", "INFO", "NOTICE", "WARNING", "ERROR", "CRITICAL", "ALERT", "EMERGENCY"]


def matches(log_filter: str, entry: dict[str, Any]) -> bool:
    """Cloud Logging's filter language, the part our policies use: clauses joined by AND, `=` on a
    field path, `>=` on severity."""
    for clause in log_filter.split(" AND "):
        m = _CLAUSE.fullmatch(clause)
        assert m, f"clause outside the subset this test evaluates: {clause!r}"
        path, op, raw = m.groups()
        want = json.loads(raw) if raw.startswith('"') else raw
        have: Any = entry
        for part in path.split(".") if not path.startswith("resource.") else [path]:
            have = have.get(part) if isinstance(have, dict) else None
        if op == ">=":
            if have not in _SEVERITIES or _SEVERITIES.index(have) < _SEVERITIES.index(want):
                return False
        elif have != want:
            return False
    return True


def as_logged(record: dict[str, Any]) -> dict[str, Any]:
    """What Cloud Logging makes of a JSON line a Cloud Run service writes to stdout."""
    payload = {k: v for k, v in record.items() if k != "severity"}
    return {"resource.type": "cloud_run_revision", "severity": record["severity"], "jsonPayload": payload}


def refused_policy() -> str:
    policy = json.loads((ROOT / "infra/monitoring/refused-subscriptions.json").read_text())
    [condition] = policy["conditions"]
    assert policy["alertStrategy"]["notificationRateLimit"]  # a log-based policy must have one
    return condition["conditionMatchedLog"]["filter"]


def test_the_alert_policy_matches_the_refusal_log_line(logs: LogCapture) -> None:
    log.error(
        subscriptions.REFUSED_LOG, uid="u1", subscription_id="I-AAAAAAAAAAAA", reason="other-plan", plan_id="P-OTHER"
    )
    log.info("subscription applied", uid="u1", subscription_id="I-AAAAAAAAAAAA", refused="other-plan")
    log.warning(subscriptions.REFUSED_LOG, uid="u1")  # the same words at a lower severity: not this alert
    refused, applied, lower = (as_logged(r) for r in logs.records())
    assert matches(refused_policy(), refused)
    assert not matches(refused_policy(), applied) and not matches(refused_policy(), lower)


# --- a delayed start: PRO carried to the first charge, never given for nothing ------------------


def scheduled(start: datetime, fetched: datetime = NOW) -> dict[str, Any]:
    snapshot = subscription(
        start_time=start.strftime("%Y-%m-%dT%H:%M:%SZ"),
        billing_info={
            "next_billing_time": start.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "failed_payments_count": 0,
            "outstanding_balance": {"value": "0.00", "currency_code": "USD"},
        },
    )
    return entitlements.paypal_part(snapshot, None, fetched)


def test_nothing_paid_means_no_paid_through() -> None:
    part = scheduled(NOW + timedelta(days=20))
    assert part["paid_through"] is None and entitlements.paypal_until(part) is None
    assert entitlements.awaiting_first_payment(part)


def test_a_delayed_start_after_a_paid_through_date_continues_pro_without_a_gap() -> None:
    start = NOW + timedelta(days=20)
    doc = {"paypal_prior": start, "paypal": scheduled(start)}
    until = entitlements.pro_until(doc)
    assert until == start + timedelta(days=7)  # to the first charge, plus the grace PayPal's booking may need
    for moment in (NOW, start - timedelta(seconds=1), start, start + timedelta(days=6)):
        assert entitlements.status(doc, moment) == "active"
    view = entitlements.view(doc, NOW)
    assert view.first_charge_time == "2026-12-27T09:00:00Z" and view.plan == "pro"


def test_a_delayed_start_after_a_trial_continues_pro() -> None:
    start = NOW + timedelta(days=14)
    doc = {"trial_until": start, "paypal": scheduled(start)}
    assert entitlements.pro_until(doc) == start + timedelta(days=7)


def test_a_far_future_start_with_nothing_before_it_gives_nothing() -> None:
    doc = {"paypal": scheduled(NOW + timedelta(days=365))}
    assert entitlements.pro_until(doc) is None and entitlements.plan_of(doc, NOW).id == "free"
    doc = {"trial_until": NOW + timedelta(days=3), "paypal": scheduled(NOW + timedelta(days=365))}
    assert entitlements.pro_until(doc) == NOW + timedelta(days=3)  # the trial only


def test_a_start_already_due_when_read_carries_the_grace_until_its_sale() -> None:
    doc = {"paypal": scheduled(NOW - timedelta(minutes=1))}
    assert entitlements.pro_until(doc) == NOW - timedelta(minutes=1) + timedelta(days=7)


@pytest.mark.parametrize(
    ("doc", "expected"),
    [
        ({}, None),
        ({"trial_until": NOW + timedelta(days=5)}, NOW + timedelta(days=5)),
        ({"paypal_prior": NOW + timedelta(days=30)}, NOW + timedelta(days=30)),
        ({"comp_until": NOW + timedelta(days=2), "trial_until": NOW + timedelta(days=1)}, NOW + timedelta(days=2)),
        ({"trial_until": NOW + timedelta(minutes=3)}, None),  # too close: start at once
        ({"trial_until": NOW - timedelta(days=1)}, None),
    ],
)
def test_the_first_charge_is_at_the_end_of_the_pro_already_held(doc, expected) -> None:
    assert entitlements.first_charge(doc, NOW) == expected


# --- one mail per event --------------------------------------------------------------------------


def test_mail_keys_name_the_event_not_the_delivery() -> None:
    sale = {"id": "5TY05013RG002845M", "amount": {"total": "15.00", "currency": "USD"}}
    active = subscription(status_update_time="2026-12-07T09:00:00Z")
    assert subscriptions._notice_keys(active, sale) == subscriptions._notice_keys(
        json.loads(json.dumps(active)), dict(sale)
    )
    templates = dict((t, k) for k, t in subscriptions._notice_keys(active, sale))
    assert set(templates) == {"subscription_activated", "payment_receipt"}
    assert "5TY05013RG002845M" in templates["payment_receipt"]
    failing = subscription(
        billing_info={"failed_payments_count": 1, "last_failed_payment": {"time": "2026-12-08T09:00:00Z"}}
    )
    again = subscription(
        billing_info={"failed_payments_count": 2, "last_failed_payment": {"time": "2026-12-13T09:00:00Z"}}
    )
    first = [k for k, t in subscriptions._notice_keys(failing, None) if t == "payment_failed"]
    second = [k for k, t in subscriptions._notice_keys(again, None) if t == "payment_failed"]
    assert first and second and first != second  # each failed attempt is its own event
    suspended = subscription(status="SUSPENDED", status_update_time="2026-12-13T09:00:01Z")
    cancelled = subscription(status="CANCELLED")
    assert [t for _, t in subscriptions._notice_keys(suspended, None)] == ["past_due"]
    assert [t for _, t in subscriptions._notice_keys(cancelled, None)] == ["subscription_canceled"]
    for keys in (subscriptions._notice_keys(active, sale), subscriptions._notice_keys(again, None)):
        assert all(re.fullmatch(r"[A-Za-z0-9:._-]{1,300}", k) for k, _ in keys)  # Firestore document ids


def test_an_older_subscription_paid_after_a_newer_one_was_tracked_still_counts() -> None:
    """Events in any order: a newer checkout is tracked first, then an older one is paid (an old tab
    approved): the month it paid for is owed, so PRO lasts to the later of the two."""
    newer = entitlements.paypal_part(
        subscription(id="I-NEWER0000000", status="APPROVAL_PENDING", create_time="2026-12-07T09:00:00Z"), None, NOW
    )
    doc = entitlements.track({}, newer)
    older = entitlements.paypal_part(
        subscription(
            id="I-OLDER0000000", status="CANCELLED", create_time="2026-12-07T08:00:00Z", billing_info=paid("15.00")
        ),
        None,
        NOW,
    )
    older["paid_through"] = NOW + timedelta(days=30)
    doc = entitlements.track(doc, older)
    assert doc is not None and doc["paypal"]["subscription_id"] == "I-NEWER0000000"
    assert entitlements.pro_until(doc) == NOW + timedelta(days=30)
    assert entitlements.track(doc, older) is None  # nothing more owed: the record only


def test_an_ended_subscription_as_old_as_the_tracked_live_one_does_not_displace_it() -> None:
    """PayPal's create_time has whole seconds: a checkout made right after a cancel can carry the same
    create_time as the subscription it follows. A late event of the cancelled one keeps the live one
    tracked and only adds what it was paid for."""
    same = "2026-12-07T09:00:00Z"
    live = entitlements.paypal_part(subscription(id="I-LIVE00000000", status="ACTIVE", create_time=same), None, NOW)
    doc = entitlements.track({}, live)
    ended = entitlements.paypal_part(
        subscription(id="I-ENDED0000000", status="CANCELLED", create_time=same, billing_info=paid("15.00")), None, NOW
    )
    ended["paid_through"] = NOW + timedelta(days=20)
    doc = entitlements.track(doc, ended)
    assert doc is not None and doc["paypal"]["subscription_id"] == "I-LIVE00000000"
    assert doc["paypal_prior"] == NOW + timedelta(days=20)
