"""API keys for automation: `mlk_<id>_<secret>`, shown once, stored only as a hash.

`api_keys/<id>` holds the owner, a name, the non-secret prefix (`mlk_<id>`), the SHA-256 of the whole
key, scopes, the deployments it may call (none listed: all of the owner's), the expiry, when it was
last used and when it was revoked. The secret is 256 random bits, so a fast hash is enough: no
dictionary or brute force reaches it, and a leaked collection lets no one call anything.

Verification reads the document by the id in the key and compares hashes in constant time; a key
that does not match is "not valid" whatever the reason (unknown id, wrong secret, malformed), while
one that matches but was revoked or has expired says so (its holder proved they have it). Revocation
takes effect on the next request: nothing caches a key. `last_used_at` is written at most once a
minute per key and process, so a busy key never makes its document hot."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import threading
import time
from datetime import datetime, timedelta
from typing import Any

from mllab.platform import clients, clock, jsonvalues
from mllab.platform.problems import Problem
from mllab.platform.queries import Query

COLLECTION = "api_keys"
QUERIES: tuple[Query, ...] = (Query(COLLECTION, ("uid",)),)  # a user's keys (sorted here, not by Firestore)
KEY_PREFIX = "mlk_"
SCOPES = ("predict",)
MAX_KEYS = 20  # live keys per user
MAX_NAME = 100  # characters of a key's name
MAX_DEPLOYMENT_IDS = 50  # deployments one key may be restricted to
MAX_EXPIRY_DAYS = 3650
LAST_USED_EVERY_S = 60.0
_ID_CHARS = "abcdefghijklmnopqrstuvwxyz0123456789"
_FORMAT = re.compile(r"mlk_([a-z0-9]{16})_([A-Za-z0-9_-]{43})", re.ASCII)
NOT_VALID = "This API key is not valid. Send `Authorization: Bearer mlk_...` with a key from the lab's API keys panel."

_last_used: dict[str, float] = {}  # key id -> monotonic time of the last write from this process
_last_used_lock = threading.Lock()


def _db() -> Any:
    return clients.firestore()


def digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def new_key() -> tuple[str, str]:
    """(key id, the full key)."""
    key_id = "".join(secrets.choice(_ID_CHARS) for _ in range(16))
    return key_id, f"{KEY_PREFIX}{key_id}_{secrets.token_urlsafe(32)}"


def parse(raw: str) -> str | None:
    """The key id of a well-formed key, else None."""
    m = _FORMAT.fullmatch(raw)
    return m.group(1) if m else None


def out(doc: dict[str, Any], key_id: str) -> dict[str, Any]:
    """A key as GET /api-keys shows it: never the key or its hash."""

    def iso(v: Any) -> str | None:
        return clock.rfc3339(v) if isinstance(v, datetime) else None

    return {
        "id": key_id,
        "name": doc.get("name", ""),
        "prefix": doc.get("prefix", ""),
        "scopes": list(doc.get("scopes") or []),
        "deployment_ids": doc.get("deployment_ids"),
        "created_at": iso(doc.get("created_at")),
        "last_used_at": iso(doc.get("last_used_at")),
        "expires_at": iso(doc.get("expires_at")),
    }


def create(
    uid: str,
    name: str,
    scopes: list[str],
    deployment_ids: list[str] | None = None,
    expires_in_days: int | None = None,
) -> dict[str, Any]:
    """A new key: its listing plus `key`, the only time the key is ever returned."""
    errors = _field_errors(name, scopes, deployment_ids, expires_in_days)
    if errors:
        raise Problem(422, errors[0]["message"], errors=errors)
    live = [d for d in _owned_docs(uid) if not d.to_dict().get("revoked_at")]
    if len(live) >= MAX_KEYS:
        raise Problem(409, f"You have {MAX_KEYS} API keys, the most one account may hold: revoke one first.")
    key_id, key = new_key()
    now = clock.now()
    doc = {
        "uid": uid,
        "name": name.strip(),
        "prefix": f"{KEY_PREFIX}{key_id}",
        "hash": digest(key),
        "scopes": sorted(set(scopes)),
        "deployment_ids": sorted(set(deployment_ids)) if deployment_ids is not None else None,
        "created_at": now,
        "expires_at": now + timedelta(days=expires_in_days) if expires_in_days else None,
        "last_used_at": None,
        "revoked_at": None,
    }
    _db().collection(COLLECTION).document(key_id).create(doc, timeout=clients.deadline())
    return {**out(doc, key_id), "key": key}


def _field_errors(
    name: str, scopes: list[str], deployment_ids: list[str] | None, expires_in_days: int | None
) -> list[dict[str, str]]:
    errors = []
    if not isinstance(name, str) or not 1 <= len(name.strip()) <= MAX_NAME:
        errors.append({"field": "name", "message": f"Name the key (1 to {MAX_NAME} characters)."})
    if not scopes or any(s not in SCOPES for s in scopes):
        errors.append({"field": "scopes", "message": f"Choose scopes among: {', '.join(SCOPES)}."})
    if deployment_ids is not None and (
        len(deployment_ids) > MAX_DEPLOYMENT_IDS
        or not all(isinstance(d, str) and 0 < len(d) <= 64 for d in deployment_ids)
    ):
        errors.append({"field": "deployment_ids", "message": f"List at most {MAX_DEPLOYMENT_IDS} deployment ids."})
    if expires_in_days is not None and not (type(expires_in_days) is int and 1 <= expires_in_days <= MAX_EXPIRY_DAYS):
        errors.append({"field": "expires_in_days", "message": f"Expire the key in 1 to {MAX_EXPIRY_DAYS} days."})
    return errors


def _owned_docs(uid: str) -> list[Any]:
    from google.cloud.firestore_v1.base_query import FieldFilter

    query = _db().collection(COLLECTION).where(filter=FieldFilter("uid", "==", uid))
    return list(query.stream(timeout=clients.deadline()))


def list_keys(uid: str) -> list[dict[str, Any]]:
    """The user's live keys, newest first (revoked ones are gone from the list)."""
    docs = [(d.id, d.to_dict()) for d in _owned_docs(uid)]
    live = [(i, d) for i, d in docs if not d.get("revoked_at")]
    live.sort(key=lambda p: p[1].get("created_at") or clock.now(), reverse=True)
    return [out(d, i) for i, d in live]


def export_keys(uid: str) -> list[dict[str, Any]]:
    """Every key of the user, revoked ones too, oldest first, for the account export: the listing's
    fields and when it was revoked; never the key or its hash."""
    docs = sorted(((d.id, d.to_dict()) for d in _owned_docs(uid)), key=lambda p: p[1].get("created_at") or clock.now())
    return [{**out(d, i), "revoked_at": jsonvalues.jsonable(d.get("revoked_at"))} for i, d in docs]


def revoke(uid: str, key_id: str) -> None:
    """Revokes one of the user's keys at once; another user's (or an unknown) id answers 404."""
    from google.cloud import firestore

    ref = _db().collection(COLLECTION).document(key_id)

    @firestore.transactional
    def run(tx: Any) -> None:
        snap = ref.get(transaction=tx)
        doc = snap.to_dict() if snap.exists else None
        if not doc or doc.get("uid") != uid or doc.get("revoked_at"):
            raise Problem(404, "No such API key.")
        tx.update(ref, {"revoked_at": clock.now()})

    run(_db().transaction())


def revoke_all(uid: str) -> int:
    """Revokes every key of a user (the account is being deleted); returns how many were live."""
    now = clock.now()
    live = [d for d in _owned_docs(uid) if not d.to_dict().get("revoked_at")]
    batch = _db().batch()
    for d in live:
        batch.update(d.reference, {"revoked_at": now})
    if live:
        batch.commit(timeout=clients.deadline())
    return len(live)


def authenticate(raw: str, *, scope: str) -> dict[str, Any]:
    """The key document for a presented key (its `id` included), or 401/403 Problem. The caller
    checks `deployment_ids` and the owner against what is being called."""
    key_id = parse(raw)
    if key_id is None:
        raise Problem(401, NOT_VALID, headers={"WWW-Authenticate": 'Bearer error="invalid_token"'})
    return check(raw, key_id, lookup(key_id), scope=scope)


def lookup(key_id: str) -> dict[str, Any] | None:
    snap = _db().collection(COLLECTION).document(key_id).get(timeout=clients.deadline())
    return snap.to_dict() if snap.exists else None


def check(raw: str, key_id: str, doc: dict[str, Any] | None, *, scope: str) -> dict[str, Any]:
    """`doc` (read by the caller, perhaps in a batch) judged against the presented key."""
    invalid = {"WWW-Authenticate": 'Bearer error="invalid_token"'}
    # Compared in constant time, and against a dummy when the id is unknown, so the time taken
    # never tells an unknown id from a wrong secret.
    stored = str((doc or {}).get("hash") or "0" * 64)
    if not hmac.compare_digest(stored.encode(), digest(raw).encode()) or doc is None:
        raise Problem(401, NOT_VALID, headers=invalid)
    if doc.get("revoked_at"):
        raise Problem(401, "This API key was revoked. Create a new one in the lab.", headers=invalid)
    expires = doc.get("expires_at")
    if isinstance(expires, datetime) and clock.now() >= expires:
        raise Problem(401, f"This API key expired on {clock.rfc3339(expires)}. Create a new one.", headers=invalid)
    if scope not in (doc.get("scopes") or []):
        raise Problem(403, f"This API key does not have the {scope} scope.", slug="insufficient-scope")
    return {**doc, "id": key_id}


def allows(doc: dict[str, Any], deployment_id: str) -> bool:
    listed = doc.get("deployment_ids")
    return listed is None or deployment_id in listed


def touch(key_id: str, last_used_at: Any = None) -> None:
    """Records a use, at most once a minute per key and process (never a hot document), and not when
    `last_used_at` (the key's document as the caller just read it) was written within the minute by
    any process: a new instance of a busy key then skips the write its first request would make."""
    now = time.monotonic()
    age = (clock.now() - last_used_at).total_seconds() if isinstance(last_used_at, datetime) else None
    with _last_used_lock:
        if now - _last_used.get(key_id, -LAST_USED_EVERY_S) < LAST_USED_EVERY_S:
            return
        if len(_last_used) >= 10_000:
            _last_used.clear()
        if age is not None and 0 <= age < LAST_USED_EVERY_S:
            _last_used[key_id] = now - age  # due again a minute after that write, as if this process made it
            return
        _last_used[key_id] = now
    _db().collection(COLLECTION).document(key_id).update({"last_used_at": clock.now()}, timeout=clients.deadline())


def reset() -> None:
    """Forgets which uses this process recorded (tests: a new instance)."""
    with _last_used_lock:
        _last_used.clear()
