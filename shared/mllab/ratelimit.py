"""Failure counters for brute-force protection, in Firestore (instances scale out, so memory is
useless). Fixed windows keyed by `<kind>:<sha256(subject)>:<window start>`; only failures count, with
`Increment`, so a hot counter never contends. Over budget answers 429 with Retry-After."""

from __future__ import annotations

import hashlib
from datetime import timedelta

from mllab import audit, clients, clock, config
from mllab.problems import Problem

COLLECTION = "rate_limits"


def _doc_id(kind: str, subject: str) -> tuple[str, int]:
    window = config.RATE_LIMITS.window_s
    start = int(clock.now().timestamp()) // window * window
    digest = hashlib.sha256(f"{kind}|{subject}".encode()).hexdigest()[:40]
    return f"{kind}_{digest}_{start}", start


def _limit(kind: str) -> int:
    return getattr(config.RATE_LIMITS, kind)


def check(kind: str, subject: str, *, ip: str | None = None) -> None:
    """Raise 429 when `subject` used its failure budget of `kind` in the current window."""
    if not subject:
        return
    doc_id, start = _doc_id(kind, subject)
    snap = clients.firestore().collection(COLLECTION).document(doc_id).get(**clients.opts())
    count = (snap.to_dict() or {}).get("failures", 0) if snap.exists else 0
    if count >= _limit(kind):
        retry = max(1, start + config.RATE_LIMITS.window_s - int(clock.now().timestamp()))
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
