"""PayPal subscriptions through the gateway, the billing functions and the PayPal stand-in:
checkout, approval, the webhooks that follow, sync, cancel, dunning, reconciliation, deletion."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import httpx
import pytest

from mllab.billing import entitlements, subscriptions
from mllab.platform import audit, clients, clock, config
from mllab.platform.problems import Problem

from .billing_support import (
    all_delivered,
    checkout,
    deliveries_settled,
    event_marker,
    foreign_subscription,
    mails_to,
    move_paypal_clock,
    sales_of,
    subscribe,
    subscription_status,
    wait,
)
from .conftest import PASSWORD


def _mapping(sub_id: str) -> dict:
    snap = clients.firestore().collection(subscriptions.SUBSCRIPTIONS).document(sub_id).get()
    return snap.to_dict() if snap.exists else {}


def test_plans_come_from_the_one_table(gateway: httpx.Client) -> None:
    r = gateway.get("/billing/plans")
    assert r.status_code == 200 and "max-age=300" in r.headers["cache-control"]
    plans = {p["id"]: p for p in r.json()["plans"]}
    assert plans["pro"]["price"] == {"value": "15.00", "currency": "USD"} and plans["pro"]["interval"] == "month"
    pro, free = plans["pro"]["limits"], plans["free"]["limits"]
    assert (pro["cloud_saves"], pro["storage_bytes"], pro["uploads_per_day"]) == (True, 5 * 1024**3, 200)
    assert free["cloud_saves"] is False
    for plan_id, limits in (("pro", pro), ("free", free)):  # the counts each plan allows, from the same table
        table = config.PLANS[plan_id]
        assert {k: limits[k] for k in ("projects", "models", "versions_per_model", "datasets", "jobs")} == {
            "projects": table.projects,
            "models": table.models,
            "versions_per_model": table.versions_per_model,
            "datasets": table.datasets,
            "jobs": table.jobs,
        }


def test_checkout_is_mapped_before_the_approve_url_is_returned(member, paypal: httpx.Client) -> None:
    b = member()
    r = b.request("POST", "/billing/paypal/subscribe")
    assert r.status_code == 200, r.text
    sub_id, approve = r.json()["subscription_id"], r.json()["approve_url"]
    assert approve.startswith(paypal.base_url.__str__().rstrip("/") + "/webapps/billing/subscriptions?ba_token=BA-")
    stored = _mapping(sub_id)
    assert stored["uid"] == b.uid and stored["status"] == "APPROVAL_PENDING"
    at_paypal = paypal.get(f"/_standin/subscriptions/{sub_id}").json()["subscription"]
    assert at_paypal["custom_id"] == b.uid  # the cross-check PayPal carries back
    # Leaving and coming back to checkout gives the same subscription, not a second one.
    again = b.request("POST", "/billing/paypal/subscribe").json()
    assert again == {
        "subscription_id": sub_id,
        "approve_url": approve,
        "first_charge_time": None,
        "amount": {"value": "15.00", "currency": "USD"},
    }  # a free user pays at approval
    assert subscription_status(b)["status"] == "none"  # nothing is paid before approval


def test_subscribe_through_the_approval_page_then_see_active(member, paypal: httpx.Client) -> None:
    b = member()
    r = b.request("POST", "/billing/paypal/subscribe")
    sub_id, approve = r.json()["subscription_id"], r.json()["approve_url"]
    page = paypal.get(approve.replace(str(paypal.base_url).rstrip("/"), ""))
    assert page.status_code == 200 and "Agree" in page.text and "15.00" in page.text
    back = paypal.post("/webapps/billing/subscriptions/approve", data={"ba_token": approve.split("ba_token=")[1]})
    assert back.status_code in (302, 303)
    assert back.headers["location"].startswith(f"{b.origin}/?billing=return") and sub_id in back.headers["location"]
    # On return the lab syncs at once, whatever the webhooks are doing.
    synced = b.request("POST", "/billing/sync", json_body={"subscription_id": sub_id})
    assert synced.status_code == 200, synced.text
    assert synced.json()["status"] == "active" and synced.json()["plan"] == "pro"
    me = b.request("GET", "/me").json()
    assert me["subscription"]["next_billing_time"] and me["usage"]["storage_limit_bytes"] == 5 * 1024**3
    # The webhooks PayPal sent (ACTIVATED, PAYMENT.SALE.COMPLETED) were verified and processed.
    sent = paypal.get("/_standin/events", params={"subscription_id": sub_id}).json()["events"]
    types = {e["event_type"] for e in sent}
    assert {"BILLING.SUBSCRIPTION.ACTIVATED", "PAYMENT.SALE.COMPLETED"} <= types
    assert wait(
        lambda: all(
            d.get("status") == 200
            for e in sent
            for d in paypal.get(f"/_standin/events/{e['id']}").json()["event"]["deliveries"]
        )
    )
    ent = entitlements.get(b.uid)
    assert ent["paypal_subscription_id"] == sub_id and ent["source"] == "paypal" and ent["ever_pro"] is True


def test_a_second_live_subscription_is_refused(member, paypal: httpx.Client) -> None:
    b = member()
    subscribe(b, paypal)
    r = b.request("POST", "/billing/paypal/subscribe")
    assert r.status_code == 409 and r.json()["type"].endswith("already-subscribed")
    assert "already have a subscription" in r.json()["detail"]


def test_an_unverified_email_cannot_subscribe(new_user) -> None:
    # Sign-in already requires a verified email; checkout checks again rather than trust that.
    from mllab.identity import users

    uid = new_user(verified=False)["uid"]
    with pytest.raises(Problem) as refused:
        subscriptions.subscribe(users.get(uid))
    assert refused.value.status == 403 and refused.value.slug == "email-unverified"
    assert subscriptions.subscriptions_of(uid) == []


def test_sync_of_someone_elses_subscription_is_404(member, paypal: httpx.Client) -> None:
    owner, other = member(), member()
    sub_id = owner.request("POST", "/billing/paypal/subscribe").json()["subscription_id"]
    r = other.request("POST", "/billing/sync", json_body={"subscription_id": sub_id})
    assert r.status_code == 404 and r.headers["content-type"] == "application/problem+json"
    bad = other.request("POST", "/billing/sync", json_body={"subscription_id": "not-an-id"})
    assert bad.status_code == 422


def test_cancel_keeps_access_until_the_paid_through_date(member, paypal: httpx.Client) -> None:
    b = member()
    sub_id = subscribe(b, paypal)
    paid_through = entitlements.get(b.uid)["paypal"]["paid_through"]
    r = b.request("POST", "/billing/cancel", json_body={"reason": "Trying something else"})
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "canceled" and r.json()["plan"] == "pro"
    assert r.json()["pro_until"] == clock.rfc3339(paid_through)  # no grace added after a cancel
    assert paypal.get(f"/_standin/subscriptions/{sub_id}").json()["subscription"]["status"] == "CANCELLED"
    assert mails_to(b.email, "subscription_canceled")
    assert [e["outcome"] for e in audit.for_actor(b.uid) if e["action"] == "billing.cancel"] == ["ok"]
    # Nothing left to cancel.
    again = b.request("POST", "/billing/cancel", json_body={})
    assert again.status_code == 409 and again.json()["type"].endswith("no-subscription")
    # PRO holds to the paid-through date, then ends.
    with clock.travel(to=paid_through - timedelta(minutes=1)):
        assert entitlements.is_pro(b.uid)
    with clock.travel(to=paid_through + timedelta(seconds=1)):
        assert not entitlements.is_pro(b.uid)
        assert entitlements.view(entitlements.get(b.uid), clock.now()).status == "canceled"


def test_already_cancelled_at_paypal_counts_as_cancelled(member, paypal: httpx.Client) -> None:
    b = member()
    sub_id = subscribe(b, paypal)
    # The user cancelled in their PayPal account and that webhook has not arrived.
    paypal.post(f"/_standin/subscriptions/{sub_id}/simulate", json={"event": "cancelled", "deliver": False})
    r = b.request("POST", "/billing/cancel", json_body={})
    assert r.status_code == 200 and r.json()["status"] == "canceled"
    assert [e["outcome"] for e in audit.for_actor(b.uid) if e["action"] == "billing.cancel"] == ["already-cancelled"]


def test_payment_failed_is_past_due_then_access_ends_after_the_grace(member, paypal: httpx.Client) -> None:
    b = member()
    sub_id = subscribe(b, paypal)
    paypal.post(f"/_standin/subscriptions/{sub_id}/simulate", json={"event": "payment-failed"})
    assert wait(lambda: subscription_status(b)["status"] == "past_due"), subscription_status(b)
    status = subscription_status(b)
    assert status["past_due"] is True and status["plan"] == "pro"
    assert wait(lambda: mails_to(b.email, "payment_failed"))
    # The second failure reaches the plan's threshold: PayPal suspends, we stay past due for the grace.
    paypal.post(f"/_standin/subscriptions/{sub_id}/simulate", json={"event": "payment-failed"})
    assert wait(lambda: _mapping(sub_id).get("status") == "SUSPENDED")
    assert wait(lambda: mails_to(b.email, "past_due"))
    ent = entitlements.get(b.uid)
    grace_end = ent["paypal"]["past_due_since"] + timedelta(days=config.LIMITS.past_due_grace_days)
    assert entitlements.pro_until(ent) >= grace_end
    with clock.travel(to=max(grace_end, ent["paypal"]["paid_through"]) + timedelta(seconds=1)):
        assert not entitlements.is_pro(b.uid)
    # Paying restores it.
    paypal.post(f"/_standin/subscriptions/{sub_id}/simulate", json={"event": "reactivated"})
    paypal.post(f"/_standin/subscriptions/{sub_id}/simulate", json={"event": "payment-completed"})
    assert wait(lambda: subscription_status(b)["status"] == "active"), subscription_status(b)


def test_a_missed_webhook_is_repaired_by_reconciliation(member, paypal: httpx.Client) -> None:
    b = member()
    sub_id = subscribe(b, paypal)
    paypal.post(f"/_standin/subscriptions/{sub_id}/simulate", json={"event": "expired", "deliver": False})
    assert subscription_status(b)["status"] == "active"  # nobody told us
    until = entitlements.get(b.uid)["pro_until"]
    # A day before access would end, the daily job re-reads it.
    with clock.travel(to=until - timedelta(days=1)):
        counts = subscriptions.reconcile()
        assert counts["checked"] >= 1 and counts["changed"] >= 1 and counts["failed"] == 0
        assert entitlements.view(entitlements.get(b.uid), clock.now()).status == "canceled"
    assert _mapping(sub_id)["status"] == "EXPIRED"


def test_reconciliation_expires_a_checkout_never_approved(member, paypal: httpx.Client) -> None:
    b = member()
    sub_id = b.request("POST", "/billing/paypal/subscribe").json()["subscription_id"]
    with clock.travel(by=timedelta(seconds=config.CHECKOUT_PENDING_S + 60)):
        assert subscriptions.reconcile()["abandoned"] == 1
        assert _mapping(sub_id)["status"] == subscriptions.ABANDONED
        # A new checkout is a new subscription.
        fresh = b.request("POST", "/billing/paypal/subscribe").json()["subscription_id"]
    assert fresh != sub_id


def test_reconciliation_mails_once_before_access_ends(member, paypal: httpx.Client) -> None:
    b = member()
    subscribe(b, paypal)
    b.request("POST", "/billing/cancel", json_body={})
    until = entitlements.get(b.uid)["pro_until"]
    with clock.travel(to=until - timedelta(days=2)):
        assert subscriptions.reconcile()["notified"] == 1
        assert subscriptions.reconcile()["notified"] == 0
    assert len(mails_to(b.email, "access_ending")) == 1


def test_paypal_down_answers_503_and_changes_nothing(member, paypal: httpx.Client) -> None:
    b = member()
    paypal.post("/_standin/faults", json={"status": 503, "count": 3, "path_prefix": "/v1/billing/subscriptions"})
    r = b.request("POST", "/billing/paypal/subscribe")
    assert r.status_code == 503 and r.headers["content-type"] == "application/problem+json"
    assert "Retry-After" in r.headers
    assert subscriptions.subscriptions_of(b.uid) == []


def test_deleting_the_account_cancels_the_subscription_and_export_has_billing(member, paypal: httpx.Client) -> None:
    b = member()
    sub_id = subscribe(b, paypal)
    export = b.request("GET", "/account/export").json()
    assert export["entitlement"]["status"] == "active" and export["entitlement"]["paypal_subscription_id"] == sub_id
    assert [s["id"] for s in export["subscriptions"]] == [sub_id] and export["promo_redemptions"] == []
    assert "snapshot" not in export["subscriptions"][0]
    r = b.request("DELETE", "/account", json_body={"password": PASSWORD})
    assert r.status_code == 204, r.text
    assert paypal.get(f"/_standin/subscriptions/{sub_id}").json()["subscription"]["status"] == "CANCELLED"
    assert [e["outcome"] for e in audit.for_actor(b.uid) if e["action"] == "billing.cancel"] == ["account-deleted"]


def test_deletion_is_refused_when_paypal_cannot_cancel(member, paypal: httpx.Client) -> None:
    b = member()
    subscribe(b, paypal)
    paypal.post("/_standin/faults", json={"status": 503, "count": 5, "path_prefix": "/v1/billing/subscriptions"})
    r = b.request("DELETE", "/account", json_body={"password": PASSWORD})
    assert r.status_code == 503
    paypal.delete("/_standin/faults")
    assert b.request("GET", "/me").status_code == 200  # not deleted, still signed in


def test_free_user_gets_no_storage_and_a_subscriber_does(member, paypal: httpx.Client) -> None:
    b = member()
    usage = b.request("GET", "/me").json()["usage"]
    assert usage["storage_limit_bytes"] == 0 and usage["uploads_limit"] == 0
    subscribe(b, paypal)
    usage = b.request("GET", "/me").json()["usage"]
    assert usage["storage_limit_bytes"] == config.LIMITS.pro_storage_bytes and usage["uploads_limit"] == 200


def test_purge_removes_entitlements_and_keeps_an_anonymous_ledger(member, paypal: httpx.Client) -> None:
    from mllab import account
    from mllab.identity import users

    b = member()
    sub_id = subscribe(b, paypal)
    users.update(b.uid, deleted_at=clock.now() - timedelta(days=31))
    assert account.purge(clock.now()) >= 1
    assert entitlements.get(b.uid) is None
    ledger = _mapping(sub_id)
    assert ledger["uid"] == "purged" and ledger["snapshot"] is None and ledger["status"] == "ACTIVE"


# --- nobody pays twice for the same day ----------------------------------------------------------


def _first_charge(paid_until) -> str:
    """The start the checkout asks PayPal for: the end of the PRO already held, in whole seconds."""
    return clock.rfc3339(paid_until.replace(microsecond=0) + timedelta(seconds=1))


def test_resubscribing_after_cancel_charges_at_the_paid_through_date_not_today(member, paypal: httpx.Client) -> None:
    b = member()
    old = subscribe(b, paypal)
    assert b.request("POST", "/billing/cancel", json_body={}).status_code == 200
    paid_through = entitlements.get(b.uid)["paypal"]["paid_through"]
    # Before any checkout, the billing screen can already say when the first charge would be.
    assert subscription_status(b)["first_charge_time"] == clock.rfc3339(paid_through)

    answer = checkout(b, paypal)
    new = answer["subscription_id"]
    assert new != old
    assert answer["first_charge_time"] == _first_charge(paid_through)
    assert answer["amount"] == {"value": "15.00", "currency": "USD"}
    at_paypal = paypal.get(f"/_standin/subscriptions/{new}").json()["subscription"]
    assert at_paypal["start_time"] == answer["first_charge_time"] and at_paypal["status"] == "ACTIVE"
    assert at_paypal["billing_info"]["next_billing_time"] == answer["first_charge_time"]
    assert "last_payment" not in at_paypal["billing_info"]
    assert sales_of(paypal, new) == []  # approving charged nothing
    assert len(sales_of(paypal, old)) == 1

    # PRO runs on: through the old paid-through date and past it, to the first charge.
    me = subscription_status(b)
    assert me["status"] == "active" and me["plan"] == "pro" and me["first_charge_time"] == answer["first_charge_time"]
    start = entitlements.parse_time(answer["first_charge_time"])
    for moment in (paid_through - timedelta(hours=1), paid_through + timedelta(seconds=1), start + timedelta(hours=1)):
        with clock.travel(to=moment):
            assert entitlements.is_pro(b.uid), moment
    # A second checkout now is refused: a subscription is live (scheduled).
    again = b.request("POST", "/billing/paypal/subscribe")
    assert again.status_code == 409 and again.json()["type"].endswith("already-subscribed")
    # The welcome says when the first charge comes; nothing was charged, so no receipt yet.
    assert wait(lambda: len(mails_to(b.email, "subscription_activated")) == 2)  # one per subscription
    welcome = mails_to(b.email, "subscription_activated")[-1]
    assert f"Your first charge of 15.00 USD will be on {start:%B %d, %Y}" in welcome["body"]
    assert len(mails_to(b.email, "payment_receipt")) == 1  # the old subscription's only
    # A late event of the old subscription changes nothing: the newer one is tracked, PRO unchanged.
    until = entitlements.pro_until(entitlements.get(b.uid))
    late = paypal.post(
        "/_standin/events/send", json={"subscription_id": old, "event_type": "BILLING.SUBSCRIPTION.CANCELLED"}
    ).json()["event"]
    assert wait(
        lambda: (
            deliveries_settled(paypal, old)
            and late["id"]
            in {e["id"] for e in paypal.get("/_standin/events", params={"subscription_id": old}).json()["events"]}
        )
    )
    assert wait(lambda: (event_marker(late["id"]) or {}).get("state") == "done")
    ent = entitlements.get(b.uid)
    assert ent["paypal_subscription_id"] == new and entitlements.pro_until(ent) == until

    # PayPal's clock reaches the start: the first (and only) charge of the new subscription.
    move_paypal_clock(paypal, answer["first_charge_time"])
    assert wait(lambda: len(sales_of(paypal, new)) == 1 and deliveries_settled(paypal, new))
    sale = sales_of(paypal, new)[0]
    assert sale["amount"]["total"] == "15.00" and sale["create_time"] >= answer["first_charge_time"]
    assert wait(lambda: entitlements.get(b.uid)["paypal"].get("last_payment_time") is not None)
    ent = entitlements.get(b.uid)
    assert ent["paypal_subscription_id"] == new and ent["paypal"]["paid_through"] == start + timedelta(days=30)
    with clock.travel(to=start + timedelta(days=29)):
        assert entitlements.is_pro(b.uid)
    assert len(sales_of(paypal, old)) == 1 and len(sales_of(paypal, new)) == 1  # one charge per period, ever
    assert wait(lambda: len(mails_to(b.email, "payment_receipt")) == 2)
    assert sale["id"] in mails_to(b.email, "payment_receipt")[-1]["body"]


def test_subscribing_during_a_promo_trial_charges_at_the_trials_end(member, paypal: httpx.Client) -> None:
    from mllab.billing import promo

    promo.create(promo.NewCode(code="TRY14", kind="trial", days=14, uses=5))
    b = member()
    assert b.request("POST", "/promo/apply", json_body={"code": "TRY14"}).status_code == 200
    trial_until = entitlements.parse_time(entitlements.get(b.uid)["trial_until"])
    assert subscription_status(b)["first_charge_time"] == clock.rfc3339(trial_until)

    answer = checkout(b, paypal)
    sub_id = answer["subscription_id"]
    assert answer["first_charge_time"] == _first_charge(trial_until)
    assert sales_of(paypal, sub_id) == []  # the trial is not thrown away
    assert (
        paypal.get(f"/_standin/subscriptions/{sub_id}").json()["subscription"]["start_time"]
        == answer["first_charge_time"]
    )
    start = entitlements.parse_time(answer["first_charge_time"])
    for moment in (trial_until - timedelta(days=1), trial_until + timedelta(seconds=1), start + timedelta(days=2)):
        with clock.travel(to=moment):
            assert entitlements.is_pro(b.uid), moment  # no gap at the trial's end
    move_paypal_clock(paypal, answer["first_charge_time"])
    assert wait(lambda: len(sales_of(paypal, sub_id)) == 1 and deliveries_settled(paypal, sub_id))
    assert wait(lambda: entitlements.get(b.uid)["paypal"].get("paid_through") == start + timedelta(days=30))


def test_a_subscription_with_a_far_future_start_gives_no_pro_before_it(member, paypal: httpx.Client) -> None:
    """Anyone with the merchant's public client id can create a subscription (PayPal's JS SDK), with any
    start_time: a start a year away must not mean PRO for a year before anything is paid."""
    from mllab.billing import paypal as paypal_api

    b = member()
    far = clock.rfc3339((clock.now() + timedelta(days=365)).replace(microsecond=0))
    created = paypal_api.client().request(
        "POST",
        "/v1/billing/subscriptions",
        json={"plan_id": subscriptions.paypal_ids()["plan_id"], "custom_id": b.uid, "start_time": far},
    )
    paypal.post(f"/_standin/subscriptions/{created['id']}/approve")
    assert wait(lambda: deliveries_settled(paypal, created["id"]))
    assert wait(lambda: _mapping(created["id"]).get("status") == "ACTIVE")
    assert subscription_status(b)["plan"] == "free" and not entitlements.is_pro(b.uid)


def test_two_clicks_at_once_make_one_subscription(member, paypal: httpx.Client) -> None:
    b = member()
    first = subscribe(b, paypal)
    b.request("POST", "/billing/cancel", json_body={})
    # The cancellation's webhooks first: one landing between the clicks moves the date PRO runs to, and
    # a checkout with the old start date is then rightly superseded by a new one (a second id).
    assert wait(lambda: all_delivered(paypal, first))
    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda _: b.request("POST", "/billing/paypal/subscribe"), range(4)))
    assert {r.status_code for r in answers} == {200}, [r.text for r in answers]
    assert len({r.json()["subscription_id"] for r in answers}) == 1
    assert len({r.json()["first_charge_time"] for r in answers}) == 1
    pending = [s for s in subscriptions.subscriptions_of(b.uid) if s["status"] == "APPROVAL_PENDING"]
    assert len(pending) == 1


def test_a_checkout_left_before_a_trial_is_replaced_and_cannot_be_approved_later(member, paypal: httpx.Client) -> None:
    from mllab.billing import promo

    promo.create(promo.NewCode(code="LATER7", kind="trial", days=7, uses=5))
    b = member()
    stale = b.request("POST", "/billing/paypal/subscribe").json()
    assert stale["first_charge_time"] is None  # a free user is charged at approval
    assert b.request("POST", "/promo/apply", json_body={"code": "LATER7"}).status_code == 200
    fresh = b.request("POST", "/billing/paypal/subscribe").json()
    assert fresh["subscription_id"] != stale["subscription_id"] and fresh["first_charge_time"] is not None
    # An event about the old checkout arrives after it was replaced (PayPal still says APPROVAL_PENDING):
    # it stays replaced.
    late = paypal.post(
        "/_standin/events/send",
        json={"subscription_id": stale["subscription_id"], "event_type": "BILLING.SUBSCRIPTION.CREATED"},
    ).json()["event"]
    assert wait(lambda: (event_marker(late["id"]) or {}).get("state") == "done")
    left = _mapping(stale["subscription_id"])
    assert left["status"] == subscriptions.ABANDONED and left["approve_url"] is None
    assert left["superseded_by"] == fresh["subscription_id"]
    # Asked again with nothing changed: the same checkout.
    assert b.request("POST", "/billing/paypal/subscribe").json() == fresh
    # The old tab is approved anyway (PayPal takes the $15 at once): it is cancelled at once, so it
    # never bills again, and the month it took is honoured as paid, though the newer checkout's
    # CREATED event was processed first.
    assert wait(lambda: deliveries_settled(paypal, fresh["subscription_id"]))
    paypal.post(f"/_standin/subscriptions/{stale['subscription_id']}/approve")
    assert wait(
        lambda: (
            paypal.get(f"/_standin/subscriptions/{stale['subscription_id']}").json()["subscription"]["status"]
            == "CANCELLED"
        )
    )
    assert wait(
        lambda: [e["outcome"] for e in audit.for_actor(b.uid) if e["action"] == "billing.cancel"] == ["superseded"]
    )
    assert wait(lambda: deliveries_settled(paypal, stale["subscription_id"]))
    paid_through = _mapping(stale["subscription_id"])["paid_through"]
    assert entitlements.pro_until(entitlements.get(b.uid)) == paid_through
    assert len(sales_of(paypal, stale["subscription_id"])) == 1
    # So a checkout now first charges when that paid month ends, not at the trial's end.
    again = b.request("POST", "/billing/paypal/subscribe").json()
    assert again["first_charge_time"] == _first_charge(paid_through)
    assert again["subscription_id"] != fresh["subscription_id"]
    assert [s["id"] for s in subscriptions.subscriptions_of(b.uid) if s["status"] == "APPROVAL_PENDING"] == [
        again["subscription_id"]
    ]


# --- only the PRO plan at its price entitles -----------------------------------------------------


@pytest.mark.parametrize(("kind", "reason"), [("cheap-plan", "other-plan"), ("inline-override", "plan-overridden")])
def test_a_subscription_to_another_plan_or_price_grants_nothing(
    stack, member, paypal: httpx.Client, kind: str, reason: str
) -> None:
    from .conftest import function_log, wait_for_log

    b = member()
    sub_id = foreign_subscription(b.uid, override=kind == "inline-override")
    paypal.post(f"/_standin/subscriptions/{sub_id}/approve")
    assert wait(lambda: deliveries_settled(paypal, sub_id))
    assert sales_of(paypal, sub_id)[0]["amount"]["total"] == "0.01"  # what the buyer really paid
    assert wait(lambda: _mapping(sub_id).get("refused") == reason)
    stored = _mapping(sub_id)
    assert stored["uid"] == b.uid and stored["status"] == "ACTIVE"  # stored, as the ledger
    me = subscription_status(b)
    assert me["plan"] == "free" and me["status"] == "none" and entitlements.get(b.uid) is None
    refusals = [e for e in audit.for_actor(b.uid) if e["action"] == "billing.refused"]
    assert [(e["target"], e["outcome"]) for e in refusals] == [(f"paypal:{sub_id}", reason)]
    assert wait_for_log(function_log(stack, "paypal_webhook"), sub_id + '"', count=1)
    line = [ln for ln in wait_for_log(function_log(stack, "paypal_webhook"), subscriptions.REFUSED_LOG) if sub_id in ln]
    assert line and '"severity": "ERROR"' in line[0]
    # The sync on return and reconciliation refuse it the same way.
    assert b.request("POST", "/billing/sync", json_body={"subscription_id": sub_id}).json()["plan"] == "free"
    with clock.travel(by=timedelta(days=36)):
        subscriptions.reconcile()
    assert entitlements.get(b.uid) is None or not entitlements.is_pro(b.uid)
    # It does not block the real checkout, and is not cancelled on the user's behalf.
    assert b.request("POST", "/billing/paypal/subscribe").status_code == 200
    assert not mails_to(b.email, "subscription_activated") and not mails_to(b.email, "payment_receipt")
