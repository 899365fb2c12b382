"""Who has PRO, until when, and why (docs/architecture.md, entitlements).

`entitlements/<uid>` keeps each source of PRO apart, so one never clobbers another:

    paypal        the tracked PayPal subscription: id, status, paid_through, past_due_since, ...
    paypal_prior  access still owed by earlier subscriptions (cancelled, but paid through a date)
    trial_until   promo trials          comp_until   comp codes         admin_until   operator grants

and stores what follows from them at write time (`plan`, `status`, `source`, `pro_until`, ...) for
queries and the export. What a caller sees is always recomputed for *now* by `view()`, because time
moves on between writes: PRO means `now < pro_until`. Everything here is pure except `get`/`is_pro`.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any, Literal

from mllab.platform import clients, clock, config

if TYPE_CHECKING:
    from mllab.billing import schemas

COLLECTION = "entitlements"
FOREVER = datetime(9999, 12, 31, tzinfo=UTC)  # a comp code or grant without an end

ACTIVE, SUSPENDED, CANCELLED, EXPIRED = "ACTIVE", "SUSPENDED", "CANCELLED", "EXPIRED"
# A delayed start this close to the moment it is due still counts as due (clock skew, rounding to seconds).
BRIDGE_SLACK = timedelta(minutes=5)
# A first charge due sooner than this starts at once: PayPal wants a start in the future at approval.
START_MIN_DELAY = timedelta(minutes=10)
PENDING = ("APPROVAL_PENDING", "APPROVED")
ENDED = (CANCELLED, EXPIRED)
LIVE = (ACTIVE, SUSPENDED, "APPROVED")  # a second checkout is refused while one of these exists
# What `status()` answers: the values of `/me.subscription.status` (mypy checks that the two agree).
Status = Literal["active", "past_due", "trial", "canceled", "none"]


def _grace() -> timedelta:
    return timedelta(days=config.LIMITS.past_due_grace_days)


def _max(*values: datetime | None) -> datetime | None:
    present = [v for v in values if v is not None]
    return max(present) if present else None


def parse_time(value: Any) -> datetime | None:
    """PayPal's RFC 3339 strings (and Firestore timestamps) as aware datetimes; None if absent/garbage."""
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _money(value: Any) -> Decimal:
    try:
        return Decimal(str((value or {}).get("value") or "0"))
    except (InvalidOperation, AttributeError):
        return Decimal(0)


# --- PayPal ---------------------------------------------------------------------------------------


def paypal_part(snapshot: dict[str, Any], previous: dict[str, Any] | None, now: datetime) -> dict[str, Any]:
    """The `paypal` component from a subscription as PayPal answers GET /v1/billing/subscriptions/{id}.

    `paid_through` only moves forward, and only on a snapshot with nothing owed: PayPal keeps
    `next_billing_time` on the next cycle even while a payment is failing, which would otherwise
    extend access that was never paid for. Cancel is immediate at PayPal; the paid-through date
    is ours to honour."""
    prev = previous if previous is not None and previous.get("subscription_id") == snapshot.get("id") else {}
    status = str(snapshot.get("status") or "")
    billing = snapshot.get("billing_info") or {}
    failed = int(billing.get("failed_payments_count") or 0)
    owing = failed > 0 or _money(billing.get("outstanding_balance")) > 0
    next_billing = parse_time(billing.get("next_billing_time"))
    paid = billing.get("last_payment") or {}
    last_payment = parse_time(paid.get("time"))
    amount = paid.get("amount") or {}
    paid_through = parse_time(prev.get("paid_through"))
    if status == ACTIVE and not owing and last_payment is not None:
        # Only a paid cycle moves it: a subscription with a delayed start is ACTIVE with a
        # next_billing_time (its start) before anything was paid.
        paid_through = _max(paid_through, next_billing)
    if paid_through is None and last_payment is not None:
        paid_through = last_payment + timedelta(days=30)  # a snapshot without next_billing_time
    troubled = status == SUSPENDED or (status == ACTIVE and owing)
    past_due_since = None
    if troubled:
        failed_at = parse_time((billing.get("last_failed_payment") or {}).get("time"))
        past_due_since = parse_time(prev.get("past_due_since")) or failed_at or now
    return {
        "subscription_id": snapshot.get("id"),
        "status": status,
        "plan_id": snapshot.get("plan_id"),
        "create_time": parse_time(snapshot.get("create_time")),
        "status_update_time": parse_time(snapshot.get("status_update_time")),
        "next_billing_time": next_billing if status == ACTIVE else None,
        "last_payment_time": last_payment,
        "last_payment_amount": {"value": str(amount["value"]), "currency": str(amount.get("currency_code") or "")}
        if last_payment is not None and amount.get("value") is not None
        else None,
        "failed_payments_count": failed,
        "start_time": parse_time(snapshot.get("start_time")),
        "paid_through": paid_through,
        "past_due_since": past_due_since,
        "fetched_at": now,
    }


def paypal_until(part: dict[str, Any] | None) -> datetime | None:
    """Until when a subscription gives PRO: paid-through (+ the grace while active, so a renewal that
    PayPal books a little late never cuts access), or the past-due grace after a failed payment or a
    suspension. A cancelled subscription keeps exactly its paid-through date."""
    if not part:
        return None
    status = part.get("status")
    paid = parse_time(part.get("paid_through"))
    due = parse_time(part.get("past_due_since"))
    if status == ACTIVE and due is None:
        return paid + _grace() if paid else None
    if status in (ACTIVE, SUSPENDED) or (status == EXPIRED and due is not None):
        return _max(paid, due + _grace() if due else None)
    if status in ENDED:
        return paid
    return None  # not approved yet: nothing paid


def awaiting_first_payment(part: dict[str, Any] | None) -> bool:
    """Approved and active at PayPal, nothing paid yet: a delayed start (or a first sale still on its way)."""
    if not part:
        return False
    return (
        part.get("status") == ACTIVE
        and part.get("last_payment_time") is None
        and part.get("paid_through") is None
        and part.get("past_due_since") is None
        and parse_time(part.get("start_time")) is not None
    )


def _bridge(doc: dict[str, Any]) -> datetime | None:
    """PRO that a subscription awaiting its first payment carries across the moment of that payment:
    its start plus the grace, so access never lapses between the end of what the user already had
    (a paid-through date, a trial) and PayPal booking the first sale. Only when that start was due
    when we read it, or is covered by the user's other PRO: a start set far in the future by whoever
    created the subscription must not give PRO until then for nothing."""
    part = doc.get("paypal") or {}
    if not awaiting_first_payment(part):
        return None
    start = parse_time(part.get("start_time"))
    covered = _max(parse_time(part.get("fetched_at")), _others(doc))
    if start is None or covered is None or start > covered + BRIDGE_SLACK:
        return None
    return start + _grace()


def subscription_until(doc: dict[str, Any]) -> datetime | None:
    """Until when the tracked subscription gives PRO (paid, in grace, or bridged to its first sale)."""
    return _max(paypal_until(doc.get("paypal")), _bridge(doc))


def _others(doc: dict[str, Any]) -> datetime | None:
    return _max(
        parse_time(doc.get("paypal_prior")),
        parse_time(doc.get("trial_until")),
        parse_time(doc.get("comp_until")),
        parse_time(doc.get("admin_until")),
    )


def first_charge(doc: dict[str, Any] | None, now: datetime) -> datetime | None:
    """When a subscription taken out now would first charge: the end of the PRO the user has already
    (a paid-through date, a trial, a comp), so no day is paid twice; None means at once."""
    until = pro_until(doc) if doc else None
    return until if until is not None and until > now + START_MIN_DELAY else None


def track(doc: dict[str, Any], part: dict[str, Any]) -> dict[str, Any] | None:
    """The entitlement with `part` applied, or None when `part` belongs to an older subscription than
    the tracked one and owes nothing beyond `paypal_prior` (its own record is still updated by the
    caller). An older one paid through a later date extends `paypal_prior`. Switching to a newer
    subscription keeps what the old one owed in `paypal_prior`."""
    current = doc.get("paypal")
    out = dict(doc)
    if current and current.get("subscription_id") != part["subscription_id"]:
        mine, theirs = part.get("create_time"), parse_time(current.get("create_time"))
        older = mine is not None and theirs is not None and mine < theirs
        # An ended subscription never displaces a live one: PayPal's create_time has whole seconds, so
        # a checkout made soon after a cancel can look as old as the subscription it follows.
        ended_behind_live = part.get("status") in ENDED and current.get("status") not in ENDED
        if older or ended_behind_live:
            # Older than the tracked one, but what it was paid for is still owed (whatever order
            # PayPal's events come in): the end of both is the later one.
            paid, prior = parse_time(part.get("paid_through")), parse_time(doc.get("paypal_prior"))
            if paid is None or (prior is not None and paid <= prior):
                return None
            out["paypal_prior"] = paid
            return out
        out["paypal_prior"] = _max(parse_time(doc.get("paypal_prior")), paypal_until(current))
    out["paypal"] = part
    return out


# --- promo codes and operator grants ------------------------------------------------------------


def pro_until(doc: dict[str, Any]) -> datetime | None:
    return _max(subscription_until(doc), _others(doc))


def _extend(current: datetime | None, now: datetime, days: int | None) -> datetime:
    if days is None:
        return FOREVER
    base = _max(current, now) or now
    return FOREVER if base >= FOREVER - timedelta(days=days) else base + timedelta(days=days)


def with_trial(doc: dict[str, Any], days: int, now: datetime) -> dict[str, Any]:
    """A trial runs from the end of any PRO the user already has: pro_until = max(pro_until, now) + days."""
    return {**doc, "trial_until": _extend(pro_until(doc), now, days), "ever_pro": True}


def with_comp(doc: dict[str, Any], days: int | None, now: datetime) -> dict[str, Any]:
    return {**doc, "comp_until": _extend(parse_time(doc.get("comp_until")), now, days), "ever_pro": True}


def with_grant(doc: dict[str, Any], days: int | None, now: datetime) -> dict[str, Any]:
    return {**doc, "admin_until": _extend(parse_time(doc.get("admin_until")), now, days), "ever_pro": True}


def without_grants(doc: dict[str, Any]) -> dict[str, Any]:
    """What an operator revokes: trials, comps and grants. A paying subscription stays (cancel it at
    PayPal to end it)."""
    return {**doc, "trial_until": None, "comp_until": None, "admin_until": None}


# --- what it means now ----------------------------------------------------------------------------


def _running(doc: dict[str, Any], field: str, now: datetime) -> bool:
    until = parse_time(doc.get(field))
    return until is not None and until > now


def status(doc: dict[str, Any] | None, now: datetime) -> Status:
    """active > past_due > trial > canceled > none: the most telling state wins."""
    if not doc:
        return "none"
    part = doc.get("paypal")
    until = subscription_until(doc)
    live = until is not None and until > now
    if part and part.get("status") == ACTIVE and not part.get("past_due_since") and live:
        return "active"
    if _running(doc, "comp_until", now) or _running(doc, "admin_until", now):
        return "active"
    if part and part.get("past_due_since") and part.get("status") in (ACTIVE, SUSPENDED) and live:
        return "past_due"
    if _running(doc, "trial_until", now):
        return "trial"
    if (part and part.get("status") not in PENDING) or doc.get("paypal_prior"):
        return "canceled"
    return "none"


def source(doc: dict[str, Any], now: datetime) -> str | None:
    """Which source gives the PRO that lasts longest (None when there is none now)."""
    candidates = [
        ("paypal", _max(subscription_until(doc), parse_time(doc.get("paypal_prior")))),
        ("promo", _max(parse_time(doc.get("trial_until")), parse_time(doc.get("comp_until")))),
        ("admin", parse_time(doc.get("admin_until"))),
    ]
    live = [(until, name) for name, until in candidates if until is not None and until > now]
    return max(live)[1] if live else None


def derived(doc: dict[str, Any], now: datetime) -> dict[str, Any]:
    """The flat fields (plan, status, source, pro_until, ...), stored beside the components on every write."""
    part = doc.get("paypal") or {}
    until = pro_until(doc)
    return {
        "plan": "pro" if until is not None and until > now else "free",
        "status": status(doc, now),
        "source": source(doc, now),
        "pro_until": until,
        "paypal_subscription_id": part.get("subscription_id"),
        "next_billing_time": part.get("next_billing_time"),
        "past_due_since": part.get("past_due_since"),
    }


def stamp(uid: str, doc: dict[str, Any], now: datetime, *, created: bool) -> dict[str, Any]:
    """`doc` ready to store: derived fields recomputed, timestamps set."""
    out = {**doc, **derived(doc, now), "uid": uid, "updated_at": now}
    if created or "created_at" not in out:
        out["created_at"] = now
    return out


def view(doc: dict[str, Any] | None, now: datetime) -> schemas.Subscription:
    """`/me.subscription`."""
    from mllab.billing import schemas  # only the routes that answer it load the wire models

    if not doc:
        return schemas.Subscription()
    until = pro_until(doc)
    part = doc.get("paypal") or {}
    state = status(doc, now)
    trial = parse_time(doc.get("trial_until"))
    next_billing = parse_time(part.get("next_billing_time")) if state == "active" else None
    paid = parse_time(part.get("last_payment_time"))
    amount = part.get("last_payment_amount") or {}
    billed = part.get("subscription_id") and part.get("status") in (ACTIVE, SUSPENDED)
    if awaiting_first_payment(part):
        first = parse_time(part.get("start_time"))
    else:
        first = first_charge(doc, now) if state not in ("active", "past_due") else None
    return schemas.Subscription(
        status=state,
        plan="pro" if until is not None and until > now else "free",
        pro_until=clock.rfc3339(until) if until else None,
        trial_until=clock.rfc3339(trial) if trial else None,
        next_billing_time=clock.rfc3339(next_billing) if next_billing else None,
        past_due=state == "past_due",
        last_payment=schemas.LastPayment(
            time=clock.rfc3339(paid), value=amount.get("value"), currency=amount.get("currency")
        )
        if paid
        else None,
        manage_url=config.settings().paypal_autopay_url if billed else None,
        first_charge_time=clock.rfc3339(first) if first else None,
    )


def plan_of(doc: dict[str, Any] | None, now: datetime) -> config.Plan:
    until = pro_until(doc) if doc else None
    return config.PLANS["pro" if until is not None and until > now else "free"]


# --- storage --------------------------------------------------------------------------------------


def ref(uid: str) -> Any:
    return clients.firestore().collection(COLLECTION).document(uid)


def get(uid: str) -> dict[str, Any] | None:
    return doc_in(ref(uid).get())


def doc_in(snap: Any) -> dict[str, Any] | None:
    """The entitlement in a snapshot of `ref` (read alone, or with other documents in one batch)."""
    return snap.to_dict() if snap.exists else None


def is_pro(uid: str) -> bool:
    return plan_of(get(uid), clock.now()).id == "pro"
