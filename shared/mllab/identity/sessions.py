"""Sessions and rotating refresh tokens (Supabase Auth's v2 scheme, on Firestore).

One `sessions/{sid}` document per sign-in holds a refresh counter and a key version, never a token.
The refresh token for counter n is `rt1.` + b64url(sid ‖ n ‖ HMAC(session_key, n)), where
session_key = HMAC(master[key_version], sid) and the master keys are a secret. Because the token for
the current counter can be recomputed, concurrent refreshes converge on one cookie:

- token counter == session counter: rotate (counter + 1);
- token counter == counter - 1 within REFRESH_REUSE_WINDOW_S of the rotation: re-issue the current
  token, no increment (two tabs refreshing at once both get 200 and the same cookie);
- any other replay: the whole session is revoked and audited.

All of it happens in one Firestore transaction on the session document. Idle (7 d) and absolute
(30 d) lifetimes are enforced at refresh. CSRF tokens are HMAC(master, sid): bound to the session,
nothing stored.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from mllab.identity import users
from mllab.platform import audit, clients, clock, config, log, transactions
from mllab.platform.problems import Problem
from mllab.platform.queries import Query

COLLECTION = "sessions"
QUERIES: tuple[Query, ...] = (Query(COLLECTION, ("uid",)),)  # for infra's index file
COOKIE = "__Host-rt"
TOKEN_PREFIX = "rt1."
_MAC_BYTES = 32
_KEYS_REFRESH_S = 300.0


# --- keys ----------------------------------------------------------------------------------------

_keys_lock = threading.Lock()
_keys_cache: tuple[float, str, dict[str, bytes]] | None = None


def _master_keys() -> tuple[str, dict[str, bytes]]:
    """(current version, {version: key}) from the `session-keys` secret, re-read every 5 minutes."""
    global _keys_cache
    with _keys_lock:
        if _keys_cache is None or time.monotonic() - _keys_cache[0] >= _KEYS_REFRESH_S:
            try:
                data = json.loads(config.secret(config.SESSION_KEYS))
                keys = {str(v): base64.urlsafe_b64decode(k) for v, k in data["keys"].items()}
                current = str(data["current"])
                if current not in keys or any(len(k) < 32 for k in keys.values()):
                    raise ValueError("bad key set")
            except (ValueError, KeyError, TypeError) as exc:
                raise config.ConfigError(f"unreadable {config.SESSION_KEYS}: {type(exc).__name__}") from None
            _keys_cache = (time.monotonic(), current, keys)
        return _keys_cache[1], _keys_cache[2]


def new_key_set() -> str:
    """A first session key set, in the shape `_master_keys` reads: {"current": version, "keys":
    {version: base64url(32 random bytes)}} (locally into .dev/secrets; deployed into Secret Manager)."""
    import secrets as pysecrets

    key = base64.urlsafe_b64encode(pysecrets.token_bytes(32)).decode()
    return json.dumps({"current": "1", "keys": {"1": key}}, indent=1)


def reset_caches() -> None:
    global _keys_cache
    with _keys_lock:
        _keys_cache = None
    _uids.clear()


def _session_key(version: str, sid: str) -> bytes:
    keys = _master_keys()[1]
    if version not in keys:
        raise KeyError(version)
    return hmac.new(keys[version], b"session-key|" + sid.encode(), hashlib.sha256).digest()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


# --- refresh tokens ------------------------------------------------------------------------------


def refresh_token(sid: str, counter: int, version: str) -> str:
    mac = hmac.new(_session_key(version, sid), b"rt|%d" % counter, hashlib.sha256).digest()
    return TOKEN_PREFIX + _b64(uuid.UUID(hex=sid).bytes + counter.to_bytes(8, "big") + mac)


@dataclass(frozen=True)
class ParsedToken:
    sid: str
    counter: int
    mac: bytes


def parse_refresh_token(token: str) -> ParsedToken | None:
    if not isinstance(token, str) or not token.startswith(TOKEN_PREFIX) or len(token) > 200:
        return None
    try:
        raw = _unb64(token[len(TOKEN_PREFIX) :])
    except (ValueError, TypeError):
        return None
    if len(raw) != 16 + 8 + _MAC_BYTES:
        return None
    return ParsedToken(uuid.UUID(bytes=raw[:16]).hex, int.from_bytes(raw[16:24], "big"), raw[24:])


def _mac_ok(parsed: ParsedToken, version: str) -> bool:
    try:
        expected = hmac.new(_session_key(version, parsed.sid), b"rt|%d" % parsed.counter, hashlib.sha256).digest()
    except KeyError:
        return False
    return hmac.compare_digest(expected, parsed.mac)


# --- cookies -------------------------------------------------------------------------------------


def cookie_header(token: str, not_after: datetime) -> str:
    max_age = max(0, int((not_after - clock.now()).total_seconds()))
    return f"{COOKIE}={token}; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age={max_age}"


def clear_cookie_header() -> str:
    return f"{COOKIE}=; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age=0"


# --- CSRF ----------------------------------------------------------------------------------------


def csrf_token(sid: str) -> str:
    version, keys = _master_keys()
    return f"{version}.{_b64(hmac.new(keys[version], b'csrf|' + sid.encode(), hashlib.sha256).digest())}"


def csrf_ok(sid: str, presented: str) -> bool:
    version, _, mac = (presented or "").partition(".")
    keys = _master_keys()[1]
    if version not in keys or not mac:
        return False
    expected = _b64(hmac.new(keys[version], b"csrf|" + sid.encode(), hashlib.sha256).digest())
    return hmac.compare_digest(expected.encode(), mac.encode())


# --- session documents ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Session:
    id: str
    uid: str
    counter: int
    created_at: datetime
    refreshed_at: datetime
    not_after: datetime
    method: str

    @property
    def csrf(self) -> str:
        return csrf_token(self.id)


def _ref(sid: str) -> Any:
    return clients.firestore().collection(COLLECTION).document(sid)


# sid -> uid of the sessions this process has seen. A session's uid never changes, so a refresh of a
# session seen before reads the session and its user in one round trip of its transaction (three in
# all, as a bare read-modify-write: begin, read, commit) instead of reading the user after the session.
# Only which user document to read comes from here: every verdict uses the documents just read.
_uids: dict[str, str] = {}
_UIDS_MAX = 10_000


def _remember_uid(sid: str, uid: str) -> None:
    if len(_uids) >= _UIDS_MAX:
        _uids.clear()
    _uids[sid] = uid


def _first_read(ref: Any, sid: str) -> list[Any]:
    """What the transaction reads first: the session, and its user when this process knows the uid."""
    uid = _uids.get(sid)
    return [ref] if uid is None else [ref, clients.firestore().collection(users.USERS).document(uid)]


def create(uid: str, method: str, *, user_agent: str, ip: str) -> tuple[Session, str]:
    """A new session (one per sign-in) and its first refresh token."""
    version, _ = _master_keys()
    sid = uuid.uuid4().hex
    now = clock.now()
    not_after = now + timedelta(seconds=config.LIMITS.refresh_absolute_s)
    _ref(sid).create(
        {
            "uid": uid,
            "counter": 0,
            "key_version": version,
            "method": method,
            "user_agent": user_agent[:300],
            "ip": ip,
            "created_ip": ip,
            "created_at": now,
            "refreshed_at": now,
            "not_after": not_after,
            "expires_at": not_after,
            "revoked_at": None,
            "revoke_reason": None,
            "updated_at": now,
        }
    )
    log.info("session created", sid=sid, uid=uid, method=method)
    return Session(sid, uid, 0, now, now, not_after, method), refresh_token(sid, 0, version)


class RefreshRefused(Exception):
    def __init__(self, reason: str, sid: str | None = None, uid: str | None = None) -> None:
        super().__init__(reason)
        self.reason, self.sid, self.uid = reason, sid, uid


def _user_blocks(user: dict[str, Any] | None, session_created: datetime) -> str | None:
    if not user:
        return "user_gone"
    if user.get("disabled") or user.get("deleted_at"):
        return "user_disabled"
    tva = user.get("tokens_valid_after")
    if tva and session_created < tva:
        return "signed_out_everywhere"
    return None


def _expiry(s: dict[str, Any], now: datetime) -> str | None:
    if now >= s["not_after"]:
        return "expired_absolute"
    if now - s["refreshed_at"] >= timedelta(seconds=config.LIMITS.refresh_idle_s):
        return "expired_idle"
    return None


def _verdict(s: dict[str, Any], user: dict[str, Any] | None, counter: int, now: datetime) -> str:
    """What a token of a genuine, unrevoked session gets: "rotated", "reissue" (the previous token,
    presented again within the reuse window) or the reason the session is revoked."""
    reason = _user_blocks(user, s["created_at"]) or _expiry(s, now)
    if reason:
        return reason
    diff = s["counter"] - counter
    if diff == 1 and now - s["refreshed_at"] < timedelta(seconds=config.REFRESH_REUSE_WINDOW_S):
        return "reissue"
    return "reuse_detected" if diff != 0 else "rotated"


def rotate(token: str, *, user_agent: str, ip: str) -> tuple[Session, str]:
    """Exchange a refresh token (see the module docstring). Raises RefreshRefused."""
    parsed = parse_refresh_token(token)
    if parsed is None:
        raise RefreshRefused("malformed")
    db = clients.firestore()
    ref = _ref(parsed.sid)
    first = _first_read(ref, parsed.sid)

    # The read begins the transaction (mllab.platform.transactions): read, commit, not begin, read, commit.
    def run(tx: Any, snaps: dict[str, Any]) -> tuple[str, Any]:
        snap, user = snaps[ref.path], snaps.get(first[-1].path) if len(first) > 1 else None
        if not snap.exists:
            return "unknown", None
        s = snap.to_dict()
        if not _mac_ok(parsed, s["key_version"]):
            return "forged", s
        if s.get("revoked_at"):
            return "revoked", s
        _remember_uid(parsed.sid, s["uid"])
        if user is None or user.id != s["uid"]:
            user = db.collection(users.USERS).document(s["uid"]).get(transaction=tx)
        now = clock.now()
        verdict = _verdict(s, user.to_dict() if user.exists else None, parsed.counter, now)
        if verdict == "reissue":
            return verdict, s
        if verdict != "rotated":
            tx.update(ref, {"revoked_at": now, "revoke_reason": verdict, "updated_at": now})
            return verdict, s
        tx.update(
            ref,
            {
                "counter": s["counter"] + 1,
                "refreshed_at": now,
                "user_agent": user_agent[:300],
                "ip": ip,
                "updated_at": now,
            },
        )
        return "rotated", {**s, "counter": s["counter"] + 1, "refreshed_at": now}

    outcome, s = transactions.run(first, run)
    if outcome in ("rotated", "reissue"):
        session = Session(
            parsed.sid, s["uid"], s["counter"], s["created_at"], s["refreshed_at"], s["not_after"], s.get("method", "")
        )
        return session, refresh_token(parsed.sid, s["counter"], s["key_version"])
    uid = s["uid"] if s else None
    _record_refusal(outcome, parsed.sid, uid)
    raise RefreshRefused(outcome, parsed.sid, uid)


def _record_refusal(outcome: str, sid: str, uid: str | None) -> None:
    """A replayed token and an expiry go in the audit trail (a replay is also a warning)."""
    if outcome == "reuse_detected":
        log.warning("refresh token reuse: session revoked", sid=sid, uid=uid)
        audit.record("session.refresh_reuse", actor=uid, target=f"session:{sid}", outcome="revoked")
    elif outcome.startswith("expired"):
        audit.record("session.expired", actor=uid, target=f"session:{sid}", outcome=outcome)


def find_by_token(token: str) -> dict[str, Any] | None:
    """The live session a current or previous refresh token belongs to (for logout)."""
    parsed = parse_refresh_token(token)
    if parsed is None:
        return None
    snap = _ref(parsed.sid).get()
    if not snap.exists:
        return None
    s = snap.to_dict()
    if s.get("revoked_at") or not _mac_ok(parsed, s["key_version"]) or s["counter"] - parsed.counter not in (0, 1):
        return None
    return {**s, "id": parsed.sid}


def revoke(sid: str, reason: str) -> bool:
    now = clock.now()
    ref = _ref(sid)
    snap = ref.get()
    if not snap.exists or snap.get("revoked_at"):
        return False
    ref.update({"revoked_at": now, "revoke_reason": reason, "updated_at": now})
    return True


def for_user(uid: str, *, include_revoked: bool = False) -> list[dict[str, Any]]:
    from google.cloud.firestore_v1.base_query import FieldFilter

    query = clients.firestore().collection(COLLECTION).where(filter=FieldFilter("uid", "==", uid))
    now = clock.now()
    out = []
    for snap in query.stream(**clients.opts()):
        s = {**snap.to_dict(), "id": snap.id}
        if include_revoked or (not s.get("revoked_at") and s["not_after"] > now):
            out.append(s)
    return sorted(out, key=lambda s: s["created_at"], reverse=True)


def revoke_all(uid: str, reason: str, *, except_sid: str | None = None) -> int:
    """Revoke every live session of a user (but one). Returns how many."""
    now = clock.now()
    live = [s for s in for_user(uid) if s["id"] != except_sid]
    db = clients.firestore()
    for chunk in range(0, len(live), 400):
        batch = db.batch()
        for s in live[chunk : chunk + 400]:
            batch.update(
                db.collection(COLLECTION).document(s["id"]),
                {"revoked_at": now, "revoke_reason": reason, "updated_at": now},
            )
        batch.commit()
    return len(live)


# --- liveness of an access token -----------------------------------------------------------------


def check_live(claims: dict[str, Any]) -> dict[str, Any]:
    """Refuse an access token whose session is gone or older than the user's `tokens_valid_after`.
    Returns the user document. One round trip (both documents in a single batch get)."""
    return check_live_reading(claims, ())[0]


def check_live_reading(claims: dict[str, Any], also: Sequence[Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """`check_live`, reading the documents `also` (the claims' user's, for the handler) in the same
    round trip: (the user document, their snapshots by path). A refused token's are never returned."""
    db = clients.firestore()
    sref, uref = db.collection(COLLECTION).document(claims["sid"]), db.collection(users.USERS).document(claims["sub"])
    docs = clients.read_all([sref, uref, *also])
    session, user = docs.pop(sref.path, None), docs.pop(uref.path, None)
    ended = Problem(
        401,
        "Your session has ended. Sign in again.",
        slug="session-ended",
        headers={"WWW-Authenticate": 'Bearer realm="mllab", error="invalid_token"'},
    )
    if session is None or not session.exists or user is None or not user.exists:
        raise ended
    s, u = session.to_dict(), user.to_dict()
    if s.get("uid") != claims["sub"] or s.get("revoked_at") or s["not_after"] <= clock.now():
        raise ended
    if _user_blocks(u, s["created_at"]):
        raise ended
    tva = u.get("tokens_valid_after")
    if tva and claims["iat"] < int(tva.timestamp()):
        raise ended
    return {**u, "uid": claims["sub"]}, docs
