"""The audit log: who did what to what, from where, and how it ended. Never a secret."""

from __future__ import annotations

from typing import Any

from mllab.platform import clients, clock, log
from mllab.platform.queries import Query

COLLECTION = "audit_log"
QUERIES: tuple[Query, ...] = (Query(COLLECTION, ("actor",)),)  # for infra's index file


def entry(
    action: str,
    *,
    actor: str | None,
    target: str | None = None,
    outcome: str = "ok",
    ip: str | None = None,
    **details: Any,
) -> dict[str, Any]:
    """One entry as `record` writes it; the request id comes from the log context."""
    ctx = log.context()
    return {
        "action": action,
        "actor": actor,
        "target": target,
        "outcome": outcome,
        "ip": ip,
        "request_id": ctx.get("request_id"),
        "function": ctx.get("function"),
        "at": clock.now(),
        "details": log.redact(details) if details else {},
    }


def keyed_ref(key: str) -> Any:
    """The entry about one thing (e.g. one stored object's generation), for a caller that writes it in its
    own transaction, once: a second delivery of the same event finds it there and writes none."""
    return clients.firestore().collection(COLLECTION).document(key)


def record(
    action: str,
    *,
    actor: str | None,
    target: str | None = None,
    outcome: str = "ok",
    ip: str | None = None,
    **details: Any,
) -> None:
    """Write one entry. An audit write failure is logged, never allowed to turn a user's successful
    request into an error."""
    written = entry(action, actor=actor, target=target, outcome=outcome, ip=ip, **details)
    try:
        clients.firestore().collection(COLLECTION).add(written)
    except Exception as exc:  # noqa: BLE001 - see docstring
        log.exception("audit write failed", exc, action=action)
    announce(written)


def announce(written: dict[str, Any]) -> None:
    """The log line of an entry written (by `record`, or in a caller's own transaction: `keyed_ref`)."""
    log.info("audit", **{k: written.get(k) for k in ("action", "actor", "target", "outcome")})


def for_actor(uid: str, limit: int = 500) -> list[dict[str, Any]]:
    from google.cloud.firestore_v1.base_query import FieldFilter

    query = clients.firestore().collection(COLLECTION).where(filter=FieldFilter("actor", "==", uid)).limit(limit)
    return [snap.to_dict() for snap in query.stream(**clients.opts())]
