"""Shared by the billing tests: the PayPal stand-in's control API, webhooks signed with its key, and
a signed-in subscriber."""

from __future__ import annotations

import base64
import json
import time
import uuid
import zlib
from typing import Any

import httpx
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding

from mllab.billing import subscriptions
from mllab.platform import clients, mail
from mllab_dev import devca
from mllab_dev.paypal_standin import CERT_ID
from mllab_dev.stack import Stack

from .conftest import Browser

# What /me's subscription says for a user who never had PRO (and what the CLI prints after a revoke).
FREE_SUBSCRIPTION = {
    "status": "none",
    "plan": "free",
    "pro_until": None,
    "trial_until": None,
    "next_billing_time": None,
    "past_due": False,
    "last_payment": None,
    "manage_url": None,
    "first_charge_time": None,
}


def standin(stack: Stack) -> httpx.Client:
    """A client of the stand-in that trusts only the development CA."""
    return httpx.Client(base_url=stack.paypal_url, verify=devca.paths(stack.dev_dir).client_context(), timeout=20)


def wait(predicate, timeout: float = 20.0, interval: float = 0.1):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval)


def subscription_status(browser: Browser) -> dict[str, Any]:
    r = browser.request("GET", "/me")
    assert r.status_code == 200, r.text
    return r.json()["subscription"]


def subscribe(browser: Browser, paypal: httpx.Client) -> str:
    """Checkout and approval (the stand-in's control API does what the approve page does); returns
    the subscription id once the webhooks made /me say active."""
    r = browser.request("POST", "/billing/paypal/subscribe")
    assert r.status_code == 200, r.text
    sub_id = r.json()["subscription_id"]
    assert paypal.post(f"/_standin/subscriptions/{sub_id}/approve").status_code in (200, 202)
    assert wait(lambda: subscription_status(browser)["status"] == "active"), subscription_status(browser)
    assert wait(lambda: deliveries_settled(paypal, sub_id)), "the approval's webhooks were not all delivered"
    return sub_id


def all_delivered(paypal: httpx.Client, sub_id: str) -> bool:
    """Every webhook the stand-in emitted for this subscription, queued ones included, was answered 2xx."""
    sent = paypal.get("/_standin/events", params={"subscription_id": sub_id}).json()["events"]
    return bool(sent) and all(
        any(d.get("finished") and d.get("status") == 200 for d in e.get("deliveries", [])) for e in sent
    )


def deliveries_settled(paypal: httpx.Client, sub_id: str) -> bool:
    """Every webhook the stand-in sent for this subscription has been answered 2xx (so no delivery
    still in flight can race what a test does next)."""
    sent = paypal.get("/_standin/events", params={"subscription_id": sub_id}).json()["events"]
    return bool(sent) and all(
        d.get("finished") and d.get("status") == 200
        for e in sent
        for d in e.get("deliveries", [])
        if e.get("deliveries")
    )


def signed_webhook(
    stack: Stack,
    event: dict[str, Any] | bytes,
    *,
    webhook_id: str | None = None,
    cert_url: str | None = None,
    algo: str = "SHA256withRSA",
) -> tuple[bytes, dict[str, str]]:
    """A body and PayPal's headers, signed the way PayPal signs (CRC32 of the raw body, unsigned)."""
    body = event if isinstance(event, bytes) else json.dumps(event).encode()
    tid, when = str(uuid.uuid4()), time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    wid = webhook_id or subscriptions.paypal_ids()["webhook_id"]
    message = f"{tid}|{when}|{wid}|{zlib.crc32(body) & 0xFFFFFFFF}".encode()
    signature = devca.paths(stack.dev_dir).load_signing_key().sign(message, padding.PKCS1v15(), hashes.SHA256())
    return body, {
        "PAYPAL-TRANSMISSION-ID": tid,
        "PAYPAL-TRANSMISSION-TIME": when,
        "PAYPAL-AUTH-ALGO": algo,
        "PAYPAL-CERT-URL": cert_url or f"{stack.paypal_url}/v1/notifications/certs/{CERT_ID}",
        "PAYPAL-TRANSMISSION-SIG": base64.b64encode(signature).decode(),
        "Content-Type": "application/json",
    }


def event(event_type: str, subscription_id: str, *, event_id: str | None = None, **extra: Any) -> dict[str, Any]:
    sale = event_type.startswith("PAYMENT.SALE.")
    resource = (
        {
            "id": f"SALE-{uuid.uuid4().hex[:10].upper()}",
            "billing_agreement_id": subscription_id,
            "state": "completed",
            "amount": {"total": "15.00", "currency": "USD"},
        }
        if sale
        else {"id": subscription_id, "status": "ACTIVE"}
    )
    return {
        "id": event_id or f"WH-{uuid.uuid4().hex[:20].upper()}",
        "event_version": "1.0",
        "create_time": "2026-11-22T10:00:00Z",
        "resource_type": "sale" if sale else "subscription",
        "resource_version": "2.0",
        "event_type": event_type,
        "summary": "test",
        "resource": resource,
        **extra,
    }


def event_marker(event_id: str) -> dict[str, Any] | None:
    snap = clients.firestore().collection(subscriptions.EVENTS).document(event_id).get()
    return snap.to_dict() if snap.exists else None


def mails_to(email: str, template: str) -> list[dict[str, Any]]:
    return [m for m in mail.dev_messages() if m["to"] == email and m["template"] == template]


def move_paypal_clock(paypal: httpx.Client, to: str) -> list[str]:
    """Move the stand-in's clock to `to` (RFC 3339): PayPal's scheduler bills every cycle then due.
    Returns the ids of the events that billing sent."""
    r = paypal.post("/_standin/clock", json={"to": to})
    assert r.status_code == 200, r.text
    return r.json()["events"]


def sales_of(paypal: httpx.Client, sub_id: str) -> list[dict[str, Any]]:
    """Every PAYMENT.SALE.COMPLETED the stand-in recorded for a subscription: what the buyer paid."""
    events = paypal.get(
        "/_standin/events", params={"subscription_id": sub_id, "event_type": "PAYMENT.SALE.COMPLETED"}
    ).json()["events"]
    return [e["event"]["resource"] for e in events]


def checkout(browser: Browser, paypal: httpx.Client) -> dict[str, Any]:
    """POST /billing/paypal/subscribe and approve at the stand-in; the checkout's answer, once its
    webhooks were all delivered."""
    r = browser.request("POST", "/billing/paypal/subscribe")
    assert r.status_code == 200, r.text
    answer = r.json()
    assert paypal.post(f"/_standin/subscriptions/{answer['subscription_id']}/approve").status_code == 200
    assert wait(lambda: deliveries_settled(paypal, answer["subscription_id"]))
    return answer


def foreign_subscription(custom_id: str, *, price: str = "0.01", unit: str = "YEAR", override: bool = False) -> str:
    """A subscription made with the merchant's credentials but outside ML Lab's checkout: another
    plan of the same product (default $0.01 a year), or the PRO plan with an inline price override.
    Returns its id (APPROVAL_PENDING)."""
    from mllab.billing import paypal

    client = paypal.client()
    ids = subscriptions.paypal_ids()
    cycle = {
        "frequency": {"interval_unit": unit, "interval_count": 1},
        "tenure_type": "REGULAR",
        "sequence": 1,
        "total_cycles": 0,
        "pricing_scheme": {"fixed_price": {"value": price, "currency_code": "USD"}},
    }
    body: dict[str, Any] = {
        "custom_id": custom_id,
        "application_context": {"return_url": "https://example.com/return", "cancel_url": "https://example.com/cancel"},
    }
    if override:
        body.update(plan_id=ids["plan_id"], plan={"billing_cycles": [cycle]})
    else:
        plan = client.request(
            "POST",
            "/v1/billing/plans",
            json={
                "product_id": ids["product_id"],
                "name": "Cheap",
                "status": "ACTIVE",
                "billing_cycles": [cycle],
                "payment_preferences": {"payment_failure_threshold": 1},
            },
        )
        body["plan_id"] = plan["id"]
    created = client.request("POST", "/v1/billing/subscriptions", json=body)
    return created["id"]


def outbox(email: str) -> list[dict[str, Any]]:
    """Every mail delivered to `email`, oldest first."""
    return [m for m in mail.dev_messages() if m["to"] == email]
