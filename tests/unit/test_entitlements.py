"""Entitlements are pure functions of their stored components and the time (docs/architecture.md, entitlements)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mllab.billing import entitlements
from mllab.platform import config

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
DAY = timedelta(days=1)
GRACE = timedelta(days=config.LIMITS.past_due_grace_days)


def paypal(
    status: str,
    *,
    next_billing: datetime | None = NOW + 30 * DAY,
    failed: int = 0,
    owed: str = "0.0",
    failed_at: datetime | None = None,
    sub_id: str = "I-AAAAAAAAAAAA",
    created: datetime = NOW - 60 * DAY,
) -> dict:
    billing = {
        "failed_payments_count": failed,
        "outstanding_balance": {"currency_code": "USD", "value": owed},
        "last_payment": {
            "amount": {"currency_code": "USD", "value": "15.00"},
            "time": (NOW - DAY).isoformat().replace("+00:00", "Z"),
        },
    }
    if next_billing:
        billing["next_billing_time"] = next_billing.isoformat().replace("+00:00", "Z")
    if failed_at:
        billing["last_failed_payment"] = {
            "time": failed_at.isoformat().replace("+00:00", "Z"),
            "reason_code": "PAYMENT_DENIED",
        }
    return {
        "id": sub_id,
        "status": status,
        "plan_id": "P-1",
        "create_time": created.isoformat(),
        "status_update_time": NOW.isoformat(),
        "billing_info": billing,
    }


def with_paypal(*snapshots: dict, now: datetime = NOW) -> dict:
    doc: dict = {}
    for snap in snapshots:
        doc = entitlements.track(doc, entitlements.paypal_part(snap, doc.get("paypal"), now)) or doc
    return doc


def test_no_document_is_free_with_status_none() -> None:
    view = entitlements.view(None, NOW)
    assert (view.status, view.plan, view.pro_until, view.past_due) == ("none", "free", None, False)


def test_active_subscription_is_pro_until_next_billing_plus_grace() -> None:
    doc = with_paypal(paypal("ACTIVE"))
    view = entitlements.view(doc, NOW)
    assert (view.status, view.plan) == ("active", "pro")
    assert entitlements.pro_until(doc) == NOW + 30 * DAY + GRACE
    assert view.next_billing_time == "2026-12-22T12:00:00Z"


def test_cancel_keeps_access_exactly_until_the_paid_through_date() -> None:
    doc = with_paypal(paypal("ACTIVE"), paypal("CANCELLED", next_billing=None))
    assert entitlements.pro_until(doc) == NOW + 30 * DAY
    assert entitlements.view(doc, NOW).model_dump() == {
        "status": "canceled",
        "plan": "pro",
        "pro_until": "2026-12-22T12:00:00Z",
        "trial_until": None,
        "next_billing_time": None,
        "past_due": False,
        "last_payment": {"time": "2026-11-21T12:00:00Z", "value": "15.00", "currency": "USD"},
        "manage_url": None,  # nothing left to manage at PayPal once canceled
        "first_charge_time": "2026-12-22T12:00:00Z",
    }  # subscribing again first charges when this ends
    assert entitlements.view(doc, NOW + 30 * DAY + timedelta(seconds=1)).plan == "free"


def test_a_failed_payment_is_past_due_for_the_grace_then_access_ends() -> None:
    failed_at = NOW + 30 * DAY
    doc = with_paypal(
        paypal("ACTIVE"), paypal("ACTIVE", next_billing=NOW + 60 * DAY, failed=1, owed="15.00", failed_at=failed_at)
    )
    during = entitlements.view(doc, failed_at + DAY)
    assert (during.status, during.plan, during.past_due) == ("past_due", "pro", True)
    # PayPal moved next_billing_time to the next cycle, but nothing was paid: no extension.
    assert entitlements.pro_until(doc) == failed_at + GRACE
    after = entitlements.view(doc, failed_at + GRACE + timedelta(seconds=1))
    assert (after.status, after.plan) == ("canceled", "free")


def test_suspension_ends_access_after_the_grace_and_a_payment_restores_it() -> None:
    failed_at = NOW + 30 * DAY
    suspended = with_paypal(paypal("ACTIVE"), paypal("SUSPENDED", failed=2, owed="30.00", failed_at=failed_at))
    assert entitlements.view(suspended, failed_at).status == "past_due"
    assert entitlements.pro_until(suspended) == failed_at + GRACE
    restored = with_paypal(
        paypal("ACTIVE"),
        paypal("SUSPENDED", failed=2, owed="30.00", failed_at=failed_at),
        paypal("ACTIVE", next_billing=NOW + 61 * DAY),
    )
    assert entitlements.view(restored, failed_at + DAY).status == "active"
    assert restored["paypal"]["past_due_since"] is None


def test_precedence_active_over_past_due_over_trial_over_canceled() -> None:
    trial = entitlements.with_trial({}, 14, NOW)
    assert entitlements.status(trial, NOW) == "trial"
    comp = entitlements.with_comp(trial, None, NOW)
    assert entitlements.status(comp, NOW) == "active"
    assert entitlements.pro_until(comp) == entitlements.FOREVER
    failing = with_paypal(paypal("ACTIVE", failed=1, owed="15.00", failed_at=NOW))
    assert entitlements.status({**failing, "trial_until": NOW + 5 * DAY}, NOW) == "past_due"
    cancelled = with_paypal(paypal("ACTIVE"), paypal("CANCELLED", next_billing=None))
    assert entitlements.status({**cancelled, "trial_until": NOW + 5 * DAY}, NOW) == "trial"


def test_a_trial_starts_where_existing_pro_ends() -> None:
    cancelled = with_paypal(paypal("ACTIVE"), paypal("CANCELLED", next_billing=None))
    doc = entitlements.with_trial(cancelled, 14, NOW)
    assert doc["trial_until"] == NOW + 30 * DAY + 14 * DAY
    again = entitlements.with_trial(entitlements.with_trial({}, 7, NOW), 7, NOW)
    assert again["trial_until"] == NOW + 14 * DAY


def test_grants_without_days_last_forever_and_revoke_leaves_paypal_alone() -> None:
    doc = entitlements.with_grant(with_paypal(paypal("ACTIVE")), None, NOW)
    assert doc["admin_until"] == entitlements.FOREVER
    assert entitlements.source(doc, NOW) == "admin"
    revoked = entitlements.without_grants(doc)
    assert entitlements.status(revoked, NOW) == "active" and entitlements.source(revoked, NOW) == "paypal"
    assert entitlements.with_grant({}, 10, NOW)["admin_until"] == NOW + 10 * DAY


def test_an_older_subscription_never_replaces_the_tracked_one() -> None:
    old = paypal("CANCELLED", next_billing=None, sub_id="I-OLD000000001", created=NOW - 90 * DAY)
    new = paypal("ACTIVE", sub_id="I-NEW000000002", created=NOW - DAY)
    doc = with_paypal(paypal("ACTIVE", sub_id="I-OLD000000001", created=NOW - 90 * DAY), new)
    assert doc["paypal"]["subscription_id"] == "I-NEW000000002"
    assert doc["paypal_prior"] == NOW + 30 * DAY + GRACE  # what the old one owed is kept
    assert entitlements.track(doc, entitlements.paypal_part(old, doc["paypal"], NOW)) is None


def test_pending_checkout_gives_nothing() -> None:
    doc = with_paypal({"id": "I-PEND00000001", "status": "APPROVAL_PENDING", "create_time": NOW.isoformat()})
    assert entitlements.view(doc, NOW).model_dump()["status"] == "none"
    assert entitlements.pro_until(doc) is None


def test_stamp_stores_the_flat_fields_design_lists() -> None:
    doc = entitlements.stamp("u1", with_paypal(paypal("ACTIVE")), NOW, created=True)
    assert doc["plan"] == "pro" and doc["status"] == "active" and doc["source"] == "paypal"
    assert doc["paypal_subscription_id"] == "I-AAAAAAAAAAAA" and doc["uid"] == "u1"
    assert doc["created_at"] == doc["updated_at"] == NOW


@pytest.mark.parametrize("value", ["", "yesterday", None, 5, "2026-13-40T00:00:00Z"])
def test_garbage_times_from_paypal_are_absent(value: object) -> None:
    assert entitlements.parse_time(value) is None


@given(
    days=st.lists(st.integers(min_value=1, max_value=400), min_size=1, max_size=6),
    offset=st.integers(min_value=0, max_value=1000),
)
def test_trials_only_ever_extend_access(days: list[int], offset: int) -> None:
    doc: dict = {}
    now = NOW + timedelta(hours=offset)
    last = None
    for n in days:
        doc = entitlements.with_trial(doc, n, now)
        until = entitlements.pro_until(doc)
        assert until is not None and until > now
        assert last is None or until == last + timedelta(days=n)
        last = until


def test_a_billed_subscription_shows_its_last_payment_and_where_to_manage_it() -> None:
    view = entitlements.view(with_paypal(paypal("ACTIVE")), NOW)
    assert view.last_payment.model_dump() == {"time": "2026-11-21T12:00:00Z", "value": "15.00", "currency": "USD"}
    assert view.manage_url == "https://www.sandbox.paypal.com/myaccount/autopay/"  # the settings' sandbox API
    failing = entitlements.view(with_paypal(paypal("ACTIVE"), paypal("SUSPENDED", failed=1, failed_at=NOW)), NOW)
    assert failing.past_due and failing.manage_url  # where to fix the payment method
    assert (
        entitlements.view(entitlements.with_grant({}, 14, NOW), NOW).manage_url is None
    )  # a trial has nothing at PayPal
