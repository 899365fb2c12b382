"""Exactly-once processing of at-least-once deliveries (PayPal webhooks).

A key is claimed by creating its marker (`processing`, with an expiry), the work is done, then the
marker becomes `done` with its outcome. A delivery of a `done` key does nothing; a delivery while
another is still processing is told to come back later; a marker whose holder failed (`failed`) or
died (expired) is taken over, so a retry after a failure still does the work.

No read-write transaction: under contention the emulator aborts them. The claim
is a create (one wins), a takeover an update guarded by the marker's update time.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from mllab.platform import clients, clock

PROCESSING, DONE, FAILED = "processing", "done", "failed"


class InProgress(Exception):
    """Another delivery of this key holds it right now."""


@dataclass(frozen=True)
class Claim:
    collection: str
    key: str
    attempt: int

    def done(self, outcome: str, **fields: Any) -> None:
        now = clock.now()
        _ref(self.collection, self.key).update(
            {"state": DONE, "outcome": outcome, "done_at": now, "expires_at": None, "updated_at": now, **fields}
        )

    def failed(self, error: str) -> None:
        """Best effort: if this write fails too, the processing marker expires and a retry takes over."""
        now = clock.now()
        with contextlib.suppress(Exception):  # see the docstring
            _ref(self.collection, self.key).update({"state": FAILED, "error": error[:200], "updated_at": now})


def _ref(collection: str, key: str) -> Any:
    return clients.firestore().collection(collection).document(key)


def claim(collection: str, key: str, *, ttl_s: int, fields: dict[str, Any] | None = None) -> Claim | None:
    """Claim `key`: a Claim to finish, None when it is already done, InProgress when it is held."""
    from google.api_core.exceptions import AlreadyExists, Conflict, FailedPrecondition, NotFound

    ref = _ref(collection, key)
    now = clock.now()
    marker = {"state": PROCESSING, "expires_at": now + timedelta(seconds=ttl_s), "updated_at": now}
    try:
        ref.create({**(fields or {}), **marker, "attempts": 1, "created_at": now})
        return Claim(collection, key, 1)
    except (AlreadyExists, Conflict):
        pass
    snap = ref.get()
    if not snap.exists:
        raise InProgress(key)  # deleted meanwhile: let the sender retry
    doc = snap.to_dict()
    if doc.get("state") == DONE:
        return None
    expires = doc.get("expires_at")
    if doc.get("state") == PROCESSING and expires is not None and expires > now:
        raise InProgress(key)
    attempt = int(doc.get("attempts") or 0) + 1
    db = clients.firestore()
    try:
        ref.update({**marker, "attempts": attempt}, option=db.write_option(last_update_time=snap.update_time))
    except (FailedPrecondition, NotFound, Conflict):
        raise InProgress(key) from None  # another delivery took it over first
    return Claim(collection, key, attempt)
