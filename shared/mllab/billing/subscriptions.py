"""PayPal subscriptions: checkout, sync on return, cancel, verified webhooks, daily reconciliation,
dunning mail. PayPal's state is the truth: every event and every sync re-reads the subscription
from PayPal and stores it with `apply()`, which never lets an older read overwrite a newer one.

`paypal_subscriptions/<I-...>` maps a subscription to its user. It is written before the approve URL
leaves the server, so no event can arrive for a subscription we cannot place.
"""

from __future__ import annotations

import contextlib
import json
import re
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any, NamedTuple

from mllab.billing import entitlements, schemas
from mllab.identity import users
from mllab.platform import audit, clients, clock, config, idempotency, jsonvalues, log, mail
from mllab.platform.problems import Problem
from mllab.platform.queries import Query

SUBSCRIPTIONS = "paypal_subscriptions"
EVENTS = "webhook_events"
SUBSCRIPTION_ID = re.compile(r"I-[A-Z0-9]{6,40}")
EVENT_ID = re.compile(r"[A-Za-z0-9-]{1,100}")
SALE_ID = re.compile(r"[A-Za-z0-9-]{1,64}")
EVENT_PREFIXES = ("BILLING.SUBSCRIPTION.", "PAYMENT.SALE.")  # every one of them means "re-read"
EVENT_LEASE_S = 120  # a processing marker older than this was left by a crashed delivery
ABANDONED = "ABANDONED"  # our own status for a checkout never approved (PayPal has none)
ACCESS_ENDING_NOTICE = timedelta(days=3)
RECONCILE_HORIZON = timedelta(hours=48)
SILENT_AFTER = timedelta(days=35)
DEFAULT_CANCEL_REASON = "Cancelled by the customer in ML Lab"
SUPERSEDED_REASON = "Replaced by a newer checkout in ML Lab"
PLAN_CACHE_S = 600  # the configured plan's terms, re-read from PayPal this often
# The log line the "subscription not entitled" alert policy matches (infra/monitoring/).
REFUSED_LOG = "paypal subscription refused: not the configured PRO plan"

# Query shapes (equality fields, then the range/sort field), for infra's index file.
QUERIES: tuple[Query, ...] = (
    Query(SUBSCRIPTIONS, ("uid",)),
    Query(SUBSCRIPTIONS, ("status",)),
    Query(SUBSCRIPTIONS, ("status",), (("pro_until", "ASCENDING"),)),
    Query(SUBSCRIPTIONS, ("status",), (("created_at", "ASCENDING"),)),
    Query(SUBSCRIPTIONS, ("status",), (("synced_at", "ASCENDING"),)),
    Query(entitlements.COLLECTION, ("status",), (("pro_until", "ASCENDING"),)),
)


def _db() -> Any:
    return clients.firestore()


def _stream(query: Any) -> list[Any]:
    # The one Firestore call still given clients.opts(): without a retry of its own, Query.stream()
    # looks for one on the raw gRPC stub to decide whether to resume a stream broken mid-way, finds
    # none, and raises AttributeError in place of Firestore's error (and never resumes).
    return list(query.stream(**clients.opts()))


def paypal_ids() -> dict[str, str]:
    """Product, plan and webhook ids of this environment (`mllab billing bootstrap` prints them)."""
    try:
        ids = json.loads(config.secret(config.PAYPAL_IDS))
        return {k: str(ids[k]) for k in ("product_id", "plan_id", "webhook_id")}
    except (config.ConfigError, ValueError, KeyError, TypeError) as exc:
        raise config.ConfigError(
            f"secret {config.PAYPAL_IDS} is missing or incomplete: run "
            "`mllab billing bootstrap` and store what it prints"
        ) from exc


def plans() -> schemas.Plans:
    # The plans table's id and interval are plain strings: pydantic checks them against the API's literals.
    return schemas.Plans(
        plans=[
            schemas.PlanInfo.model_validate(
                {
                    "id": p.id,
                    "name": p.name,
                    "price": schemas.Money(value=p.price, currency=p.currency),
                    "interval": p.interval,
                    "limits": schemas.PlanLimits.of(p),
                }
            )
            for p in config.PLANS.values()
        ]
    )


def subscriptions_of(uid: str) -> list[dict[str, Any]]:
    """The user's checkouts and subscriptions, oldest first."""
    from google.cloud.firestore_v1.base_query import FieldFilter

    query = _db().collection(SUBSCRIPTIONS).where(filter=FieldFilter("uid", "==", uid))
    subs = [{**s.to_dict(), "id": s.id} for s in _stream(query)]
    return sorted(subs, key=lambda s: s["created_at"])


def live_subscriptions(uid: str, subs: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """The user's subscriptions that PayPal may still bill (or is about to); `subs`: already read.
    A refused one (not our PRO plan) is not the user's subscription to us: it neither blocks a
    checkout nor gets cancelled on the user's behalf."""
    return [
        s
        for s in (subscriptions_of(uid) if subs is None else subs)
        if s.get("status") in entitlements.LIVE and not s.get("refused")
    ]


def subscription_ids(statuses: tuple[str, ...]) -> list[str]:
    """Every subscription in one of these statuses, whoever it belongs to (operator resync)."""
    from google.cloud.firestore_v1.base_query import FieldFilter

    query = _db().collection(SUBSCRIPTIONS).where(filter=FieldFilter("status", "in", list(statuses)))
    return sorted(s.id for s in _stream(query))


def _owned(uid: str, subscription_id: str) -> dict[str, Any]:
    snap = _db().collection(SUBSCRIPTIONS).document(subscription_id).get()
    if not snap.exists or snap.get("uid") != uid:
        raise Problem(404, "You have no subscription with this id.")
    return {**snap.to_dict(), "id": snap.id}


def _paypal() -> Any:
    from mllab.billing import paypal

    return paypal.client()


def _read(subscription_id: str) -> dict[str, Any] | None:
    """GET the subscription from PayPal; None if PayPal does not know it."""
    from mllab.billing import paypal

    try:
        return _paypal().get_subscription(subscription_id)
    except paypal.PayPalUnavailable:
        raise
    except paypal.PayPalError as exc:
        if exc.status == 404:
            return None
        raise


# --- which subscriptions entitle ---------------------------------------------------------------------

_plan_cache: dict[str, tuple[float, dict[str, Any]]] = {}


def _configured_plan(plan_id: str) -> dict[str, Any]:
    """The configured PRO plan as PayPal has it (cached a few minutes: it changes only when an operator
    edits it at PayPal)."""
    cached = _plan_cache.get(plan_id)
    if cached is not None and time.monotonic() - cached[0] < PLAN_CACHE_S:
        return cached[1]
    plan = _paypal().get_plan(plan_id)
    _plan_cache.clear()
    _plan_cache[plan_id] = (time.monotonic(), plan)
    return plan


def _regular_price(plan: dict[str, Any] | None) -> tuple[str, str] | None:
    cycles = (plan or {}).get("billing_cycles")
    for cycle in cycles if isinstance(cycles, list) else []:
        if isinstance(cycle, dict) and cycle.get("tenure_type") == "REGULAR":
            fixed = (cycle.get("pricing_scheme") or {}).get("fixed_price") or {}
            return str(fixed.get("value")), str(fixed.get("currency_code"))
    return None


def _same_money(value: Any, currency: Any, price: str, want_currency: str) -> bool:
    try:
        return currency == want_currency and Decimal(str(value)) == Decimal(price)
    except (InvalidOperation, ValueError):
        return False


def refusal(
    snapshot: dict[str, Any], plan_id: str, price: str, currency: str, plan: dict[str, Any] | None
) -> str | None:
    """Why this subscription must not entitle anyone (None: it is our PRO plan at its price).
    `plan`: the configured plan as PayPal answers it. Pure."""
    if snapshot.get("plan_id") != plan_id:
        return "other-plan"
    if snapshot.get("plan_overridden") or snapshot.get("plan"):
        return "plan-overridden"  # created with an inline plan: its price is not the plan's
    terms = _regular_price(plan)
    if terms is None or not _same_money(terms[0], terms[1], price, currency):
        return "plan-price"  # the plan itself was changed at PayPal
    paid = ((snapshot.get("billing_info") or {}).get("last_payment") or {}).get("amount")
    if paid and not _same_money(paid.get("value"), paid.get("currency_code"), price, currency):
        return "payment-amount"
    return None


def _refusal(snapshot: dict[str, Any]) -> str | None:
    pro = config.PLANS["pro"]
    plan_id = paypal_ids()["plan_id"]
    plan = _configured_plan(plan_id) if snapshot.get("plan_id") == plan_id else None
    return refusal(snapshot, plan_id, pro.price, pro.currency, plan)


# --- applying PayPal's state ------------------------------------------------------------------------


def _day(value: Any) -> str:
    when = entitlements.parse_time(value)
    return when.strftime("%B %d, %Y") if when else "not scheduled"


def _notice_keys(snapshot: dict[str, Any], sale: dict[str, Any] | None) -> list[tuple[str, str]]:
    """(outbox key, template) of every mail this state of the subscription calls for. A key names the
    event (the subscription's activation, a sale id, a failure's time, a suspension, the cancel), so
    however often PayPal redelivers, or a sync and a webhook read the same state, it is mailed once."""
    sid, status = snapshot["id"], snapshot.get("status")
    billing_info = snapshot.get("billing_info") or {}
    keys = []
    if status == entitlements.ACTIVE:
        keys.append((f"paypal-{sid}-activated", "subscription_activated"))
    if sale is not None:
        keys.append((f"paypal-{sid}-sale-{sale['id']}", "payment_receipt"))
    failed = billing_info.get("last_failed_payment") or {}
    if (
        status in (entitlements.ACTIVE, entitlements.SUSPENDED)
        and int(billing_info.get("failed_payments_count") or 0) > 0
        and failed.get("time")
    ):
        keys.append((f"paypal-{sid}-failed-{failed['time']}", "payment_failed"))
    if status == entitlements.SUSPENDED:
        keys.append((f"paypal-{sid}-suspended-{snapshot.get('status_update_time')}", "past_due"))
    if status == entitlements.CANCELLED:
        keys.append((f"paypal-{sid}-canceled", "subscription_canceled"))
    return keys


def _notice_fields(
    template: str, snapshot: dict[str, Any], sale: dict[str, Any] | None, until: datetime | None
) -> dict[str, str]:
    pro = config.PLANS["pro"]
    billing_info = snapshot.get("billing_info") or {}
    if template == "payment_receipt" and sale is not None:
        amount = sale.get("amount") or {}
        return {
            "amount": str(amount.get("total")),
            "currency": str(amount.get("currency")),
            "date": _day(sale.get("create_time")),
            "next_billing": _day(billing_info.get("next_billing_time")),
            "transaction_id": str(sale["id"]),
            "subscription_id": snapshot["id"],
        }
    if template == "subscription_activated":
        paid = billing_info.get("last_payment")
        first = (
            f"Your next payment is on {_day(billing_info.get('next_billing_time'))}."
            if paid
            else f"Your first charge of {pro.price} {pro.currency} will be on "
            f"{_day(billing_info.get('next_billing_time') or snapshot.get('start_time'))}; until then "
            "nothing is charged and your PRO access continues."
        )
        return {"amount": pro.price, "currency": pro.currency, "first_charge": first}
    return {"until": (until or clock.now()).strftime("%B %d, %Y")}


def _notice_due(template: str, before: str | None, snapshot: dict[str, Any]) -> bool:
    """Mail on the transition only (a record first read in this state), so subscriptions older than
    the receipts are not mailed about their past on their next re-read. Receipts: each new sale."""
    status = snapshot.get("status")
    if template == "subscription_activated":
        return before in (None, "APPROVAL_PENDING", "APPROVED", ABANDONED)
    if template in ("past_due", "subscription_canceled"):
        return before != status
    return True


@dataclass(frozen=True)
class _Reading:
    """One read of a subscription from PayPal, as `apply()` stores it."""

    snapshot: dict[str, Any]
    fetched_at: datetime
    now: datetime
    refused: str | None
    sale: dict[str, Any] | None


class _Applied(NamedTuple):
    uid: str | None
    before: str
    after: str
    created: list[str]  # the outbox keys queued in the transaction, to deliver after its commit
    newly_refused: bool


@dataclass(frozen=True)
class _Outbox:
    """The mails of one `apply()` transaction. `recipient`: the subscription's user (None: no mail);
    `sent`: which of `keys` are in the outbox already."""

    tx: Any
    recipient: dict[str, Any] | None
    keys: list[tuple[str, str]]
    sent: dict[str, bool]
    link: str

    def queue(
        self, reading: _Reading, before: str | None, until: datetime | None, only: tuple[str, ...] | None = None
    ) -> list[str]:
        """Queue the mails due now (`before`: the stored status); returns their keys."""
        if self.recipient is None:
            return []
        created = []
        for key, template in self.keys:
            if self.sent.get(key, True) or (only is not None and template not in only):
                continue
            if not _notice_due(template, before, reading.snapshot):
                continue
            fields = _notice_fields(template, reading.snapshot, reading.sale, until)
            self.tx.create(mail.ref(key), mail.queued(self.recipient["email"], template, self.link, **fields))
            created.append(key)
        return created


def apply(
    snapshot: dict[str, Any],
    fetched_at: datetime | None = None,
    *,
    refused: str | None = None,
    sale: dict[str, Any] | None = None,
) -> tuple[str | None, str, str]:
    """Store a subscription as PayPal answered it, with the entitlement that follows, in one transaction.
    Returns (uid, status before, status after); a read older than the stored one changes nothing.
    `refused`: why it must not entitle (stored on its record; the entitlement is left alone).
    `sale`: the PAYMENT.SALE.COMPLETED resource being processed (for its receipt).
    The mails this state calls for are written to the outbox in the same transaction, keyed by the
    event they are about, and sent after the commit: once each, however often the event comes."""
    from google.cloud import firestore

    now = clock.now()
    reading = _Reading(snapshot, fetched_at or now, now, refused, sale)
    db = _db()
    sub_ref = db.collection(SUBSCRIPTIONS).document(snapshot["id"])
    user = _mail_recipient(sub_ref.get(), refused)
    keys = _notice_keys(snapshot, sale) if user is not None else []

    @firestore.transactional
    def run(tx: Any) -> _Applied:
        return _store(tx, sub_ref, reading, user, keys)

    applied = run(db.transaction(max_attempts=10))
    _log_applied(reading, applied)
    for key in applied.created:
        mail.deliver_queued(key)
    return applied.uid, applied.before, applied.after


def _mail_recipient(owner: Any, refused: str | None) -> dict[str, Any] | None:
    """Who mails about this subscription go to (`owner`: its mapping, as read before the transaction):
    its user, unless the subscription is refused or the user is gone."""
    user = users.get(owner.get("uid")) if owner.exists and not refused else None
    if user is not None and user.get("deleted_at"):
        return None
    return user


def _store(
    tx: Any, sub_ref: Any, reading: _Reading, user: dict[str, Any] | None, keys: list[tuple[str, str]]
) -> _Applied:
    """The transaction of `apply()`: the subscription's record, the entitlement, the mails."""
    sub_snap = sub_ref.get(transaction=tx)
    if not sub_snap.exists:
        return _Applied(None, "none", "none", [], False)
    mapping = sub_snap.to_dict()
    uid = mapping["uid"]
    ent_ref = entitlements.ref(uid)
    ent_snap = ent_ref.get(transaction=tx)
    ent = ent_snap.to_dict() if ent_snap.exists else {}
    recipient = user if user is not None and user.get("uid") == uid else None
    sent = {key: mail.ref(key).get(transaction=tx).exists for key, _ in keys} if recipient is not None else {}
    outbox = _Outbox(tx, recipient, keys, sent, f"{config.settings().lab_url}/#billing")
    now, stored_status = reading.now, mapping.get("status")
    before = entitlements.status(ent, now)
    if _stale(mapping, reading):  # we already hold a newer read; a sale's receipt is still owed
        created = outbox.queue(reading, stored_status, entitlements.pro_until(ent), only=("payment_receipt",))
        return _Applied(uid, before, before, created, False)
    part = entitlements.paypal_part(reading.snapshot, ent.get("paypal"), now)
    part["fetched_at"] = reading.fetched_at
    tx.update(sub_ref, _record(mapping, part, reading))
    if reading.refused:  # stored and audited; grants nothing
        taken = _take_back(tx, ent_ref, ent, uid, reading)
        after = entitlements.status(taken, now) if taken is not None else before
        return _Applied(uid, before, after, [], mapping.get("refused") != reading.refused)
    tracked = entitlements.track(ent, part)
    if tracked is None:  # an older subscription: its record (and its mails) only
        return _Applied(uid, before, before, outbox.queue(reading, stored_status, entitlements.pro_until(ent)), False)
    if part["status"] == entitlements.ACTIVE:
        tracked["ever_pro"] = True
    stored = entitlements.stamp(uid, tracked, now, created=not ent_snap.exists)
    tx.set(ent_ref, stored)
    created = outbox.queue(reading, stored_status, entitlements.pro_until(stored))
    return _Applied(uid, before, entitlements.status(stored, now), created, False)


def _stale(mapping: dict[str, Any], reading: _Reading) -> bool:
    """True when the stored record comes from a later read, or PayPal's state in it changed later."""
    stored_read = entitlements.parse_time(mapping.get("fetched_at"))
    stored_change = entitlements.parse_time(mapping.get("status_update_time"))
    change = entitlements.parse_time(reading.snapshot.get("status_update_time"))
    return bool(
        (stored_read and stored_read > reading.fetched_at) or (stored_change and change and change < stored_change)
    )


def _record(mapping: dict[str, Any], part: dict[str, Any], reading: _Reading) -> dict[str, Any]:
    """The fields of the subscription's record that this read sets."""
    snapshot = reading.snapshot
    # A checkout we gave up on (expired, or replaced) stays ABANDONED while PayPal still calls it
    # APPROVAL_PENDING: a late CREATED event must not bring it back.
    abandoned = mapping.get("status") == ABANDONED and part["status"] == "APPROVAL_PENDING"
    return {
        "status": ABANDONED if abandoned else part["status"],
        "plan_id": snapshot.get("plan_id"),
        "custom_id": snapshot.get("custom_id"),
        "status_update_time": part["status_update_time"],
        "fetched_at": reading.fetched_at,
        "synced_at": reading.now,
        "next_billing_time": part["next_billing_time"],
        "last_payment_time": part["last_payment_time"],
        "failed_payments_count": part["failed_payments_count"],
        "paid_through": part["paid_through"],
        "start_time": part["start_time"],
        "refused": reading.refused,
        # What reconciliation watches: the end of paid access, or a delayed start's first charge.
        "pro_until": entitlements.paypal_until(part)
        or (part["start_time"] if entitlements.awaiting_first_payment(part) else None),
        "snapshot": _trim(snapshot),
        "updated_at": reading.now,
    }


def _take_back(tx: Any, ent_ref: Any, ent: dict[str, Any], uid: str, reading: _Reading) -> dict[str, Any] | None:
    """A refused subscription the entitlement still tracks (granted before this check existed, or
    before the plan changed): the entitlement without it, stored. None when it does not track it."""
    if (ent.get("paypal") or {}).get("subscription_id") != reading.snapshot["id"]:
        return None
    stored = entitlements.stamp(uid, {k: v for k, v in ent.items() if k != "paypal"}, reading.now, created=False)
    tx.set(ent_ref, stored)
    return stored


def _log_applied(reading: _Reading, applied: _Applied) -> None:
    snapshot, refused, uid = reading.snapshot, reading.refused, applied.uid
    if uid:
        log.info(
            "subscription applied",
            uid=uid,
            subscription_id=snapshot["id"],
            paypal_status=snapshot.get("status"),
            before=applied.before,
            after=applied.after,
            refused=refused,
        )
    if applied.newly_refused:
        log.error(
            REFUSED_LOG,
            uid=uid,
            subscription_id=snapshot["id"],
            reason=refused,
            plan_id=snapshot.get("plan_id"),
            paypal_status=snapshot.get("status"),
        )
        audit.record(
            "billing.refused",
            actor=uid,
            target=f"paypal:{snapshot['id']}",
            outcome=str(refused),
            plan_id=snapshot.get("plan_id"),
        )


def _trim(snapshot: dict[str, Any]) -> dict[str, Any]:
    """What we keep of PayPal's answer: no links, no payer name or address."""
    keep = (
        "id",
        "status",
        "plan_id",
        "custom_id",
        "start_time",
        "create_time",
        "update_time",
        "status_update_time",
        "status_change_note",
        "billing_info",
        "plan_overridden",
    )
    return {k: snapshot[k] for k in keep if k in snapshot}


def _notify(uid: str, template: str, until: datetime | None) -> None:
    user = users.get(uid)
    if not user or user.get("deleted_at"):
        return
    mail.send(
        user["email"],
        template,
        f"{config.settings().lab_url}/#billing",
        until=(until or clock.now()).strftime("%B %d, %Y"),
    )


def resync(subscription_id: str, *, adopt_uid: str | None = None, sale: dict[str, Any] | None = None) -> str:
    """Re-read one subscription from PayPal and store it. Returns what happened, for logs and events.
    Webhooks, the return from checkout, `mllab billing resync` and reconciliation all come through here,
    so a subscription that is not our PRO plan at its price is refused the same way by each."""
    snapshot = _read(subscription_id)
    if snapshot is None:
        log.error("PayPal does not know this subscription", subscription_id=subscription_id)
        return "unknown-subscription"
    ref = _db().collection(SUBSCRIPTIONS).document(subscription_id)
    snap = ref.get()
    custom = snapshot.get("custom_id")
    if not snap.exists:
        # Created outside our checkout (or its mapping write was lost): adopt it only for a real user
        # named by custom_id, which only our server sets.
        uid = adopt_uid or custom
        if not uid or not isinstance(uid, str) or users.get(uid) is None:
            log.error("subscription of no known user", subscription_id=subscription_id)
            return "unmapped"
        _create_mapping(subscription_id, uid, snapshot, request_id=None, approve_url=None)
    elif custom and custom != snap.get("uid"):
        log.error("subscription custom_id does not match its user", subscription_id=subscription_id)
        return "uid-mismatch"
    refused = _refusal(snapshot)
    uid, before, after = apply(snapshot, refused=refused, sale=sale)
    if refused:
        return f"refused:{refused}"
    if snap.exists and (snap.to_dict() or {}).get("superseded_by") and snapshot.get("status") in entitlements.LIVE:
        # A checkout the user left and replaced (its start date was no longer right) was approved
        # after all, from an old tab: never two live subscriptions.
        _paypal().cancel_subscription(subscription_id, SUPERSEDED_REASON)
        audit.record("billing.cancel", actor=uid, target=f"paypal:{subscription_id}", outcome="superseded")
        log.warning("superseded checkout approved; cancelled", uid=uid, subscription_id=subscription_id)
        return f"superseded:{resync(subscription_id)}"
    return f"applied:{after}" if before != after else f"unchanged:{after}"


def _create_mapping(
    sub_id: str,
    uid: str,
    created: dict[str, Any],
    *,
    request_id: str | None,
    approve_url: str | None,
    first_charge: datetime | None = None,
) -> None:
    from google.api_core.exceptions import AlreadyExists, Conflict

    now = clock.now()
    # The same PayPal-Request-Id can come back with the same subscription: then it is already mapped.
    with contextlib.suppress(AlreadyExists, Conflict):
        _db().collection(SUBSCRIPTIONS).document(sub_id).create(
            {
                "uid": uid,
                "status": created.get("status", "APPROVAL_PENDING"),
                "plan_id": created.get("plan_id"),
                "approve_url": approve_url,
                "request_id": request_id,
                "created_at": now,
                "updated_at": now,
                "first_charge_time": first_charge,
                "synced_at": None,
                "fetched_at": None,
                "pro_until": None,
            },
        )


# --- checkout, sync, cancel (the `billing` function) -----------------------------------------------


def _return_urls() -> tuple[str, str]:
    lab = config.settings().lab_url.rstrip("/")
    return f"{lab}/?billing=return", f"{lab}/?billing=cancel"


def subscribe(user: dict[str, Any], *, ip: str | None = None) -> schemas.SubscribeResponse:
    """A checkout. While the user has PRO already (a cancelled subscription paid through a date, a
    trial, a comp), the subscription starts then (PayPal's `start_time`): PayPal approves it now and
    charges the first cycle at that moment, so no day is paid twice and PRO runs on without a gap."""
    uid = user["uid"]
    if not user.get("email_verified"):
        raise Problem(
            403,
            "Confirm your email address before subscribing (see the mail we sent, or ask for a new one).",
            slug="email-unverified",
        )
    now = clock.now()
    ent = entitlements.get(uid) or {}
    if max(entitlements.parse_time(ent.get(k)) or now for k in ("comp_until", "admin_until")) >= entitlements.FOREVER:
        raise Problem(409, "You have PRO for good already; there is nothing to pay for.", slug="already-pro")
    subs = subscriptions_of(uid)
    live = live_subscriptions(uid, subs)  # one read serves both checks below
    if live:
        raise Problem(
            409,
            f"You already have a subscription ({live[-1]['status'].lower()}). Manage it under Billing.",
            slug="already-subscribed",
        )
    first = entitlements.first_charge(ent, now)
    first = first.replace(microsecond=0) + timedelta(seconds=1) if first else None  # PayPal takes whole seconds
    pro = config.PLANS["pro"]
    amount = schemas.Money(value=pro.price, currency=pro.currency)
    cutoff = now - timedelta(seconds=config.CHECKOUT_PENDING_S)
    pending = [
        s for s in subs if s.get("status") == "APPROVAL_PENDING" and s.get("approve_url") and s["created_at"] > cutoff
    ]
    for sub in pending:
        if _same_start(sub.get("first_charge_time"), first):
            # A checkout the user left: the same approval page again, not a second subscription.
            return schemas.SubscribeResponse(
                subscription_id=sub["id"],
                approve_url=sub["approve_url"],
                first_charge_time=_rfc(sub.get("first_charge_time")),
                amount=amount,
            )
    from mllab.billing import paypal

    # Concurrent clicks compute the same key, and PayPal answers the same subscription to both.
    request_id = f"mllab-{uid}-{len(subs) + 1}"
    return_url, cancel_url = _return_urls()
    created = _paypal().create_subscription(
        paypal_ids()["plan_id"],
        custom_id=uid,
        return_url=return_url,
        cancel_url=cancel_url,
        request_id=request_id,
        start_time=clock.rfc3339(first) if first else None,
    )
    sub_id, approve = created["id"], paypal.approve_url(created)
    _create_mapping(sub_id, uid, created, request_id=request_id, approve_url=approve, first_charge=first)
    for sub in pending:  # its start date is no longer right: it must not be approved any more
        if sub["id"] != sub_id:
            _supersede(sub["id"], sub_id)
    audit.record(
        "billing.subscribe",
        actor=uid,
        target=f"paypal:{sub_id}",
        ip=ip,
        first_charge=clock.rfc3339(first) if first else "now",
    )
    log.info("checkout created", uid=uid, subscription_id=sub_id, delayed_start=first is not None)
    return schemas.SubscribeResponse(
        subscription_id=sub_id,
        approve_url=approve,
        first_charge_time=clock.rfc3339(first) if first else None,
        amount=amount,
    )


def _same_start(stored: Any, wanted: datetime | None) -> bool:
    have = entitlements.parse_time(stored)
    if have is None or wanted is None:
        return have is None and wanted is None
    return abs((have - wanted).total_seconds()) < 60


def _rfc(value: Any) -> str | None:
    when = entitlements.parse_time(value)
    return clock.rfc3339(when) if when else None


def _supersede(sub_id: str, by: str) -> None:
    """PayPal cannot cancel a checkout before approval: forget its approval page here, and remember
    that it was replaced, so an approval from an old tab is cancelled at once (see `resync`)."""
    _db().collection(SUBSCRIPTIONS).document(sub_id).update(
        {"status": ABANDONED, "approve_url": None, "superseded_by": by, "updated_at": clock.now()}
    )


def sync(uid: str, subscription_id: str | None) -> schemas.Subscription:
    """On return from PayPal: re-read the caller's subscription and update the entitlement at once
    (never trusting the query string, never waiting for the webhook)."""
    if subscription_id is None:
        subs = subscriptions_of(uid)
        if not subs:
            raise Problem(404, "You have no subscription to sync. Subscribe first.")
        subscription_id = subs[-1]["id"]
    _owned(uid, subscription_id)
    outcome = resync(subscription_id)
    if outcome in ("unknown-subscription", "uid-mismatch"):
        raise Problem(404, "You have no subscription with this id.")
    return entitlements.view(entitlements.get(uid), clock.now())


def cancel(uid: str, reason: str | None, *, ip: str | None = None) -> schemas.Subscription:
    """Cancel at PayPal ("already cancelled" counts as done); PRO stays until the paid-through date."""
    if not _cancel_live(uid, reason or DEFAULT_CANCEL_REASON, ip=ip):
        raise Problem(409, "You have no active subscription to cancel.", slug="no-subscription")
    return entitlements.view(entitlements.get(uid), clock.now())


def cancel_for_deletion(uid: str) -> int:
    """Account deletion: stop billing first. If PayPal is down this raises, and nothing is deleted."""
    return _cancel_live(uid, "Account deleted", outcome="account-deleted")


def _cancel_live(uid: str, reason: str, *, ip: str | None = None, outcome: str | None = None) -> int:
    """Cancel each live subscription at PayPal, store what PayPal then says, audit it. Returns how many."""
    live = live_subscriptions(uid)
    for sub in live:
        cancelled = _paypal().cancel_subscription(sub["id"], reason)
        resync(sub["id"])
        audit.record(
            "billing.cancel",
            actor=uid,
            target=f"paypal:{sub['id']}",
            ip=ip,
            outcome=outcome or ("ok" if cancelled else "already-cancelled"),
        )
    return len(live)


# --- webhooks (the `paypal_webhook` function) -------------------------------------------------------


def handle_webhook(headers: Any, raw_body: bytes) -> schemas.WebhookAck:
    """Verify, then process exactly once. A bad signature is a 400 that changes nothing; any failure
    after the claim is a 5xx so PayPal retries, and the retry does the work."""
    from mllab.billing import webhooks

    try:
        webhooks.verify(headers, raw_body, webhook_id=paypal_ids()["webhook_id"])
    except webhooks.InvalidSignature as exc:
        log.warning("webhook refused", reason=str(exc))
        raise Problem(400, f"The webhook signature was refused: {exc}.", slug="invalid-signature") from None
    try:
        event = json.loads(raw_body)
    except ValueError:
        raise Problem(400, "The webhook body is not JSON.", slug="malformed-json") from None
    event_id = event.get("id") if isinstance(event, dict) else None
    event_type = str(event.get("event_type") or "") if isinstance(event, dict) else ""
    if not isinstance(event_id, str) or not EVENT_ID.fullmatch(event_id) or not event_type:
        raise Problem(400, "The webhook event has no valid id or event_type.")
    ctx = log.bind(event_id=event_id, event_type=event_type)
    try:
        try:
            claim = idempotency.claim(
                EVENTS,
                event_id,
                ttl_s=EVENT_LEASE_S,
                fields={
                    "type": event_type,
                    "resource_type": event.get("resource_type"),
                    "create_time": event.get("create_time"),
                },
            )
        except idempotency.InProgress:
            raise Problem(
                409,
                "This event is being processed by another delivery; PayPal will retry it.",
                slug="event-in-progress",
            ) from None
        if claim is None:
            log.info("webhook duplicate ignored")
            return schemas.WebhookAck(event_id=event_id, outcome="duplicate")
        try:
            outcome, sub_id = _process(event_type, event)
        except Exception as exc:
            claim.failed(type(exc).__name__)
            raise
        claim.done(outcome, subscription_id=sub_id)
        log.info("webhook processed", outcome=outcome, subscription_id=sub_id, attempt=claim.attempt)
        return schemas.WebhookAck(event_id=event_id, outcome=outcome)
    finally:
        log.unbind(ctx)


def _process(event_type: str, event: dict[str, Any]) -> tuple[str, str | None]:
    if not event_type.startswith(EVENT_PREFIXES):
        return "ignored", None
    resource = event.get("resource")
    if not isinstance(resource, dict):
        resource = {}
    sale = None
    if event.get("resource_type") == "subscription" or event_type.startswith("BILLING.SUBSCRIPTION."):
        sub_id = resource.get("id")
    else:
        sub_id = resource.get("billing_agreement_id")  # a sale names its subscription here
        if (
            event_type == "PAYMENT.SALE.COMPLETED"
            and isinstance(resource.get("id"), str)
            and SALE_ID.fullmatch(resource["id"])
            and isinstance(resource.get("amount"), dict)
        ):
            sale = resource  # its receipt is keyed by the sale id
    if not isinstance(sub_id, str) or not SUBSCRIPTION_ID.fullmatch(sub_id):
        return "ignored-no-subscription", None
    return resync(sub_id, sale=sale), sub_id


# --- reconciliation (the `reconcile_subscriptions` function) ----------------------------------------


def _where(collection: str, field: str, value: Any, range_field: str, op: str, bound: Any) -> list[Any]:
    from google.cloud.firestore_v1.base_query import FieldFilter

    query = (
        _db()
        .collection(collection)
        .where(filter=FieldFilter(field, "==", value))
        .where(filter=FieldFilter(range_field, op, bound))
    )
    return _stream(query)


def reconcile(now: datetime | None = None) -> dict[str, int]:
    """Repair what a missed webhook left wrong: re-read subscriptions whose access ends within 48 h,
    checkouts stuck in approval, and subscriptions we have not heard of for 35 days. Then mail the
    users whose PRO ends within three days and will not renew."""
    now = now or clock.now()
    counts = {"checked": 0, "changed": 0, "abandoned": 0, "failed": 0, "notified": 0}
    due: dict[str, str] = {}
    for status in entitlements.LIVE:
        for snap in _where(SUBSCRIPTIONS, "status", status, "pro_until", "<", now + RECONCILE_HORIZON):
            due[snap.id] = "ending"
        for snap in _where(SUBSCRIPTIONS, "status", status, "synced_at", "<", now - SILENT_AFTER):
            due.setdefault(snap.id, "silent")
    stuck = _where(
        SUBSCRIPTIONS,
        "status",
        "APPROVAL_PENDING",
        "created_at",
        "<",
        now - timedelta(seconds=config.CHECKOUT_PENDING_S),
    )
    for snap in stuck:
        due.setdefault(snap.id, "stuck")
    for sub_id, why in sorted(due.items()):
        counts["checked"] += 1
        try:
            outcome = resync(sub_id)
        except Exception as exc:  # noqa: BLE001 - one bad subscription must not stop the run
            counts["failed"] += 1
            log.exception("reconcile failed for a subscription", exc, subscription_id=sub_id)
            continue
        if outcome.startswith("applied:"):
            counts["changed"] += 1
        if why == "stuck" and _abandon_if_pending(sub_id, now):
            counts["abandoned"] += 1
        log.info("reconciled", subscription_id=sub_id, reason=why, outcome=outcome)
    counts["notified"] = _notify_access_ending(now)
    log.info("reconcile finished", **counts)
    return counts


def _abandon_if_pending(sub_id: str, now: datetime) -> bool:
    ref = _db().collection(SUBSCRIPTIONS).document(sub_id)
    snap = ref.get()
    if not snap.exists or snap.get("status") != "APPROVAL_PENDING":
        return False
    ref.update(
        {"status": ABANDONED, "approve_url": None, "updated_at": now},
        option=_db().write_option(last_update_time=snap.update_time),
    )
    return True


def _notify_access_ending(now: datetime) -> int:
    """One notice per end date, to users whose PRO ends soon without a renewal coming."""
    sent = 0
    for status in ("canceled", "past_due"):
        for snap in _where(entitlements.COLLECTION, "status", status, "pro_until", "<", now + ACCESS_ENDING_NOTICE):
            ent = snap.to_dict()
            until = entitlements.pro_until(ent)
            if until is None or until <= now or ent.get("access_ending_notified_for") == until:
                continue
            if entitlements.status(ent, now) not in ("canceled", "past_due"):
                continue
            _notify(snap.id, "access_ending", until)
            snap.reference.update({"access_ending_notified_for": until})
            sent += 1
    return sent


def handle_reconcile_event(cloud_event: Any) -> dict[str, int]:
    ctx = log.bind(event_id=str(cloud_event["id"]), function="reconcile_subscriptions")
    try:
        return reconcile()
    finally:
        log.unbind(ctx)


# --- export, purge, operator ------------------------------------------------------------------------


def export_entitlement(uid: str) -> dict[str, Any] | None:
    ent = entitlements.get(uid)
    if ent is None:
        return None
    keep = (
        "plan",
        "source",
        "status",
        "pro_until",
        "trial_until",
        "comp_until",
        "admin_until",
        "paypal_prior",
        "paypal_subscription_id",
        "next_billing_time",
        "past_due_since",
        "created_at",
        "updated_at",
    )
    return {k: jsonvalues.jsonable(ent.get(k)) for k in keep if k in ent}


def export_subscriptions(uid: str) -> list[dict[str, Any]]:
    keep = (
        "status",
        "plan_id",
        "created_at",
        "status_update_time",
        "next_billing_time",
        "last_payment_time",
        "failed_payments_count",
        "paid_through",
        "synced_at",
    )
    return [
        {"id": s["id"], **{k: jsonvalues.jsonable(s.get(k)) for k in keep if k in s}} for s in subscriptions_of(uid)
    ]


def export_redemptions(uid: str) -> list[dict[str, Any]]:
    from mllab.billing import promo

    out = [
        {k: jsonvalues.jsonable(r.get(k)) for k in ("code", "kind", "days", "n", "pro_until", "created_at")}
        for r in promo.redemptions_of(uid)
    ]
    return sorted(out, key=lambda r: r["created_at"] or "")


def purge_billing(uid: str, user: dict[str, Any]) -> int:
    """Purge: the entitlement and redemptions go; subscription records stay as the billing ledger,
    without the uid or PayPal's snapshot."""
    from mllab.billing import promo

    db = _db()
    refs = [entitlements.ref(uid)] + [
        db.collection(promo.REDEMPTIONS).document(promo.redemption_id(r["code"], uid, r["n"]))
        for r in promo.redemptions_of(uid)
    ]
    removed = clients.delete_refs(refs)
    for sub in subscriptions_of(uid):
        db.collection(SUBSCRIPTIONS).document(sub["id"]).update(
            {"uid": "purged", "custom_id": None, "snapshot": None, "approve_url": None, "updated_at": clock.now()},
        )
    return removed


def set_grant(uid: str, change: Any, *, actor: str = "operator", action: str = "access.grant") -> dict[str, Any]:
    """Apply `change(entitlement_doc, now) -> doc` in a transaction (operator grants and revokes)."""
    from google.cloud import firestore

    db = _db()
    ref = entitlements.ref(uid)

    @firestore.transactional
    def run(tx: Any) -> dict[str, Any]:
        snap = ref.get(transaction=tx)
        now = clock.now()
        doc = entitlements.stamp(uid, change(snap.to_dict() if snap.exists else {}, now), now, created=not snap.exists)
        tx.set(ref, doc)
        return doc

    doc = run(db.transaction(max_attempts=10))
    audit.record(action, actor=actor, target=f"user:{uid}", status=doc["status"])
    return doc


def bootstrap(
    webhook_url: str,
    *,
    price: str | None = None,
    currency: str | None = None,
    failure_threshold: int = config.PAYPAL_PAYMENT_FAILURE_THRESHOLD,
) -> dict[str, str]:
    """Create the product, the monthly PRO plan and the webhook subscription at PayPal (one per
    environment). Returns the ids to store as the `paypal-ids` secret."""
    pro = config.PLANS["pro"]
    client = _paypal()
    product = client.create_product(
        "ML Lab PRO", "Cloud saves for ML Lab, the browser machine-learning lab", request_id=f"mllab-product-{pro.id}"
    )
    plan = client.create_plan(
        product["id"],
        pro.name,
        price or pro.price,
        currency or pro.currency,
        failure_threshold,
        request_id=f"mllab-plan-{pro.id}-{price or pro.price}",
    )
    existing = [w for w in client.list_webhooks() if w.get("url") == webhook_url]
    webhook = existing[0] if existing else client.create_webhook(webhook_url, ["*"])
    return {"product_id": product["id"], "plan_id": plan["id"], "webhook_id": webhook["id"]}
