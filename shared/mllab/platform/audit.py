"""The audit log: who did what to what, from where, and how it ended. Never a secret."""

from __future__ import annotations

from typing import Any

from mllab.platform import clients, clock, log
from mllab.platform.queries import Query

COLLECTION = "audit_log"
QUERIES: tuple[Query, ...] = (Query(COLLECTION, ("actor",)),)  # for infra's index file


def record(
    action: str,
    *,
    actor: str | None,
    target: str | None = None,
    outcome: str = "ok",
    ip: str | None = None,
    key: str | None = None,
    **details: Any,
) -> None:
    """Write one entry; the request id comes from the log context. An audit write failure is logged,
    never allowed to turn a user's successful request into an error. With `key` (what the entry is
    about, e.g. one stored object's generation) the entry is written once: a second delivery of the
    same event, or one racing it, finds it written and adds none."""
    ctx = log.context()
    entry = {
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
    from google.api_core.exceptions import AlreadyExists

    try:
        entries = clients.firestore().collection(COLLECTION)
        if key is None:
            entries.add(entry)
        else:
            entries.document(key).create(entry)
    except AlreadyExists:
        log.info("audit entry already written", action=action, target=target)
        return
    except Exception as exc:  # noqa: BLE001 - see docstring
        log.exception("audit write failed", exc, action=action)
    log.info("audit", action=action, actor=actor, target=target, outcome=outcome)


def for_actor(uid: str, limit: int = 500) -> list[dict[str, Any]]:
    from google.cloud.firestore_v1.base_query import FieldFilter

    query = clients.firestore().collection(COLLECTION).where(filter=FieldFilter("actor", "==", uid)).limit(limit)
    return [snap.to_dict() for snap in query.stream(**clients.opts())]
