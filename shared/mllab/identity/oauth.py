"""Google sign-in: the OpenID Connect authorization-code flow with PKCE S256, `state` and `nonce`.

One code path serves Google in production and the local stand-in (oidc-provider-mock): the issuer
comes from settings, and everything else (endpoints, keys) from the issuer's discovery document.

    GET /auth/google/login?return_to=/lab   begin(): an `oauth_tx` document + a 302 to the provider
    GET /auth/google/callback?code&state    consume() the tx once, exchange_code(), verify_id_token(),
                                            resolve_user(), then a new session (in the function)

The transaction is bound to the browser by `__Host-oauth_tx` (SameSite=Lax: a Strict cookie would not
come back on the provider's cross-site redirect). Its value is a random id; Firestore holds only
sha256(id) as the document id and sha256(state), never the cookie value or the state itself.
Nothing secret (tokens, codes, cookie values) is ever logged.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import httpx
import jwt

from mllab.identity import sessions, users
from mllab.platform import audit, clients, clock, config, log, mail
from mllab.platform.problems import Problem

TX_COLLECTION = "oauth_tx"
TX_COOKIE = "__Host-oauth_tx"
CALLBACK_PATH = "/auth/google/callback"
SCOPE = "openid email profile"
GOOGLE_ISSUER = "https://accounts.google.com"
GOOGLE_LEGACY_ISSUER = "accounts.google.com"
ALGORITHM = "RS256"
CLOCK_SKEW_S = 60
DISCOVERY_TTL_S = 3600.0
JWKS_TTL_S = 300.0
JWKS_MIN_REFETCH_S = 30.0  # an unknown kid re-reads the key set at most this often
RETURN_TO_MAX = 512
_TX_ID = re.compile(r"[A-Za-z0-9_-]{43}")  # secrets.token_urlsafe(32)


# --- errors --------------------------------------------------------------------------------------


class IdTokenError(Exception):
    """The provider's ID token was refused. Each check has its own subclass and `reason`."""

    reason = "invalid"
    status = 401
    detail = "Google's answer could not be verified."

    def __init__(self, message: str = "") -> None:
        super().__init__(message or self.detail)

    def problem(self) -> Problem:
        return Problem(
            self.status,
            f"Google sign-in failed: {self.detail} Start again from the sign-in page.",
            slug=f"id-token-{self.reason}",
            title="Google sign-in refused",
        )


class MalformedToken(IdTokenError):
    reason, detail = "malformed", "the ID token is not a well-formed JWT."


class WrongAlgorithm(IdTokenError):
    reason, detail = "algorithm", "the ID token is not signed with RS256."


class UnknownKey(IdTokenError):
    reason, detail = "unknown-key", "the ID token is signed with a key the provider does not publish."


class BadSignature(IdTokenError):
    reason, detail = "signature", "the ID token signature does not verify."


class WrongIssuer(IdTokenError):
    reason, detail = "issuer", "the ID token comes from an unexpected issuer."


class WrongAudience(IdTokenError):
    reason, detail = "audience", "the ID token was issued for another application."


class WrongAuthorizedParty(IdTokenError):
    reason, detail = "azp", "the ID token's authorized party (azp) is not this application."


class Expired(IdTokenError):
    reason, detail = "expired", "the ID token has expired."


class IssuedInFuture(IdTokenError):
    reason, detail = "iat", "the ID token is issued in the future (check the server clock)."


class NonceMismatch(IdTokenError):
    reason, detail = "nonce", "the ID token does not belong to this sign-in attempt (nonce mismatch)."


class MissingSubject(IdTokenError):
    reason, detail = "sub", "the ID token names no account (sub)."


class MissingEmail(IdTokenError):
    reason, status, detail = "email", 400, "the Google account has no usable email address."


class EmailNotVerified(IdTokenError):
    reason, status, detail = (
        "email-unverified",
        400,
        "Google has not verified this account's email address. Verify it with Google first.",
    )


# --- discovery and keys --------------------------------------------------------------------------

_lock = threading.Lock()
_discovery: dict[str, tuple[float, dict[str, Any]]] = {}  # issuer -> (fetched, document)
_jwks: dict[str, tuple[float, jwt.PyJWKSet]] = {}  # jwks_uri -> (fetched, key set)


def reset_caches() -> None:
    with _lock:
        _discovery.clear()
        _jwks.clear()


def _fetch_json(url: str) -> Any:
    """GET a JSON document (discovery, JWKS) with an explicit deadline. Transport errors and timeouts
    propagate: the router answers 503 for them."""
    r = httpx.get(url, timeout=clients.deadline(), headers={"Accept": "application/json"})
    if r.status_code != 200:
        log.warning("oidc provider answered an error", url=url, status=r.status_code)
        raise Problem(
            503, "Google sign-in is not answering right now. Try again in a minute.", headers={"Retry-After": "30"}
        )
    try:
        return r.json()
    except ValueError:
        raise Problem(
            502,
            "Google sign-in answered something we could not read. Try again later.",
            slug="oidc-provider",
            title="Bad gateway",
        ) from None


def issuer() -> str:
    return config.settings().oidc_issuer.rstrip("/")


def discovery() -> dict[str, Any]:
    """The issuer's OpenID configuration, cached per process for an hour."""
    iss = issuer()
    with _lock:
        cached = _discovery.get(iss)
        if cached and time.monotonic() - cached[0] < DISCOVERY_TTL_S:
            return cached[1]
    doc = _fetch_json(f"{iss}/.well-known/openid-configuration")
    required = ("issuer", "authorization_endpoint", "token_endpoint", "jwks_uri")
    if not isinstance(doc, dict) or not all(isinstance(doc.get(k), str) and doc[k] for k in required):
        raise Problem(
            502,
            "Google sign-in's configuration is incomplete. Try again later.",
            slug="oidc-provider",
            title="Bad gateway",
        )
    if doc["issuer"].rstrip("/") != iss:
        # OpenID Connect Discovery 1.0 section 4.3: the issuer must be the one we asked.
        log.error("oidc discovery issuer mismatch", expected=iss, got=doc["issuer"])
        raise Problem(
            502, "Google sign-in's configuration names another issuer.", slug="oidc-provider", title="Bad gateway"
        )
    if config.settings().is_production and not all(doc[k].startswith("https://") for k in required[1:]):
        raise Problem(502, "Google sign-in's endpoints are not https.", slug="oidc-provider", title="Bad gateway")
    with _lock:
        _discovery[iss] = (time.monotonic(), doc)
    return doc


def _key_set(jwks_uri: str, *, refresh: bool = False) -> jwt.PyJWKSet:
    with _lock:
        cached = _jwks.get(jwks_uri)
        age = time.monotonic() - cached[0] if cached else None
        if cached and age is not None and (age < JWKS_TTL_S and not (refresh and age >= JWKS_MIN_REFETCH_S)):
            return cached[1]
    data = _fetch_json(jwks_uri)
    try:
        if not isinstance(data, dict):
            raise jwt.PyJWKSetError("not a JWK Set")
        keys = jwt.PyJWKSet.from_dict(data)
    except jwt.PyJWTError:
        raise Problem(
            502,
            "Google sign-in's key set could not be read. Try again later.",
            slug="oidc-provider",
            title="Bad gateway",
        ) from None
    with _lock:
        _jwks[jwks_uri] = (time.monotonic(), keys)
    return keys


def _rsa_keys(keys: jwt.PyJWKSet) -> list[jwt.PyJWK]:
    return [
        k
        for k in keys.keys
        if k.key_type == "RSA" and (k.public_key_use in (None, "sig")) and k.algorithm_name == ALGORITHM
    ]


def _signing_key(jwks_uri: str, kid: str | None) -> jwt.PyJWK:
    """The key for `kid` (the set is re-read once, rate-limited, for an unknown kid); without a kid,
    the set's only RSA key."""
    for refresh in (False, True):
        rsa = _rsa_keys(_key_set(jwks_uri, refresh=refresh))
        if kid is None:
            if len(rsa) == 1:
                return rsa[0]
        else:
            for key in rsa:
                if key.key_id == kid:
                    return key
    raise UnknownKey()


# --- ID token ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class IdToken:
    iss: str  # canonical issuer (Google's legacy "accounts.google.com" becomes https://accounts.google.com)
    sub: str
    email: str
    email_verified: bool
    name: str
    claims: dict[str, Any] = field(repr=False, default_factory=dict)


def _numeric(claims: dict[str, Any], name: str) -> int | float:
    value = claims.get(name)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise MalformedToken(f"{name} missing or not a number")
    return value


def verify_id_token(id_token: str, nonce: str) -> IdToken:
    """Verify an ID token from the token endpoint (OpenID Connect Core 1.0, section 3.1.3.7).
    Raises an IdTokenError subclass per failed check."""
    client_id = config.settings().oidc_client_id
    kid = _header_kid(id_token)
    doc = discovery()
    claims = _signed_claims(id_token, _signing_key(doc["jwks_uri"], kid))
    expected_iss = doc["issuer"].rstrip("/")
    _check_issuer(claims, expected_iss)
    _check_audience(claims, client_id)
    _check_times(claims)
    _check_nonce(claims, nonce)
    sub, email, name = _identity(claims)
    return IdToken(iss=expected_iss, sub=sub, email=email, email_verified=True, name=name[:200], claims=claims)


def _header_kid(id_token: str) -> str | None:
    """The token's shape and header (read before any key is fetched): RS256, and the key id if any."""
    if not isinstance(id_token, str) or id_token.count(".") != 2 or len(id_token) > 16_384:
        raise MalformedToken()
    try:
        header = jwt.get_unverified_header(id_token)
    except jwt.PyJWTError:
        raise MalformedToken() from None
    if header.get("alg") != ALGORITHM:
        raise WrongAlgorithm()
    kid = header.get("kid")
    if kid is not None and not isinstance(kid, str):
        raise MalformedToken()
    return kid


def _signed_claims(id_token: str, key: jwt.PyJWK) -> dict[str, Any]:
    """The claims, once the signature is checked; each claim is checked by the caller (its own error)."""
    try:
        claims = jwt.decode(
            id_token,
            key.key,
            algorithms=[ALGORITHM],
            options={
                "verify_signature": True,
                "verify_exp": False,
                "verify_nbf": False,
                "verify_iat": False,
                "verify_aud": False,
                "verify_iss": False,
                "verify_sub": False,
                "verify_jti": False,
                "require": [],
            },
        )
    except jwt.InvalidSignatureError:
        raise BadSignature() from None
    except jwt.PyJWTError:
        raise MalformedToken() from None
    if not isinstance(claims, dict):
        raise MalformedToken()
    return claims


def _check_issuer(claims: dict[str, Any], expected_iss: str) -> None:
    """Google's legacy spelling of its issuer is accepted for Google's own."""
    accepted = {expected_iss} | ({GOOGLE_LEGACY_ISSUER} if expected_iss == GOOGLE_ISSUER else set())
    if claims.get("iss") not in accepted:
        raise WrongIssuer()


def _check_audience(claims: dict[str, Any], client_id: str) -> None:
    aud = claims.get("aud")
    if isinstance(aud, str):
        audiences = [aud]
    elif isinstance(aud, list) and aud and all(isinstance(a, str) for a in aud):
        audiences = aud
    else:
        raise WrongAudience()
    if client_id not in audiences:
        raise WrongAudience()
    azp = claims.get("azp")
    if (len(audiences) > 1 or azp is not None) and azp != client_id:
        raise WrongAuthorizedParty()


def _check_times(claims: dict[str, Any]) -> None:
    now = clock.timestamp()
    if now >= _numeric(claims, "exp") + CLOCK_SKEW_S:
        raise Expired()
    if _numeric(claims, "iat") > now + CLOCK_SKEW_S:
        raise IssuedInFuture()


def _check_nonce(claims: dict[str, Any], nonce: str) -> None:
    presented = claims.get("nonce")
    if not isinstance(presented, str) or not nonce or not hmac.compare_digest(presented.encode(), nonce.encode()):
        raise NonceMismatch()


def _identity(claims: dict[str, Any]) -> tuple[str, str, str]:
    """(sub, normalised verified email, name or "")."""
    sub = claims.get("sub")
    if not isinstance(sub, str) or not sub.strip() or len(sub) > 255:
        raise MissingSubject()
    if claims.get("email_verified") is not True:
        raise EmailNotVerified()
    raw_email = claims.get("email")
    if not isinstance(raw_email, str):
        raise MissingEmail()
    try:
        email = users.normalize_email(raw_email)
    except Problem:
        raise MissingEmail() from None
    raw_name = claims.get("name")
    return sub, email, raw_name if isinstance(raw_name, str) else ""


# --- PKCE, state, nonce --------------------------------------------------------------------------


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def new_code_verifier() -> str:
    """RFC 7636 section 4.1: 43-128 characters of [A-Za-z0-9-._~]; here 86 from 64 random bytes."""
    return secrets.token_urlsafe(64)


def code_challenge(verifier: str) -> str:
    """S256: b64url(sha256(ascii(verifier))) without padding."""
    return _b64(hashlib.sha256(verifier.encode("ascii")).digest())


def _sha256_hex(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def redirect_uri() -> str:
    """The exact callback registered with the provider: a per-environment constant."""
    return config.settings().public_url.rstrip("/") + CALLBACK_PATH


# --- return_to (open-redirect guard, R10) --------------------------------------------------------


class BadReturnTo(Problem):
    def __init__(self) -> None:
        super().__init__(
            400,
            "return_to must be a path on this site, such as /lab (one leading slash, no "
            "scheme, host, backslash, whitespace or control characters, at most "
            f"{RETURN_TO_MAX} characters).",
            slug="invalid-return-to",
            errors=[{"field": "return_to", "message": "not a same-site path"}],
        )


def _fully_decoded(value: str) -> str | None:
    for _ in range(8):
        decoded = urllib.parse.unquote(value, errors="strict") if "%" in value else value
        if decoded == value:
            return value
        value = decoded
    return None  # still changing after 8 rounds: refuse


def validate_return_to(raw: str | None) -> str:
    """A relative same-site path, or "/" when absent. The value is checked as given and again after
    percent-decoding until stable, so encoded slashes, backslashes and controls are refused too.
    Only printable ASCII; no empty (`//`) or dot (`.`, `..`) path segments."""
    if raw is None or raw == "":
        return "/"
    if not isinstance(raw, str) or len(raw) > RETURN_TO_MAX:
        raise BadReturnTo()
    try:
        decoded = _fully_decoded(raw)
    except UnicodeDecodeError:
        raise BadReturnTo() from None
    if decoded is None:
        raise BadReturnTo()
    for candidate in (raw, decoded):
        if not candidate.startswith("/") or candidate.startswith(("//", "/\\")):
            raise BadReturnTo()
        if any(not (0x21 <= ord(c) <= 0x7E) for c in candidate) or "\\" in candidate:
            raise BadReturnTo()  # controls, whitespace, DEL, non-ASCII look-alikes, backslashes
        path = re.split(r"[?#]", candidate, maxsplit=1)[0]
        segments = path.split("/")[1:]
        if any(seg in ("", ".", "..") for seg in segments[:-1]) or segments[-1] in (".", ".."):
            raise BadReturnTo()
        parts = urllib.parse.urlsplit(candidate)
        if parts.scheme or parts.netloc:
            raise BadReturnTo()
    return raw


def lab_location(return_to: str) -> str:
    return config.settings().lab_url.rstrip("/") + return_to


# --- transactions --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Transaction:
    nonce: str
    code_verifier: str
    return_to: str
    link_uid: str | None = None  # set when a password session asked to add Google to its account


def _tx_ref(tx_id: str) -> Any:
    return clients.firestore().collection(TX_COLLECTION).document(_sha256_hex(tx_id))


def begin(return_to: str, link_uid: str | None = None) -> tuple[str, str]:
    """Store a fresh transaction; returns (tx id for the cookie, the provider's authorization URL).
    `link_uid`: the account a password session asked to add Google to."""
    tx_id = secrets.token_urlsafe(32)
    state = secrets.token_urlsafe(32)
    nonce = secrets.token_urlsafe(32)
    verifier = new_code_verifier()
    now = clock.now()
    doc = discovery()
    _tx_ref(tx_id).create(
        {
            "state_hash": _sha256_hex(state),
            "nonce": nonce,
            "code_verifier": verifier,
            "return_to": return_to,
            "link_uid": link_uid,
            "created_at": now,
            "expires_at": now + timedelta(seconds=config.OAUTH_TX_TTL_S),
        }
    )
    query = urllib.parse.urlencode(
        {
            "response_type": "code",
            "client_id": config.settings().oidc_client_id,
            "redirect_uri": redirect_uri(),
            "scope": SCOPE,
            "state": state,
            "nonce": nonce,
            "code_challenge": code_challenge(verifier),
            "code_challenge_method": "S256",
            "access_type": "online",
            "prompt": "select_account",
        }
    )
    endpoint = doc["authorization_endpoint"]
    return tx_id, f"{endpoint}{'&' if '?' in endpoint else '?'}{query}"


def link_requester(refresh_cookie: str | None) -> str:
    """The uid of the live password session behind this browser's refresh cookie, or 401/403."""
    current = sessions.find_by_token(refresh_cookie) if refresh_cookie else None
    if current is None or current.get("not_after") is None or current["not_after"] <= clock.now():
        raise Problem(401, "Sign in with your password first, then connect Google from Account.", slug="session-ended")
    if current.get("method") != "password":
        raise Problem(
            403,
            "Google can be connected only from a session signed in with the account's password.",
            slug="password-session-required",
        )
    return str(current["uid"])


def tx_cookie(tx_id: str) -> str:
    return f"{TX_COOKIE}={tx_id}; Path=/; Secure; HttpOnly; SameSite=Lax; Max-Age={config.OAUTH_TX_TTL_S}"


def clear_tx_cookie() -> str:
    return f"{TX_COOKIE}=; Path=/; Secure; HttpOnly; SameSite=Lax; Max-Age=0"


class TxRefused(Problem):
    """The callback does not belong to a live transaction of this browser (400, no session)."""

    def __init__(self, reason: str, detail: str, *, clear_cookie: bool) -> None:
        super().__init__(
            400,
            detail,
            slug=f"oauth-{reason}",
            title="Sign-in attempt not recognised",
            headers={"Set-Cookie": clear_tx_cookie()} if clear_cookie else None,
        )
        self.reason = reason


_RESTART = " Start again from the sign-in page."


def consume(tx_id: str | None, state: str | None) -> Transaction:
    """Check the browser's transaction against `state` and delete it, in one Firestore transaction,
    so it works once. A mismatched state leaves the transaction alone (it may be another tab's)."""
    from google.cloud import firestore

    tx_id, state = _presented(tx_id, state)
    db = clients.firestore()
    ref = _tx_ref(tx_id)
    state_hash = _sha256_hex(state)

    @firestore.transactional
    def run(tx: Any) -> tuple[str, dict[str, Any] | None]:
        snap = ref.get(transaction=tx)
        if not snap.exists:
            return "unknown", None
        doc = snap.to_dict()
        if not hmac.compare_digest(str(doc.get("state_hash", "")).encode(), state_hash.encode()):
            return "state", None
        tx.delete(ref)
        if doc["expires_at"] <= clock.now():
            return "expired", None
        return "ok", doc

    outcome, doc = run(db.transaction(max_attempts=5))
    if outcome != "ok":
        raise _refused(outcome)
    assert doc is not None
    return Transaction(
        nonce=doc["nonce"], code_verifier=doc["code_verifier"], return_to=doc["return_to"], link_uid=doc.get("link_uid")
    )


def _presented(tx_id: str | None, state: str | None) -> tuple[str, str]:
    """The browser's half, checked before Firestore is asked: a well-formed transaction cookie and a state."""
    if not tx_id:
        raise TxRefused(
            "no-cookie",
            "This browser has no sign-in in progress (its sign-in cookie is missing; "
            "cookies must be enabled)." + _RESTART,
            clear_cookie=False,
        )
    if not _TX_ID.fullmatch(tx_id):
        raise TxRefused("unknown", "This sign-in attempt is not known." + _RESTART, clear_cookie=True)
    if not state:
        raise TxRefused("no-state", "The sign-in answer carries no state." + _RESTART, clear_cookie=False)
    return tx_id, state


def _refused(outcome: str) -> TxRefused:
    """Why a stored transaction did not check out ("unknown", "state" or "expired")."""
    if outcome == "unknown":
        return TxRefused(
            "unknown", "This sign-in attempt was already used or is unknown." + _RESTART, clear_cookie=True
        )
    if outcome == "state":
        return TxRefused(
            "state",
            "The sign-in answer does not match this browser's sign-in attempt (state)." + _RESTART,
            clear_cookie=False,
        )
    return TxRefused(
        "expired",
        f"This sign-in attempt took longer than {config.OAUTH_TX_TTL_S // 60} minutes and expired." + _RESTART,
        clear_cookie=True,
    )


# --- code exchange -------------------------------------------------------------------------------


def _bad_gateway(detail: str) -> Problem:
    return Problem(502, detail, slug="oidc-provider", title="Bad gateway")


def exchange_code(code: str, code_verifier: str) -> dict[str, Any]:
    """POST the code (with the PKCE verifier and our client secret) to the token endpoint; the answer
    with its `id_token`. A refused code is a 400, a broken provider 502, a slow or down one 503."""
    if not code or len(code) > 2048:
        raise Problem(400, "The sign-in answer carries no code." + _RESTART, slug="oauth-no-code")
    doc = discovery()
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": redirect_uri(),
        "client_id": config.settings().oidc_client_id,
        "client_secret": config.secret(config.OAUTH_CLIENT_SECRET).strip(),
        "code_verifier": code_verifier,
    }
    try:
        r = httpx.post(
            doc["token_endpoint"], data=form, timeout=clients.deadline(), headers={"Accept": "application/json"}
        )
    except httpx.TransportError as exc:  # timeouts included
        log.warning("oidc token endpoint unreachable", error_type=type(exc).__name__)
        raise Problem(
            503, "Google sign-in is not answering right now. Try again in a few seconds.", headers={"Retry-After": "5"}
        ) from None
    try:
        body = r.json()
    except ValueError:
        body = None
    if 400 <= r.status_code < 500:
        raw_error = body.get("error") if isinstance(body, dict) else None
        error = re.sub(r"[^a-z_]", "", raw_error.lower())[:40] if isinstance(raw_error, str) else ""
        error = error or "refused"
        log.warning("oidc token endpoint refused the code", status=r.status_code, oauth_error=error)
        raise Problem(
            400,
            f"Google refused the sign-in code ({error}); it may have expired or been used." + _RESTART,
            slug="oauth-code-refused",
        )
    if r.status_code != 200:
        log.warning("oidc token endpoint failed", status=r.status_code)
        raise _bad_gateway("Google sign-in failed on Google's side. Try again in a minute.")
    if not isinstance(body, dict) or not isinstance(body.get("id_token"), str):
        raise _bad_gateway("Google's answer had no ID token. Try again in a minute.")
    return body


# --- users ---------------------------------------------------------------------------------------

# Said to whoever signs in with Google where a confirmed password account has the address. It must
# not send a person who never set that password to sign in with it (it may be an attacker's, set before
# they ever came): the reset proves the mailbox, replaces the password and signs every device out.
ACCOUNT_EXISTS = (
    "An ML Lab account with this email already signs in with a password. If you set that password, "
    "sign in with it and connect Google under Account. If you did not, reset the password: the link "
    "goes to your inbox, and resetting signs out every device that used the old one."
)


@dataclass(frozen=True)
class Resolution:
    uid: str
    outcome: str  # existing | linked | claimed | created


def _refuse_if_blocked(user: dict[str, Any] | None) -> dict[str, Any]:
    if not user or user.get("disabled") or user.get("deleted_at"):
        raise Problem(403, "This account is disabled or being deleted; it cannot sign in.", slug="account-disabled")
    return user


def _claim(uid: str, token: IdToken) -> Resolution:
    """A password that nobody proved (the address was never confirmed) gives way to the verified
    Google identity of the address: dropped, its sessions revoked, the owner told by mail."""
    users.claim_for_google(uid, token.iss, token.sub, token.email)
    revoked = sessions.revoke_all(uid, "unproven_password_dropped")
    audit.record("identity.password_dropped", actor=uid, target=f"user:{uid}", sessions_revoked=revoked)
    mail.send(token.email, "password_removed", f"{config.settings().lab_url.rstrip('/')}/#forgot", email=token.email)
    return Resolution(uid, "claimed")


def _link_requested(link_uid: str, token: IdToken) -> Resolution:
    """Add Google to the account of the password session that asked, only for the Google account of
    that same, verified address: nobody can attach their own Google account to someone else's."""
    user = _refuse_if_blocked(users.get(link_uid))
    ident = users.identity(users.google_identity_id(token.iss, token.sub))
    if ident:
        if ident["uid"] == link_uid:
            return Resolution(link_uid, "existing")
        raise Problem(
            409,
            "This Google account already signs in to another ML Lab account.",
            slug="google-in-use",
            title="Google account in use",
        )
    if token.email_verified is not True or token.email != user.get("email"):
        raise Problem(
            409,
            f"Connect the Google account of {user.get('email')}: this one is {token.email}.",
            slug="google-email-mismatch",
            title="A different email",
        )
    users.link_google(link_uid, token.iss, token.sub, token.email)
    audit.record("identity.google_linked", actor=link_uid, target=f"user:{link_uid}")
    return Resolution(link_uid, "linked")


def resolve_user(token: IdToken, link_uid: str | None = None) -> Resolution:
    """Users are keyed by (issuer, sub). The rule for an address that already has a password account
    (docs/security.md): when the address was never confirmed, the verified Google identity claims the
    account and the unproven password is dropped; when it was, Google is linked only from a session
    signed in with that password (`link_uid`), and a Google sign-in alone answers 409. Else a new user."""
    from google.api_core.exceptions import AlreadyExists, Conflict

    if link_uid:
        return _link_requested(link_uid, token)
    for _ in range(2):  # a concurrent first sign-in may create the identity between our read and write
        ident = users.identity(users.google_identity_id(token.iss, token.sub))
        if ident:
            _refuse_if_blocked(users.get(ident["uid"]))
            return Resolution(ident["uid"], "existing")
        password = users.password_identity(token.email)
        try:
            if password:
                user = _refuse_if_blocked(users.get(password["uid"]))
                if token.email_verified is True and not user.get("email_verified"):
                    return _claim(password["uid"], token)
                raise Problem(409, ACCOUNT_EXISTS, slug="account-exists", title="Account already exists")
            return Resolution(users.create_google_user(token.iss, token.sub, token.email, token.name), "created")
        except (AlreadyExists, Conflict):
            continue
    raise Problem(
        409,
        "This Google account is being signed in from elsewhere at the same moment. Try again.",
        slug="signin-conflict",
    )


@dataclass(frozen=True)
class Finished:
    """Where the browser goes after the provider, and the refresh cookie of the new session (none
    when the person canceled at the provider)."""

    location: str
    refresh_cookie: str | None = None


def finish(tx_id: str | None, args: Any, *, ip: str, user_agent: str) -> Finished:
    """The callback: the browser's transaction is checked against `state` and consumed once; the
    code is exchanged (with the PKCE verifier), the ID token verified, the user found, linked,
    claimed or created, and a new session started. `args`: the callback's query parameters."""
    tx = consume(tx_id, args.get("state"))
    error = provider_error(args)
    if error is not None:
        audit_signin("refused", uid=None, ip=ip, reason=f"provider:{error}")
        return Finished(lab_location(f"/?signin_error={error}"))
    try:
        answer = exchange_code(args.get("code", ""), tx.code_verifier)
        token = verify_id_token(answer["id_token"], tx.nonce)
    except IdTokenError as exc:
        log.warning("google id token refused", reason=exc.reason)
        audit_signin("refused", uid=None, ip=ip, reason=f"id_token:{exc.reason}")
        raise exc.problem() from None
    try:
        resolved = resolve_user(token, tx.link_uid)
    except Problem as problem:
        audit_signin("refused", uid=None, ip=ip, reason=problem.slug, google_iss=token.iss, google_sub=token.sub)
        raise
    session, refresh = sessions.create(resolved.uid, "google", user_agent=user_agent, ip=ip)
    audit_signin("ok", uid=resolved.uid, ip=ip, account=resolved.outcome, sid=session.id)
    return Finished(lab_location(tx.return_to), sessions.cookie_header(refresh, session.not_after))


def audit_signin(outcome: str, *, uid: str | None, ip: str, reason: str | None = None, **details: Any) -> None:
    audit.record(
        "signin",
        actor=uid,
        target=f"user:{uid}" if uid else None,
        outcome=outcome,
        ip=ip,
        method="google",
        **({"reason": reason} if reason else {}),
        **details,
    )


def provider_error(args: Any) -> str | None:
    """The OAuth error code the provider put on the callback (?error=access_denied), sanitised."""
    error = args.get("error")
    if error is None:
        return None
    return re.sub(r"[^a-z_]", "", str(error).lower())[:40] or "error"
