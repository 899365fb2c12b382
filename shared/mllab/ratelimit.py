"""Failure counters for brute-force protection, in Firestore (instances scale out, so memory is
useless). Counters per fixed window keyed by `<kind>:<sha256(subject)>:<window start>`; only failures
count, with `Increment`, so a hot counter never contends. The budget is checked against a sliding
estimate (this window plus the previous one weighted by how much of it still overlaps), so a guesser
cannot spend two budgets across a window boundary. Over budget answers 429 with Retry-After."""

from __future__ import annotations

import hashlib
import math
from datetime import timedelta

from mllab import audit, clients, clock, config
from mllab.problems import Problem

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


def check(kind: str, subject: str, *, ip: str | None = None) -> None:
    """Raise 429 when `subject` used its failure budget of `kind` in the current window."""
    if not subject:
        return
    window = config.RATE_LIMITS.window_s
    doc_id, start = _doc_id(kind, subject)
    prev_id, _ = _doc_id(kind, subject, start - window)
    db = clients.firestore()
    counts = {snap.id: (snap.to_dict() or {}).get("failures", 0)
              for snap in db.get_all([db.collection(COLLECTION).document(doc_id),
                                      db.collection(COLLECTION).document(prev_id)], **clients.opts())
              if snap.exists}
    previous, current = counts.get(prev_id, 0), counts.get(doc_id, 0)
    elapsed = clock.now().timestamp() - start
    limit = _limit(kind)
    if estimate(previous, current, elapsed, window) >= limit:
        retry = retry_after(previous, current, elapsed, window, limit)
        audit.record("ratelimit.refused", actor=None, target=kind, outcome="429", ip=ip)
        raise Problem(429, f"Too many failed attempts. Try again in {_human(retry)}.",
                      headers={"Retry-After": str(retry)})


def fail(kind: str, subject: str) -> None:
    """Count one failure."""
    if not subject:
        return
    from google.cloud import firestore

    doc_id, start = _doc_id(kind, subject)
    expires = clock.now().replace(microsecond=0) + timedelta(seconds=2 * config.RATE_LIMITS.window_s)
    clients.firestore().collection(COLLECTION).document(doc_id).set(
        {"kind": kind, "window_start": start, "failures": firestore.Increment(1), "expires_at": expires},
        merge=True, **clients.opts())


def _human(seconds: int) -> str:
    if seconds < 90:
        return f"{seconds} seconds"
    return f"{(seconds + 59) // 60} minutes"
