"""Promo codes: `trial` (N days of PRO) or `comp` (PRO for N days, or for good), with a start, an
expiry, a total cap, a per-user cap, a new-users-only flag and an on/off switch.

Redemption is one batch guarded by preconditions, retried with jitter (a transaction would abort
under contention): the code's counter is updated only if the code document is unchanged since it
was read, the redemption `<CODE>_<uid>_<n>` is created only if absent (that is the per-user cap),
and the entitlement is written only if unchanged. Under contention exactly as many racers win as
there are uses left; the others see the code used up, or, after too many collisions, a 409 to try
again. Never a 500.
"""

from __future__ import annotations

import random
import re
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from mllab.billing import entitlements, schemas
from mllab.platform import audit, clients, clock, log, ratelimit
from mllab.platform.problems import Problem
from mllab.platform.queries import Query

CODES = "promo_codes"
REDEMPTIONS = "promo_redemptions"
QUERIES: tuple[Query, ...] = (Query(REDEMPTIONS, ("uid",)),)  # for infra's index file
KINDS = ("trial", "comp")
CODE_PATTERN = re.compile(r"[A-Z0-9][A-Z0-9-]{2,39}")
MAX_PER_USER = 50
ATTEMPTS = 30
# Refusals that look like guessing count against the user's and the address's failure budgets. A
# code that is used up, or already used by this user, is not a guess: a class behind one NAT racing
# for the last uses must get 409s, never 429s (legitimate calls are never throttled).
GUESSES = {"promo-unknown", "promo-disabled", "promo-expired", "promo-not-started"}


def normalize(code: str) -> str:
    return code.strip().upper()


def _db() -> Any:
    return clients.firestore()


def _stream(query: Any) -> list[Any]:
    # Given no retry, Query.stream() looks for one on the raw gRPC stub to decide whether to resume a
    # stream broken mid-way, and raises AttributeError in place of Firestore's error: pass ours.
    return list(query.stream(**clients.opts()))


def _code_ref(code: str) -> Any:
    return _db().collection(CODES).document(code)


def redemption_id(code: str, uid: str, n: int) -> str:
    return f"{code}_{uid}_{n}"


# --- operator side --------------------------------------------------------------------------------


@dataclass(frozen=True)
class NewCode:
    code: str
    kind: str
    uses: int
    days: int | None = None  # trial: required; comp: None means for good
    per_user: int = 1
    starts_at: datetime | None = None
    expires_at: datetime | None = None
    new_users_only: bool = False
    created_by: str = "operator"

    def check(self) -> None:
        """ValueError with a message an operator can act on."""
        if not CODE_PATTERN.fullmatch(self.code):
            raise ValueError("a code is 3-40 characters: letters A-Z, digits and '-', starting with a letter or digit")
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {', '.join(KINDS)}")
        if self.kind == "trial" and not self.days:
            raise ValueError("a trial code needs --days")
        if self.days is not None and not 1 <= self.days <= 3660:
            raise ValueError("--days must be between 1 and 3660")
        if self.uses < 1:
            raise ValueError("--uses must be at least 1")
        if not 1 <= self.per_user <= MAX_PER_USER:
            raise ValueError(f"--per-user must be between 1 and {MAX_PER_USER}")
        if self.starts_at and self.expires_at and self.expires_at <= self.starts_at:
            raise ValueError("--expires must be after --starts")


def create(new: NewCode) -> dict[str, Any]:
    """Create a code; ValueError if invalid or it exists."""
    from google.api_core.exceptions import AlreadyExists, Conflict

    new.check()
    now = clock.now()
    doc = {
        "code": new.code,
        "kind": new.kind,
        "days": new.days,
        "starts_at": new.starts_at,
        "expires_at": new.expires_at,
        "max_redemptions": new.uses,
        "redemptions": 0,
        "per_user_limit": new.per_user,
        "new_users_only": new.new_users_only,
        "active": True,
        "created_by": new.created_by,
        "created_at": now,
        "updated_at": now,
    }
    try:
        _code_ref(new.code).create(doc)
    except (AlreadyExists, Conflict):
        raise ValueError(f"code {new.code} already exists") from None
    audit.record(
        "promo.create", actor=new.created_by, target=f"promo:{new.code}", kind=new.kind, uses=new.uses, days=new.days
    )
    return doc


def all_codes() -> list[dict[str, Any]]:
    return sorted((s.to_dict() for s in _stream(_db().collection(CODES))), key=lambda c: c["created_at"])


def disable(code: str, actor: str = "operator") -> bool:
    """Switch a code off; False if there is no such code."""
    from google.api_core.exceptions import NotFound

    try:
        _code_ref(code).update({"active": False, "updated_at": clock.now()})
    except NotFound:
        return False
    audit.record("promo.disable", actor=actor, target=f"promo:{code}")
    return True


# --- redemption -----------------------------------------------------------------------------------


class _Retry(Exception):
    """A precondition failed: someone else wrote first. Read again."""


def _refuse(status: int, slug: str, detail: str) -> Problem:
    return Problem(status, detail, slug=f"promo-{slug}")


def _day(dt: datetime) -> str:
    return dt.strftime("%Y-%m-%d %H:%M UTC")


def _check_code(code: str, doc: dict[str, Any] | None, now: datetime) -> dict[str, Any]:
    if doc is None:
        raise _refuse(422, "unknown", f"There is no promo code {code}. Check the spelling.")
    if not doc.get("active"):
        raise _refuse(422, "disabled", f"The code {code} is no longer valid.")
    if doc.get("starts_at") and now < doc["starts_at"]:
        raise _refuse(422, "not-started", f"The code {code} can be used from {_day(doc['starts_at'])}.")
    if doc.get("expires_at") and now >= doc["expires_at"]:
        raise _refuse(422, "expired", f"The code {code} expired on {_day(doc['expires_at'])}.")
    if int(doc.get("redemptions", 0)) >= int(doc["max_redemptions"]):
        raise _refuse(409, "used-up", f"The code {code} has been used as many times as it allows.")
    return doc


def _check_user(code: str, doc: dict[str, Any], ent: dict[str, Any] | None, used: int, now: datetime) -> None:
    if used >= int(doc.get("per_user_limit", 1)):
        raise _refuse(
            409,
            "already-used",
            f"You have already used the code {code}" + (f" {used} times, its limit." if used > 1 else "."),
        )
    if doc.get("new_users_only") and ent and (ent.get("ever_pro") or ent.get("paypal")):
        raise _refuse(403, "new-users-only", f"The code {code} is for people new to ML Lab PRO.")
    state = entitlements.status(ent, now)
    if doc["kind"] == "trial" and state in ("active", "past_due"):
        raise _refuse(
            409,
            "already-pro",
            "You already have PRO through your subscription; a trial would add "
            "nothing. Keep the code for someone else.",
        )


def apply(uid: str, raw_code: str, *, ip: str | None = None) -> schemas.PromoApplied:
    """Redeem a code for `uid`; every attempt is audited, every refusal counted against the user and
    the client address."""
    code = normalize(raw_code)
    ratelimit.check("promo_user", uid, ip=ip)
    ratelimit.check("promo_ip", ip or "", ip=ip)
    try:
        if not CODE_PATTERN.fullmatch(code):
            raise _refuse(422, "unknown", "A promo code is 3-40 letters, digits or '-'. Check the spelling.")
        result = _redeem(uid, code)
    except Problem as problem:
        if problem.slug in GUESSES:
            ratelimit.fail("promo_user", uid)
            ratelimit.fail("promo_ip", ip or "")
        audit.record("promo.apply", actor=uid, target=f"promo:{code[:40]}", outcome=problem.slug or "refused", ip=ip)
        raise
    audit.record("promo.apply", actor=uid, target=f"promo:{code}", ip=ip, kind=result.kind, days=result.days)
    log.info("promo redeemed", uid=uid, code=code, kind=result.kind)
    return result


def _redeem(uid: str, code: str) -> schemas.PromoApplied:
    delay = 0.02
    deadline = time.monotonic() + clients.deadline()
    for _ in range(ATTEMPTS):
        try:
            return _attempt(uid, code)
        except _Retry:
            if time.monotonic() > deadline:
                break
            time.sleep(random.uniform(0, delay))
            delay = min(delay * 1.6, 0.5)
    raise Problem(
        409,
        "Many people are redeeming this code right now. Try again in a moment.",
        slug="promo-busy",
        headers={"Retry-After": "1"},
    )


def _attempt(uid: str, code: str) -> schemas.PromoApplied:
    from google.api_core.exceptions import AlreadyExists, Conflict, FailedPrecondition, NotFound

    db = _db()
    now = clock.now()
    code_snap = _code_ref(code).get()
    doc = _check_code(code, code_snap.to_dict() if code_snap.exists else None, now)
    per_user = min(int(doc.get("per_user_limit", 1)), MAX_PER_USER)
    refs = [db.collection(REDEMPTIONS).document(redemption_id(code, uid, n)) for n in range(1, per_user + 1)]
    used = sum(1 for s in db.get_all(refs) if s.exists)
    ent_snap = entitlements.ref(uid).get()
    ent = ent_snap.to_dict() if ent_snap.exists else None
    _check_user(code, doc, ent, used, now)

    days = doc.get("days")
    base = ent or {}
    updated = (
        entitlements.with_trial(base, int(doc["days"]), now)  # a trial code always has its days
        if doc["kind"] == "trial"
        else entitlements.with_comp(base, int(days) if days else None, now)
    )
    updated = entitlements.stamp(uid, updated, now, created=ent is None)
    batch = db.batch()
    batch.update(
        _code_ref(code),
        {"redemptions": int(doc.get("redemptions", 0)) + 1, "updated_at": now},
        option=db.write_option(last_update_time=code_snap.update_time),
    )
    batch.create(
        refs[used],
        {
            "uid": uid,
            "code": code,
            "kind": doc["kind"],
            "days": days,
            "n": used + 1,
            "pro_until": updated["pro_until"],
            "created_at": now,
            "updated_at": now,
        },
    )
    if ent is None:
        batch.create(entitlements.ref(uid), updated)
    else:
        batch.update(entitlements.ref(uid), updated, option=db.write_option(last_update_time=ent_snap.update_time))
    try:
        batch.commit()
    except (FailedPrecondition, AlreadyExists, Conflict, NotFound):
        raise _Retry() from None
    return schemas.PromoApplied(code=code, kind=doc["kind"], days=days, subscription=entitlements.view(updated, now))


def redemptions_of(uid: str) -> list[dict[str, Any]]:
    from google.cloud.firestore_v1.base_query import FieldFilter

    query = _db().collection(REDEMPTIONS).where(filter=FieldFilter("uid", "==", uid))
    return [s.to_dict() for s in _stream(query)]
