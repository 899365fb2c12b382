"""Predictions counted per user, per month and per deployment, with no hot document.

Each process adds what it served to an in-memory buffer and writes it out at most once a second,
to one of SHARDS shard documents picked at process start:

    prediction_usage/<uid>_<YYYY-MM>_<k>   {uid, month, shard, count, by_deployment: {<id>: n}, updated_at}

so a shard takes about one write a second (fewer with fewer processes) whatever a user's rate, and
a month's usage is the sum of SHARDS documents read in one batch. A process re-reads that sum when
it is older than REFRESH_S and adds its own unwritten counts.

Error bound, stated: a quota check sees every prediction this process served, and every one other
processes served except those of their last FLUSH_S + REFRESH_S seconds (not yet written, or written
after the sum was read). At a rate R
predictions a second against a quota Q, the overshoot past Q is at most R x (FLUSH_S + REFRESH_S):
200/s x 3 s = 600, 0.6% of a 100,000 quota (tests/stack/test_serving_usage.py measures it). A
process that dies without its exit handler loses at most its last second of counts (an undercount,
in the user's favour). A write that fails (Firestore unavailable) fails no prediction: its counts
stay buffered, still seen by this process's quota checks, for the next write, and the failure is
logged as FLUSH_FAILED, which an alert watches."""

from __future__ import annotations

import atexit
import contextlib
import random
import threading
import time
from collections import defaultdict
from datetime import UTC, datetime
from typing import Any

from mllab.platform import clients, clock, log
from mllab.platform.queries import Query

FLUSH_FAILED = "metering flush failed"  # the log line an alert policy matches (infra/monitoring/)
COLLECTION = "prediction_usage"  # (`usage` is the storage counters of mllab.files.recorder)
QUERIES: tuple[Query, ...] = (Query(COLLECTION, ("uid",)),)  # a user's shards, to delete them
SHARDS = 16
FLUSH_S = 1.0
REFRESH_S = 2.0

_shard = random.randrange(SHARDS)  # this process's shard
_lock = threading.Lock()
_pending: dict[tuple[str, str], dict[str, int]] = defaultdict(lambda: defaultdict(int))  # (uid, month) -> dep -> n
_last_flush = -FLUSH_S
_totals: dict[tuple[str, str], tuple[float, int]] = {}  # (uid, month) -> (read at, summed count)


def month_of(now: datetime | None = None) -> str:
    return (now or clock.now()).astimezone(UTC).strftime("%Y-%m")


def next_month_start(now: datetime | None = None) -> datetime:
    now = (now or clock.now()).astimezone(UTC)
    return datetime(now.year + now.month // 12, now.month % 12 + 1, 1, tzinfo=UTC)


def seconds_to_next_month(now: datetime | None = None) -> int:
    now = now or clock.now()
    return max(1, int((next_month_start(now) - now).total_seconds()) + 1)


def _shard_ref(uid: str, month: str, shard: int) -> Any:
    return clients.firestore().collection(COLLECTION).document(f"{uid}_{month}_{shard}")


def shard_refs(uid: str, month: str) -> list[Any]:
    """The month's shard documents of a user (a caller may read them with others in one round trip)."""
    return [_shard_ref(uid, month, k) for k in range(SHARDS)]


def record(uid: str, deployment_id: str, n: int) -> None:
    """Counts `n` predictions; writes this process's buffer when the last write is a second old."""
    month = month_of()
    with _lock:
        _pending[(uid, month)][deployment_id] += n
        due = time.monotonic() - _last_flush >= FLUSH_S
    if due:
        try:
            flush()
        except Exception as exc:  # the predictions were served: answer them; the counts wait for the next flush
            log.warning(FLUSH_FAILED, error_type=type(exc).__name__, unwritten=_unwritten())


def flush() -> None:
    """Writes every buffered count to this process's shard (one batched write)."""
    global _last_flush
    with _lock:
        if not _pending:
            return
        taken = {k: dict(v) for k, v in _pending.items()}
        _pending.clear()
        _last_flush = time.monotonic()
    # Imported only with something to write: the exit handler of a process that served nothing (a
    # function that only imported this module) would otherwise load the client on its way out.
    from google.cloud import firestore

    db = clients.firestore()
    batch = db.batch()
    now = clock.now()
    for (uid, month), per_deployment in taken.items():
        batch.set(
            _shard_ref(uid, month, _shard),
            {
                "uid": uid,
                "month": month,
                "shard": _shard,
                "count": firestore.Increment(sum(per_deployment.values())),
                "by_deployment": {d: firestore.Increment(n) for d, n in per_deployment.items()},
                "updated_at": now,
            },
            merge=True,
        )
    started = time.monotonic()
    try:
        batch.commit(timeout=clients.deadline())
    except Exception:
        with _lock:  # put the counts back: the next flush tries again
            for key, per_deployment in taken.items():
                for d, n in per_deployment.items():
                    _pending[key][d] += n
        raise
    with _lock:  # a sum read before this write lacks what it wrote: add it, so this process never overshoots
        for key, per_deployment in taken.items():
            cached = _totals.get(key)
            if cached is not None and cached[0] < started:
                _totals[key] = (cached[0], cached[1] + sum(per_deployment.values()))


def _unwritten() -> int:
    with _lock:
        return sum(sum(v.values()) for v in _pending.values())


def _flush_at_exit() -> None:
    try:
        flush()
    except Exception as exc:  # exiting anyway: these counts are lost (an undercount), and said so
        with contextlib.suppress(Exception):
            log.error(FLUSH_FAILED + " at exit", error_type=type(exc).__name__, lost=_unwritten())


atexit.register(_flush_at_exit)  # Cloud Run stops an instance with SIGTERM, then the interpreter exits


def _read(uid: str, month: str) -> tuple[int, dict[str, int]]:
    return summed(clients.firestore().get_all(shard_refs(uid, month), timeout=clients.deadline()))


def summed(snaps: Any) -> tuple[int, dict[str, int]]:
    """(count, count per deployment) of shard snapshots (missing shards count nothing)."""
    total, per_deployment = 0, defaultdict[str, int](int)
    for snap in snaps:
        if not snap.exists:
            continue
        doc = snap.to_dict() or {}
        total += int(doc.get("count") or 0)
        for d, n in (doc.get("by_deployment") or {}).items():
            per_deployment[d] += int(n or 0)
    return total, dict(per_deployment)


def used(uid: str) -> int:
    """This month's predictions as a quota check sees them (see the error bound above)."""
    month = month_of()
    key = (uid, month)
    now = time.monotonic()
    cached = _totals.get(key)
    if cached is None or now - cached[0] >= REFRESH_S:
        cached = (now, _read(uid, month)[0])
        _totals[key] = cached
        if len(_totals) > 10_000:
            _totals.clear()
    with _lock:
        mine = sum(_pending.get(key, {}).values())
    return cached[1] + mine


def stale_refs(uid: str) -> tuple[str, list[Any]]:
    """(this month, its shard documents when this process's sum of them is missing or REFRESH_S old,
    else []): a caller reading other documents too reads them in the same round trip, then hands them
    to `absorb`."""
    month = month_of()
    cached = _totals.get((uid, month))
    fresh = cached is not None and time.monotonic() - cached[0] < REFRESH_S
    return month, [] if fresh else shard_refs(uid, month)


def absorb(uid: str, month: str, read_at: float, snaps: list[Any]) -> None:
    """Takes the shard documents of `stale_refs`, read from monotonic time `read_at` on, as the sum
    `used` would have read itself."""
    if len(_totals) > 10_000:
        _totals.clear()
    _totals[(uid, month)] = (read_at, summed(snaps)[0])


def usage(uid: str, month: str | None = None) -> dict[str, Any]:
    """A month's usage, read now: {month, predictions, by_deployment} (/me reads shard_refs itself, with
    its other documents in one round trip)."""
    month = month or month_of()
    total, per_deployment = _read(uid, month)
    return {"month": month, "predictions": total, "by_deployment": per_deployment}


def _owned(uid: str) -> list[Any]:
    from google.cloud.firestore_v1.base_query import FieldFilter

    query = clients.firestore().collection(COLLECTION).where(filter=FieldFilter("uid", "==", uid))
    return list(query.stream(timeout=clients.deadline()))


def export_usage(uid: str) -> list[dict[str, Any]]:
    """Every month the user predicted, oldest first, for the account export: the shards summed, in
    total and per deployment ({month, predictions, by_deployment})."""
    months: dict[str, dict[str, Any]] = {}
    for snap in _owned(uid):
        doc = snap.to_dict() or {}
        month = months.setdefault(str(doc.get("month")), {"predictions": 0, "by_deployment": defaultdict(int)})
        month["predictions"] += int(doc.get("count") or 0)
        for d, n in (doc.get("by_deployment") or {}).items():
            month["by_deployment"][d] += int(n or 0)
    return [
        {"month": m, "predictions": v["predictions"], "by_deployment": dict(sorted(v["by_deployment"].items()))}
        for m, v in sorted(months.items())
    ]


def delete_user(uid: str) -> int:
    """Deletes a user's usage documents (account deletion); returns how many."""
    return clients.delete_refs([s.reference for s in _owned(uid)])


def reset() -> None:
    """Forgets buffered counts and cached sums (tests)."""
    global _last_flush
    with _lock:
        _pending.clear()
        _totals.clear()
        _last_flush = -FLUSH_S
