"""POST /payments/paypal/webhook through the gateway: offline verification on the raw body, the
certificate allow-list checked before any fetch, and exactly-once processing."""

from __future__ import annotations

import http.server
import threading
import zlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from mllab.billing import subscriptions
from mllab.platform import clients
from mllab_dev.stack import Stack

from .billing_support import (
    deliveries_settled,
    event,
    event_marker,
    mails_to,
    outbox,
    sales_of,
    signed_webhook,
    subscribe,
    subscription_status,
    wait,
)
from .conftest import Browser

PATH = "/payments/paypal/webhook"


@pytest.fixture
def subscriber(stack: Stack, new_user, paypal: httpx.Client):
    user = new_user()
    b = Browser(stack.gateway_url)
    assert b.login(user["email"], user["password"]).status_code == 200
    b.uid, b.email = user["uid"], user["email"]  # type: ignore[attr-defined]
    b.sub_id = subscribe(b, paypal)  # type: ignore[attr-defined]
    yield b
    b.client.close()


class _Recorder(http.server.BaseHTTPRequestHandler):
    hits: list[str] = []

    def do_GET(self) -> None:  # noqa: N802
        _Recorder.hits.append(self.path)
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"-----BEGIN CERTIFICATE-----\n")

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def cert_host() -> Iterator[int]:
    """A local server that would hand out a certificate: a refused cert URL must never reach it."""
    _Recorder.hits = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1]
    server.shutdown()


def test_a_valid_signature_is_processed(stack: Stack, gateway: httpx.Client, subscriber: Browser) -> None:
    ev = event("BILLING.SUBSCRIPTION.UPDATED", subscriber.sub_id)
    body, headers = signed_webhook(stack, ev)
    r = gateway.post(PATH, content=body, headers=headers)
    assert r.status_code == 200, r.text
    assert r.json() == {"event_id": ev["id"], "outcome": "unchanged:active"}
    marker = event_marker(ev["id"])
    assert marker["state"] == "done" and marker["subscription_id"] == subscriber.sub_id and marker["attempts"] == 1


def test_a_body_whose_crc32_is_at_least_2_31_verifies(stack: Stack, gateway: httpx.Client, subscriber: Browser) -> None:
    pad = 0
    while True:  # find a body whose unsigned CRC32 has the top bit set (a signed int32 would be negative)
        ev = event("BILLING.SUBSCRIPTION.UPDATED", subscriber.sub_id, event_id=f"WH-CRC-{pad}", summary="x" * pad)
        body, headers = signed_webhook(stack, ev)
        if zlib.crc32(body) >= 2**31:
            break
        pad += 1
    r = gateway.post(PATH, content=body, headers=headers)
    assert r.status_code == 200 and r.json()["outcome"].startswith(("unchanged", "applied")), r.text


@pytest.mark.parametrize(
    "template",
    [
        "https://api.paypal.com.evil.test:{port}/v1/notifications/certs/CERT-1",  # look-alike host
        "https://evil.test/api.paypal.com/v1/notifications/certs/CERT-1",  # foreign host
        "https://api.paypal.com@127.0.0.1:{port}/v1/notifications/certs/CERT-1",  # userinfo trick
        "http://127.0.0.1:{port}/v1/notifications/certs/CERT-1",  # plain http
        "https://127.0.0.1:{port}/v1/notifications/certs/CERT-1",  # the right scheme, a port not allowed
    ],
)
def test_a_certificate_url_off_the_allow_list_is_refused_before_any_fetch(
    stack: Stack, gateway: httpx.Client, cert_host: int, template: str
) -> None:
    ev = event("BILLING.SUBSCRIPTION.ACTIVATED", "I-AAAAAAAAAAAA")
    body, headers = signed_webhook(stack, ev, cert_url=template.format(port=cert_host))
    r = gateway.post(PATH, content=body, headers=headers)
    assert r.status_code == 400 and r.json()["type"].endswith("invalid-signature"), r.text
    assert _Recorder.hits == []  # never fetched
    assert event_marker(ev["id"]) is None  # nothing recorded


@pytest.mark.parametrize("algo", ["SHA1withRSA", "sha256withrsa", "SHA512withRSA", ""])
def test_an_algorithm_other_than_sha256withrsa_is_refused(stack: Stack, gateway: httpx.Client, algo: str) -> None:
    ev = event("BILLING.SUBSCRIPTION.ACTIVATED", "I-AAAAAAAAAAAA")
    body, headers = signed_webhook(stack, ev, algo=algo)
    r = gateway.post(PATH, content=body, headers=headers)
    assert r.status_code == 400 and r.json()["type"].endswith("invalid-signature")
    assert event_marker(ev["id"]) is None


def test_a_tampered_body_or_wrong_webhook_id_is_400_and_changes_nothing(
    stack: Stack, gateway: httpx.Client, subscriber: Browser
) -> None:
    ev = event("BILLING.SUBSCRIPTION.CANCELLED", subscriber.sub_id)
    body, headers = signed_webhook(stack, ev)
    r = gateway.post(PATH, content=body.replace(b"test", b"tEst"), headers=headers)
    assert r.status_code == 400
    body, headers = signed_webhook(stack, ev, webhook_id="SOMEONEELSESWEBHOOK")
    assert gateway.post(PATH, content=body, headers=headers).status_code == 400
    unsigned = gateway.post(PATH, content=body, headers={"Content-Type": "application/json"})
    assert unsigned.status_code == 400 and unsigned.headers["content-type"] == "application/problem+json"
    assert event_marker(ev["id"]) is None and subscription_status(subscriber)["status"] == "active"


def test_the_same_event_delivered_100_times_has_one_effect(
    stack: Stack, gateway: httpx.Client, subscriber: Browser, paypal: httpx.Client
) -> None:
    # The effect to count: the payment-failed mail. PayPal's state changes without a webhook...
    paypal.post(
        f"/_standin/subscriptions/{subscriber.sub_id}/simulate", json={"event": "payment-failed", "deliver": False}
    )
    # ...then one event arrives 100 times, 20 at once (each delivery signed anew, as PayPal does).
    ev = event("BILLING.SUBSCRIPTION.PAYMENT.FAILED", subscriber.sub_id)
    deliveries = [signed_webhook(stack, ev) for _ in range(100)]
    with ThreadPoolExecutor(20) as pool:
        statuses = list(pool.map(lambda d: gateway.post(PATH, content=d[0], headers=d[1]).status_code, deliveries))
    assert set(statuses) <= {200, 409} and statuses.count(200) >= 1, statuses  # 409: in progress, PayPal retries
    for body, headers in deliveries[:5]:  # later duplicates: 200, nothing done
        r = gateway.post(PATH, content=body, headers=headers)
        assert r.status_code == 200 and r.json()["outcome"] == "duplicate"
    marker = event_marker(ev["id"])
    assert marker["state"] == "done" and marker["attempts"] == 1 and marker["outcome"] == "applied:past_due"
    assert len(wait(lambda: mails_to(subscriber.email, "payment_failed"))) == 1


def test_activated_after_cancelled_stays_cancelled(stack: Stack, subscriber: Browser, paypal: httpx.Client) -> None:
    paypal.post(f"/_standin/subscriptions/{subscriber.sub_id}/simulate", json={"event": "cancelled"})
    assert wait(lambda: subscription_status(subscriber)["status"] == "canceled")
    # An ACTIVATED event arrives late: PayPal's current state (re-read) is what counts.
    late = paypal.post(
        "/_standin/events/send",
        json={"subscription_id": subscriber.sub_id, "event_type": "BILLING.SUBSCRIPTION.ACTIVATED"},
    ).json()["event"]
    assert wait(lambda: (event_marker(late["id"]) or {}).get("state") == "done")
    assert subscription_status(subscriber)["status"] == "canceled"


def test_a_transient_paypal_error_is_5xx_then_the_retry_does_the_work(
    stack: Stack, gateway: httpx.Client, subscriber: Browser, paypal: httpx.Client
) -> None:
    paypal.post(f"/_standin/subscriptions/{subscriber.sub_id}/simulate", json={"event": "suspended", "deliver": False})
    paypal.post("/_standin/faults", json={"status": 500, "count": 3, "path_prefix": "/v1/billing/subscriptions"})
    ev = event("BILLING.SUBSCRIPTION.SUSPENDED", subscriber.sub_id)
    body, headers = signed_webhook(stack, ev)
    first = gateway.post(PATH, content=body, headers=headers)
    assert first.status_code >= 500 and first.headers["content-type"] == "application/problem+json"
    assert event_marker(ev["id"])["state"] == "failed"
    assert subscription_status(subscriber)["status"] == "active"  # nothing applied
    body, headers = signed_webhook(stack, ev)  # PayPal's retry
    second = gateway.post(PATH, content=body, headers=headers)
    assert second.status_code == 200 and second.json()["outcome"] == "applied:past_due", second.text
    assert event_marker(ev["id"])["attempts"] == 2


def test_a_transient_firestore_error_is_5xx_then_the_retry_does_the_work(
    stack: Stack, function_client, subscriber: Browser, paypal: httpx.Client, monkeypatch
) -> None:
    """In-process (the fault is injected into this process's Firestore writes)."""
    from google.api_core.exceptions import ServiceUnavailable

    paypal.post(f"/_standin/subscriptions/{subscriber.sub_id}/simulate", json={"event": "cancelled", "deliver": False})
    real_apply = subscriptions.apply
    calls = []

    def flaky(snapshot, fetched_at=None, **kwargs):
        calls.append(snapshot["id"])
        if len(calls) == 1:
            raise ServiceUnavailable("firestore is restarting")
        return real_apply(snapshot, fetched_at, **kwargs)

    monkeypatch.setattr(subscriptions, "apply", flaky)
    client = function_client("paypal_webhook")
    ev = event("BILLING.SUBSCRIPTION.CANCELLED", subscriber.sub_id)
    body, headers = signed_webhook(stack, ev)
    first = client.post(PATH, data=body, headers=headers)
    assert first.status_code == 503 and "Retry-After" in first.headers
    assert subscription_status(subscriber)["status"] == "active"
    body, headers = signed_webhook(stack, ev)
    second = client.post(PATH, data=body, headers=headers)
    assert second.status_code == 200 and second.json["outcome"] == "applied:canceled"


def test_events_we_do_not_handle_are_acknowledged(stack: Stack, gateway: httpx.Client) -> None:
    ev = {"id": "WH-PLAN-1", "event_type": "CATALOG.PRODUCT.UPDATED", "resource_type": "product", "resource": {}}
    body, headers = signed_webhook(stack, ev)
    r = gateway.post(PATH, content=body, headers=headers)
    assert r.status_code == 200 and r.json()["outcome"] == "ignored"
    sale = event("PAYMENT.SALE.COMPLETED", "I-AAAAAAAAAAAA")
    sale["resource"].pop("billing_agreement_id")  # a one-off sale, not a subscription's
    body, headers = signed_webhook(stack, sale)
    assert gateway.post(PATH, content=body, headers=headers).json()["outcome"] == "ignored-no-subscription"


def test_an_event_for_a_subscription_paypal_does_not_know(stack: Stack, gateway: httpx.Client) -> None:
    ev = event("BILLING.SUBSCRIPTION.ACTIVATED", "I-UNKNOWN00000")
    body, headers = signed_webhook(stack, ev)
    r = gateway.post(PATH, content=body, headers=headers)
    assert r.status_code == 200 and r.json()["outcome"] == "unknown-subscription"  # permanent: no retry storm
    # Nothing was adopted or stored for it.
    assert not clients.firestore().collection(subscriptions.SUBSCRIPTIONS).document("I-UNKNOWN00000").get().exists
    assert event_marker(ev["id"])["outcome"] == "unknown-subscription"


def test_a_body_over_64_kib_is_413(stack: Stack, gateway: httpx.Client) -> None:
    body, headers = signed_webhook(stack, event("BILLING.SUBSCRIPTION.UPDATED", "I-AAAAAAAAAAAA", summary="x" * 70_000))
    r = gateway.post(PATH, content=body, headers=headers)
    assert r.status_code == 413


# --- one mail per event ------------------------------------------------------------------------

DAY_S = 86400

# What happens at PayPal, one step after the other, and the mails each step sends. Between steps
# PayPal's clock moves a day, as its retries and renewals are days apart.
LIFECYCLE = [
    ("approve", {"subscription_activated": 1, "payment_receipt": 1}),
    ("payment-completed", {"payment_receipt": 1}),  # a renewal
    ("payment-failed", {"payment_failed": 1}),
    ("payment-failed", {"payment_failed": 1, "past_due": 1}),  # the plan's threshold: PayPal suspends it
    ("reactivated", {}),  # active again: not a second welcome
    ("payment-completed", {"payment_receipt": 1}),
    ("cancelled", {"subscription_canceled": 1}),
]


def _templates(email: str) -> dict[str, int]:
    counts: dict[str, int] = {}
    for m in outbox(email):
        counts[m["template"]] = counts.get(m["template"], 0) + 1
    return counts


def _add(total: dict[str, int], more: dict[str, int]) -> dict[str, int]:
    return {k: total.get(k, 0) + more.get(k, 0) for k in {*total, *more}}


def test_each_billing_event_mails_once_however_often_paypal_redelivers(member, paypal: httpx.Client) -> None:
    from mllab.billing import entitlements

    b = member()
    sub_id = b.request("POST", "/billing/paypal/subscribe").json()["subscription_id"]
    expected: dict[str, int] = {}
    for step, mails in LIFECYCLE:
        if step == "approve":
            assert paypal.post(f"/_standin/subscriptions/{sub_id}/approve").status_code == 200
        else:
            assert paypal.post("/_standin/clock", json={"advance_s": DAY_S}).json()["events"] == []
            r = paypal.post(f"/_standin/subscriptions/{sub_id}/simulate", json={"event": step})
            assert r.status_code == 200, r.text
        expected = _add(expected, mails)
        assert wait(lambda: deliveries_settled(paypal, sub_id)), step
        assert wait(lambda expected=expected: _templates(b.email) == expected), (step, _templates(b.email), expected)
        # PayPal redelivers every event of the subscription so far, twice, and the lab syncs too.
        before = entitlements.get(b.uid)
        sent = paypal.get("/_standin/events", params={"subscription_id": sub_id}).json()["events"]
        for ev in sent:
            assert paypal.post(f"/_standin/events/{ev['id']}/resend", json={"count": 2}).status_code == 202
        assert wait(lambda: deliveries_settled(paypal, sub_id)), step
        assert b.request("POST", "/billing/sync", json_body={"subscription_id": sub_id}).status_code == 200
        assert _templates(b.email) == expected, (step, _templates(b.email))
        for ev in sent:  # each event was processed once; the redeliveries were answered "duplicate"
            marker = event_marker(ev["id"])
            assert marker["state"] == "done" and marker["attempts"] == 1, (step, ev["event_type"], marker)
        after = entitlements.get(b.uid)
        assert {k: v for k, v in after.items() if k not in ("updated_at", "paypal")} == {
            k: v for k, v in before.items() if k not in ("updated_at", "paypal")
        }, step  # the sync changed nothing

    # The receipts: amount, currency, date, next billing date and PayPal's transaction id.
    sales = sales_of(paypal, sub_id)
    receipts = [m for m in outbox(b.email) if m["template"] == "payment_receipt"]
    assert len(receipts) == len(sales) == 3
    for receipt, sale in zip(receipts, sales, strict=True):
        assert receipt["subject"] == "Your ML Lab receipt: 15.00 USD"
        assert "Amount: 15.00 USD" in receipt["body"] and f"PayPal transaction ID: {sale['id']}" in receipt["body"]
        paid_on = entitlements.parse_time(sale["create_time"])
        assert f"Date: {paid_on:%B %d, %Y}" in receipt["body"]
        assert "Next billing date: " in receipt["body"] and "not scheduled" not in receipt["body"]
        assert f"Subscription: {sub_id}" in receipt["body"]
    welcome = mails_to(b.email, "subscription_activated")[0]
    assert "15.00 USD a month" in welcome["body"] and "next payment is on" in welcome["body"]
    canceled = mails_to(b.email, "subscription_canceled")[0]
    assert "will not be charged again" in canceled["body"]


def test_a_redelivered_sale_event_sends_no_second_receipt(
    stack: Stack, gateway: httpx.Client, subscriber: Browser, paypal: httpx.Client
) -> None:
    [receipt] = wait(lambda: mails_to(subscriber.email, "payment_receipt"))
    sale = sales_of(paypal, subscriber.sub_id)[0]
    assert sale["id"] in receipt["body"]
    # The same sale under a new event id (PayPal resends it as a new notification): still one receipt.
    ev = {**event("PAYMENT.SALE.COMPLETED", subscriber.sub_id), "resource": sale}
    for _ in range(3):
        body, headers = signed_webhook(stack, ev)
        assert gateway.post(PATH, content=body, headers=headers).status_code == 200
    again = {**ev, "id": ev["id"] + "-2"}
    body, headers = signed_webhook(stack, again)
    assert gateway.post(PATH, content=body, headers=headers).status_code == 200
    assert len(mails_to(subscriber.email, "payment_receipt")) == 1


EVENT_TYPES = [
    "BILLING.SUBSCRIPTION.CREATED",
    "BILLING.SUBSCRIPTION.ACTIVATED",
    "BILLING.SUBSCRIPTION.UPDATED",
    "BILLING.SUBSCRIPTION.RE-ACTIVATED",
    "BILLING.SUBSCRIPTION.SUSPENDED",
    "BILLING.SUBSCRIPTION.CANCELLED",
    "BILLING.SUBSCRIPTION.EXPIRED",
    "BILLING.SUBSCRIPTION.PAYMENT.FAILED",
    "PAYMENT.SALE.COMPLETED",
    "PAYMENT.SALE.DENIED",
    "PAYMENT.SALE.PENDING",
    "PAYMENT.SALE.REFUNDED",
    "PAYMENT.SALE.REVERSED",
]


@pytest.mark.parametrize("event_type", EVENT_TYPES)
def test_every_event_type_redelivered_has_at_most_one_mail_and_one_change(
    stack: Stack, gateway: httpx.Client, subscriber: Browser, event_type: str
) -> None:
    """Whatever the event says, PayPal's state (re-read) is what is applied; a redelivery of the same
    event is a duplicate. Here PayPal's state does not move, so nothing may change but a receipt for a
    new sale."""
    from mllab.billing import entitlements

    assert wait(lambda: len(outbox(subscriber.email)) == 2)  # the welcome and the first receipt
    before = entitlements.get(subscriber.uid)
    ev = event(event_type, subscriber.sub_id)
    outcomes = []
    for _ in range(3):
        body, headers = signed_webhook(stack, ev)
        r = gateway.post(PATH, content=body, headers=headers)
        assert r.status_code == 200, r.text
        outcomes.append(r.json()["outcome"])
    assert outcomes[0] in ("unchanged:active", "applied:active") and outcomes[1:] == ["duplicate", "duplicate"]
    new_mail = [m["template"] for m in outbox(subscriber.email)][2:]
    assert new_mail == (["payment_receipt"] if event_type == "PAYMENT.SALE.COMPLETED" else [])
    after = entitlements.get(subscriber.uid)
    keep = ("plan", "status", "pro_until", "paypal_subscription_id", "next_billing_time", "paypal_prior")
    assert {k: after.get(k) for k in keep} == {k: before.get(k) for k in keep}
