"""Users, their identities (password, Google) and one-time email tokens.

Emails are NFKC-normalised and lower-cased before any use as a key. Identity documents are keyed by
sha256 of `password:<email>` or `google:<iss>:<sub>` (document ids never hold a `/` or an email).
One-time tokens (verify, reset) are stored as sha256 of the token, single use, with an expiry.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import unicodedata
import uuid
from datetime import timedelta
from typing import Any

from mllab.platform import clients, clock
from mllab.platform.problems import Problem
from mllab.platform.queries import Query

USERS = "users"
IDENTITIES = "identities"
EMAIL_TOKENS = "email_tokens"
QUERIES: tuple[Query, ...] = (Query(USERS, ("email",)), Query(IDENTITIES, ("uid",)))  # for infra's index file
_EMAIL = re.compile(r"[^@\s]{1,64}@[^@\s]+\.[^@\s]+")


def normalize_email(raw: str) -> str:
    email = unicodedata.normalize("NFKC", raw).strip().lower()
    if len(email) > 254 or not _EMAIL.fullmatch(email) or any(ord(c) < 32 for c in email):
        raise Problem(
            422, "Enter a valid email address.", errors=[{"field": "email", "message": "not an email address"}]
        )
    return email


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def password_identity_id(email: str) -> str:
    return _sha(f"password:{email}")


def google_identity_id(iss: str, sub: str) -> str:
    return _sha(f"google:{iss}:{sub}")


def _db() -> Any:
    return clients.firestore()


def get(uid: str) -> dict[str, Any] | None:
    snap = _db().collection(USERS).document(uid).get()
    return {**snap.to_dict(), "uid": uid} if snap.exists else None


def identity(identity_id: str) -> dict[str, Any] | None:
    snap = _db().collection(IDENTITIES).document(identity_id).get()
    return snap.to_dict() if snap.exists else None


def password_identity(email: str) -> dict[str, Any] | None:
    return identity(password_identity_id(email))


def find_by_email(email: str) -> dict[str, Any] | None:
    """The user with this (normalised) email, whatever its sign-in methods."""
    from google.cloud.firestore_v1.base_query import FieldFilter

    query = _db().collection(USERS).where(filter=FieldFilter("email", "==", email)).limit(1)
    for snap in query.stream(**clients.opts()):
        return {**snap.to_dict(), "uid": snap.id}
    return None


def identities_of(uid: str) -> list[dict[str, Any]]:
    from google.cloud.firestore_v1.base_query import FieldFilter

    query = _db().collection(IDENTITIES).where(filter=FieldFilter("uid", "==", uid))
    return [snap.to_dict() for snap in query.stream(**clients.opts())]


def create_password_user(
    email: str, password_hash: str, *, name: str = "", verified: bool = False, role: str = "user"
) -> str | None:
    """Create user + password identity atomically. None when the email is already registered."""
    from google.api_core.exceptions import AlreadyExists, Conflict

    uid = uuid.uuid4().hex
    now = clock.now()
    db = _db()
    batch = db.batch()
    batch.create(
        db.collection(IDENTITIES).document(password_identity_id(email)),
        {"uid": uid, "kind": "password", "email": email, "hash": password_hash, "created_at": now, "updated_at": now},
    )
    batch.create(db.collection(USERS).document(uid), _new_user(email, name, ["password"], verified, role, now))
    try:
        batch.commit()
    except (AlreadyExists, Conflict):
        return None
    return uid


def _new_user(email: str, name: str, providers: list[str], verified: bool, role: str, now: Any) -> dict[str, Any]:
    return {
        "email": email,
        "name": name or email.split("@")[0],
        "providers": providers,
        "email_verified": verified,
        "role": role,
        "disabled": False,
        "tokens_valid_after": None,
        "deleted_at": None,
        "created_at": now,
        "updated_at": now,
    }


def _create_google_identity(batch: Any, uid: str, iss: str, sub: str, email: str, now: Any) -> None:
    """The identity document of a Google account, created in `batch` (so a second sign-up with it fails)."""
    batch.create(
        _db().collection(IDENTITIES).document(google_identity_id(iss, sub)),
        {"uid": uid, "kind": "google", "iss": iss, "sub": sub, "email": email, "created_at": now, "updated_at": now},
    )


def create_google_user(iss: str, sub: str, email: str, name: str) -> str:
    """A new user whose only identity is a Google account (its email verified by Google)."""
    uid = uuid.uuid4().hex
    now = clock.now()
    db = _db()
    batch = db.batch()
    _create_google_identity(batch, uid, iss, sub, email, now)
    batch.create(db.collection(USERS).document(uid), _new_user(email, name, ["google"], True, "user", now))
    batch.commit()
    return uid


def link_google(uid: str, iss: str, sub: str, email: str) -> None:
    from google.cloud import firestore

    now = clock.now()
    db = _db()
    batch = db.batch()
    _create_google_identity(batch, uid, iss, sub, email, now)
    batch.update(db.collection(USERS).document(uid), {"providers": firestore.ArrayUnion(["google"]), "updated_at": now})
    batch.commit()


def claim_for_google(uid: str, iss: str, sub: str, email: str) -> None:
    """The verified Google identity of `email` takes over an account whose password nobody proved:
    the password identity is dropped, Google linked, the address marked verified, and every token
    and outstanding reset link issued before now is void (sessions are revoked by the caller)."""
    now = clock.now()
    db = _db()
    batch = db.batch()
    batch.delete(db.collection(IDENTITIES).document(password_identity_id(email)))
    _create_google_identity(batch, uid, iss, sub, email, now)
    batch.update(
        db.collection(USERS).document(uid),
        {
            "providers": ["google"],
            "email_verified": True,
            "tokens_valid_after": now,
            "password_changed_at": now,
            "updated_at": now,
        },
    )
    batch.commit()


def update(uid: str, **fields: Any) -> None:
    _db().collection(USERS).document(uid).update({**fields, "updated_at": clock.now()})


def set_password_hash(email: str, password_hash: str) -> None:
    _db().collection(IDENTITIES).document(password_identity_id(email)).update(
        {"hash": password_hash, "updated_at": clock.now()}
    )


def public(user: dict[str, Any]) -> dict[str, Any]:
    return {
        "uid": user["uid"],
        "email": user["email"],
        "name": user.get("name", ""),
        "role": user.get("role", "user"),
        "email_verified": bool(user.get("email_verified")),
        "providers": [p for p in user.get("providers", []) if p in ("password", "google")],
    }


# --- one-time email tokens -----------------------------------------------------------------------


def issue_email_token(uid: str, purpose: str, email: str, ttl_s: int) -> str:
    token = secrets.token_urlsafe(32)
    now = clock.now()
    _db().collection(EMAIL_TOKENS).document(_sha(token)).create(
        {
            "uid": uid,
            "purpose": purpose,
            "email": email,
            "created_at": now,
            "expires_at": now + timedelta(seconds=ttl_s),
            "used_at": None,
        }
    )
    return token


def consume_email_token(token: str, purpose: str) -> dict[str, Any]:
    """Mark a one-time token used and return it; a used, expired or unknown token is a 400."""
    from google.cloud import firestore

    db = _db()
    ref = db.collection(EMAIL_TOKENS).document(_sha(token))

    @firestore.transactional
    def run(tx: Any) -> dict[str, Any] | None:
        snap = ref.get(transaction=tx)
        if not snap.exists:
            return None
        doc = snap.to_dict()
        if doc["purpose"] != purpose or doc.get("used_at") or doc["expires_at"] <= clock.now():
            return None
        tx.update(ref, {"used_at": clock.now()})
        return doc

    doc = run(db.transaction())
    if doc is None:
        raise Problem(400, "This link is invalid, already used or expired. Ask for a new one.", slug="invalid-link")
    return doc
