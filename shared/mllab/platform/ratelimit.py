"""Budgets against brute force and floods, in Firestore (instances scale out, so memory is
useless). Counters per fixed window keyed by `<kind>:<sha256(subject)>:<window start>`, counted with
`Increment`, so a hot counter never contends. Most budgets count failures only; a few (sign-ups per
address, mails per address) count every use. The budget is checked against a sliding
estimate (this window plus the previous one weighted by how much of it still overlaps), so a guesser
cannot spend two budgets across a window boundary. Over budget answers 429 with Retry-After."""

from __future__ import annotations

import hashlib
import math
from datetime import timedelta

from mllab.platform import audit, clients, clock, config
from mllab.platform.problems import Problem

COLLECTION = "rate_limits"


def _doc_id(kind: str, subject: str, start: int | None = None) -> tuple[str, int]:
    window = config.RATE_LIMITS.window_s
    if start is None:
        start = int(clock.now().timestamp()) // window * window
    digest = hashlib.sha256(f"{kind}|{subject}".encode()).hexdigest()[:40]
    return f"{kind}_{digest}_{start}", start


def estimate(previous: int, current: int, elapsed: float, window: int) -> float:
    """Failures in the last `window` seconds, assuming the previous window's were spread evenly."""
    return previous * (1 - elapsed / window) + current


def retry_after(previous: int, current: int, elapsed: float, window: int, limit: int) -> int:
    """Seconds until the estimate drops below `limit` (the current window's count only ages out
    into the next one, where it then decays in turn)."""
    if current >= limit:
        # In the next window this count becomes `previous`: below limit once current*(1-t/w) < limit.
        return max(1, math.ceil(window - elapsed + window * (1 - limit / current)) + 1)
    if not previous:
        return 1
    needed = window * (1 - (limit - current) / previous)  # elapsed at which the estimate < limit
    return max(1, math.ceil(needed - elapsed) + 1)


def _limit(kind: str) -> int:
    return getattr(config.RATE_LIMITS, kind)


def estimates(*budgets: tuple[str, str]) -> list[tuple[float, int]]:
    """For each (kind, subject): (the sliding estimate, seconds until it is back under the limit, 0
    when it is under already). All budgets in one batched read."""
    window = config.RATE_LIMITS.window_s
    ids = []  # per budget: (this window's doc id, its start, the previous window's doc id)
    for kind, subject in budgets:
        cur_id, start = _doc_id(kind, subject)
        ids.append((cur_id, start, _doc_id(kind, subject, start - window)[0]))
    db = clients.firestore()
    refs = [db.collection(COLLECTION).document(doc_id) for cur_id, _, prev_id in ids for doc_id in (cur_id, prev_id)]
    counts = {snap.id: (snap.to_dict() or {}).get("failures", 0) for snap in db.get_all(refs) if snap.exists}
    out = []
    for (kind, subject), (cur_id, start, prev_id) in zip(budgets, ids, strict=True):
        if not subject:
            out.append((0.0, 0))
            continue
        previous, current = counts.get(prev_id, 0), counts.get(cur_id, 0)
        elapsed = clock.now().timestamp() - start
        value = estimate(previous, current, elapsed, window)
        limit = _limit(kind)
        out.append((value, retry_after(previous, current, elapsed, window, limit) if value >= limit else 0))
    return out


def over(kind: str, subject: str) -> int:
    """Seconds until `subject` is back under its budget of `kind`; 0 when it is under now."""
    return estimates((kind, subject))[0][1]


def refuse(kind: str, retry: int, *, ip: str | None = None, detail: str | None = None) -> Problem:
    audit.record("ratelimit.refused", actor=None, target=kind, outcome="429", ip=ip)
    return Problem(
        429, detail or f"Too many failed attempts. Try again in {human(retry)}.", headers={"Retry-After": str(retry)}
    )


def check(kind: str, subject: str, *, ip: str | None = None) -> None:
    """Raise 429 when `subject` used its budget of `kind` in the current window."""
    retry = over(kind, subject) if subject else 0
    if retry:
        raise refuse(kind, retry, ip=ip)


def fail(kind: str, subject: str) -> None:
    """Count one failure (or one use, for budgets that count every use)."""
    count((kind, subject))


def count(*budgets: tuple[str, str]) -> None:
    """Count one use of each (kind, subject), in one batched write."""
    from google.cloud import firestore

    db = clients.firestore()
    batch = db.batch()
    expires = clock.now().replace(microsecond=0) + timedelta(seconds=2 * config.RATE_LIMITS.window_s)
    wrote = False
    for kind, subject in budgets:
        if not subject:
            continue
        doc_id, start = _doc_id(kind, subject)
        batch.set(
            db.collection(COLLECTION).document(doc_id),
            {"kind": kind, "window_start": start, "failures": firestore.Increment(1), "expires_at": expires},
            merge=True,
        )
        wrote = True
    if wrote:
        batch.commit()


def progressive_delay(failures: float) -> float:
    """Seconds to hold a sign-in to an account with this many recent failures: none under the
    budget, then doubling per failure up to a small cap (OWASP's answer to lockout as a weapon)."""
    excess = failures - config.RATE_LIMITS.login_account
    if excess < 0:
        return 0.0
    return min(config.LOGIN_DELAY_MAX_S, config.LOGIN_DELAY_BASE_S * 2 ** min(int(excess), 16))


def human(seconds: int) -> str:
    if seconds < 90:
        return f"{seconds} seconds"
    return f"{(seconds + 59) // 60} minutes"
