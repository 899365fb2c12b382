"""ES256 access tokens.

Signers hold the private key set (secret `token-signing-keys`, mounted only into functions that sign)
and sign with its newest key. Verifiers hold the public set (secret `token-public-keys`) and re-read
it, at most every `RELOAD_INTERVAL_S`, when a token names an unknown `kid` (a rotation).
Verification pins the algorithm and the `typ`, and requires every claim the API relies on. A token
whose signature was checked is remembered (VERIFIED_MAX of them) while the key that signed it stays
in the set; its expiry is checked on every use.

Rotation (`mllab keys rotate`, mllab.ops.keys): `rotate()` adds a key that signs at once and marks the
others retired; `prune()` drops a retired key once no token it signed can still be valid
(`retired_grace_s()` after it retired).
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import threading
import time
from dataclasses import dataclass
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm

from mllab.platform import clock, config

ALGORITHM = "ES256"
TOKEN_TYPE = "at+jwt"  # RFC 9068: an access token can't be confused with an ID token
REQUIRED_CLAIMS = ("sub", "sid", "iat", "exp", "iss", "aud", "jti")
PUBLIC_MEMBERS = ("kty", "crv", "x", "y", "kid", "use", "alg")
JWK_DEFAULTS = {"use": "sig", "alg": "ES256"}  # what a published key is for, when its JWK leaves it out
# Bookkeeping kept beside each key in both secrets (never served in the JWKS): NumericDates.
KEY_DATES = ("created_at", "retired_at")
RELOAD_INTERVAL_S = 30.0
IAT_LEEWAY_S = 60  # clock skew between instances


class TokenError(Exception):
    """The token is not acceptable. The message is safe to show (it never echoes the token)."""


@dataclass(frozen=True)
class AccessToken:
    token: str
    expires_in: int
    claims: dict[str, Any]


# --- keys ----------------------------------------------------------------------------------------


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def new_private_jwk() -> dict[str, Any]:
    """A fresh P-256 key as a private JWK; `kid` is its RFC 7638 thumbprint."""
    key = ec.generate_private_key(ec.SECP256R1())
    jwk = ECAlgorithm.to_jwk(key, as_dict=True)
    canonical = json.dumps({m: jwk[m] for m in ("crv", "kty", "x", "y")}, separators=(",", ":"), sort_keys=True)
    jwk.update(
        kid=_b64(hashlib.sha256(canonical.encode()).digest()), use="sig", alg=ALGORITHM, created_at=clock.timestamp()
    )
    return jwk


def new_key_set() -> dict[str, Any]:
    return {"keys": [new_private_jwk()]}


def rotate(private_set: dict[str, Any]) -> dict[str, Any]:
    """Add a new signing key, which signs at once; the others stay, marked retired now, so tokens they
    signed verify until they expire (prune() drops them after that)."""
    now = clock.timestamp()
    kept = [{**k, "retired_at": k.get("retired_at", now)} for k in private_set.get("keys", [])]
    return {"keys": [*kept, new_private_jwk()]}


def retired_grace_s() -> int:
    """How long a retired key's public half stays published: a warm signer may go on signing with it
    until it re-reads the key set (SIGNER_REFRESH_S), each such token lives for the access-token TTL,
    and instances' clocks differ by up to IAT_LEEWAY_S."""
    return int(SIGNER_REFRESH_S) + config.LIMITS.access_token_ttl_s + IAT_LEEWAY_S


def published_until(jwk: dict[str, Any]) -> int | None:
    """When a retired key may leave the public set (None: it is the signing key)."""
    retired = jwk.get("retired_at")
    return None if retired is None else int(retired) + retired_grace_s()


def prune(private_set: dict[str, Any]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(the set without retired keys whose tokens have all expired, the keys dropped)."""
    now = clock.timestamp()
    keep: list[dict[str, Any]] = []
    dropped: list[dict[str, Any]] = []
    for jwk in private_set.get("keys", []):
        until = published_until(jwk)
        (dropped if until is not None and until <= now else keep).append(jwk)
    return {"keys": keep}, dropped


def public_key_set(private_set: dict[str, Any]) -> dict[str, Any]:
    """The publishable set: public members (and the key's dates) only, never `d`."""
    members = PUBLIC_MEMBERS + KEY_DATES
    return {"keys": [{m: k[m] for m in members if m in k} for k in private_set.get("keys", [])]}


def _load(text: str, *, private: bool) -> dict[str, Any]:
    try:
        data = json.loads(text)
        keys = {}
        for jwk in data["keys"]:
            if jwk.get("kty") != "EC" or jwk.get("crv") != "P-256" or not jwk.get("kid"):
                continue
            if private != ("d" in jwk):
                raise ValueError("wrong kind of key set")
            keys[jwk["kid"]] = (jwk, ECAlgorithm.from_jwk(jwk))
        return keys
    except (ValueError, KeyError, TypeError) as exc:
        raise config.ConfigError(
            f"unreadable {'private' if private else 'public'} key set: {type(exc).__name__}"
        ) from None


# --- signing -------------------------------------------------------------------------------------

SIGNER_REFRESH_S = 300.0  # a warm instance picks up a rotated key set within this time

_signer_lock = threading.Lock()
_signer: tuple[str, Any] | None = None
_signer_loaded_at = float("-inf")


def _signing_key() -> tuple[str, Any]:
    """The newest key of the mounted private set, re-read every SIGNER_REFRESH_S so a rotation
    reaches warm instances (the mounted file follows the secret's latest version)."""
    global _signer, _signer_loaded_at
    with _signer_lock:
        if _signer is None or time.monotonic() - _signer_loaded_at >= SIGNER_REFRESH_S:
            keys = _load(config.secret(config.SIGNING_KEYS), private=True)
            if not keys:
                raise config.ConfigError("the signing key set is empty")
            # Newest unretired key by created_at; on a tie the later entry wins (rotate() appends).
            pairs = list(keys.values())
            current = [pair for pair in pairs if "retired_at" not in pair[0]] or pairs
            jwk, key = max(reversed(current), key=lambda pair: pair[0].get("created_at", 0))
            _signer = (jwk["kid"], key)
            _signer_loaded_at = time.monotonic()
        return _signer


def issue_access_token(uid: str, sid: str, **extra: Any) -> AccessToken:
    s = config.settings()
    kid, key = _signing_key()
    now = clock.timestamp()
    ttl = config.LIMITS.access_token_ttl_s
    claims = {
        **extra,
        "iss": s.token_issuer,
        "aud": s.token_audience,
        "sub": uid,
        "sid": sid,
        "iat": now,
        "exp": now + ttl,
        "jti": secrets.token_urlsafe(16),
    }
    token = jwt.encode(claims, key, algorithm=ALGORITHM, headers={"kid": kid, "typ": TOKEN_TYPE})
    return AccessToken(token=token, expires_in=ttl, claims=claims)


# --- verification --------------------------------------------------------------------------------


VERIFIED_MAX = 4096  # tokens whose signature this process has checked (an access token is reused until it expires)


class _Verifier:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._keys: dict[str, tuple[dict[str, Any], Any]] = {}
        self._loaded_at = float("-inf")
        # (token, audience, issuer) -> (kid, claims) once signature, audience, issuer and the required
        # claims' presence were checked: a page's calls present the same token for its whole lifetime,
        # and its signature check was most of a token route's own CPU. Expiry is checked every time.
        self._verified: dict[tuple[str, str, str], tuple[str, dict[str, Any]]] = {}

    def verified(self, token: str, audience: str, issuer: str) -> dict[str, Any] | None:
        """The claims of a token checked before, while the key that signed it is still in the set."""
        hit = self._verified.get((token, audience, issuer))
        if hit is None or hit[0] not in self._keys:  # a re-read key set without its key: check again
            return None
        return hit[1]

    def remember(self, token: str, audience: str, issuer: str, kid: str, claims: dict[str, Any]) -> None:
        if len(self._verified) >= VERIFIED_MAX:
            self._verified.clear()
        self._verified[(token, audience, issuer)] = (kid, claims)

    def key(self, kid: str) -> Any:
        with self._lock:
            if kid not in self._keys and time.monotonic() - self._loaded_at >= RELOAD_INTERVAL_S:
                self._keys = _load(config.secret(config.PUBLIC_KEYS), private=False)
                self._loaded_at = time.monotonic()
            if kid not in self._keys:
                raise TokenError("the token was signed by an unknown key")
            return self._keys[kid][1]

    def public_jwks(self) -> dict[str, Any]:
        """As mllab.identity.schemas.Jwks describes it (GET /.well-known/jwks.json sends it as is: its path
        loads no pydantic): the EC P-256 keys only, each with `use` and `alg` spelled out."""
        keys = _load(config.secret(config.PUBLIC_KEYS), private=False)
        return {
            "keys": [{**JWK_DEFAULTS, **{m: jwk[m] for m in PUBLIC_MEMBERS if m in jwk}} for jwk, _ in keys.values()]
        }


_verifier = _Verifier()


def public_jwks() -> dict[str, Any]:
    """The published JWKS (what `GET /.well-known/jwks.json` serves)."""
    return _verifier.public_jwks()


def verify_access_token(token: str) -> dict[str, Any]:
    """Claims of a valid access token, or TokenError."""
    s = config.settings()
    verifier = _verifier
    claims = verifier.verified(token, s.token_audience, s.token_issuer)
    if claims is None:
        kid = _header_kid(token)
        claims = _signed_claims(token, verifier.key(kid), audience=s.token_audience, issuer=s.token_issuer)
        verifier.remember(token, s.token_audience, s.token_issuer, kid, claims)
    _check_claims(claims)  # every time: a token checked before expires all the same
    return dict(claims)  # the caller's own copy


def _header_kid(token: str) -> str:
    """The key id, once the header shows an access token signed by our algorithm."""
    try:
        header = jwt.get_unverified_header(token)
    except (jwt.PyJWTError, ValueError):  # ValueError: text that is not encodable as UTF-8
        raise TokenError("the token is malformed") from None
    if header.get("alg") != ALGORITHM:
        raise TokenError("the token's algorithm is not accepted")
    if header.get("typ") != TOKEN_TYPE:
        raise TokenError("the token is not an access token")
    kid = header.get("kid")
    if not isinstance(kid, str) or not kid:
        raise TokenError("the token names no key")
    return kid


def _signed_claims(token: str, key: Any, *, audience: str, issuer: str) -> dict[str, Any]:
    """The claims, once signature, audience, issuer and the required claims' presence are checked."""
    try:
        # exp/iat are checked by _check_claims against mllab.platform.clock, so tests can move time.
        return jwt.decode(
            token,
            key,
            algorithms=[ALGORITHM],
            audience=audience,
            issuer=issuer,
            options={"require": list(REQUIRED_CLAIMS), "verify_exp": False, "verify_iat": False, "verify_nbf": False},
        )
    except jwt.MissingRequiredClaimError as exc:
        raise TokenError(f"the token lacks the {exc.claim!r} claim") from None
    except jwt.InvalidAudienceError:
        raise TokenError("the token is for another audience") from None
    except jwt.InvalidIssuerError:
        raise TokenError("the token is from another issuer") from None
    except jwt.InvalidSignatureError:
        raise TokenError("the token's signature is invalid") from None
    except jwt.PyJWTError:
        raise TokenError("the token is invalid") from None


def _check_claims(claims: dict[str, Any]) -> None:
    for name in ("sub", "sid", "jti"):
        if not isinstance(claims[name], str) or not claims[name]:
            raise TokenError(f"the token's {name!r} claim is invalid")
    for name in ("iat", "exp"):
        if not isinstance(claims[name], int) or isinstance(claims[name], bool):
            raise TokenError(f"the token's {name!r} claim is invalid")
    now = clock.timestamp()
    if claims["exp"] <= now:
        raise TokenError("the token has expired")
    if claims["iat"] > now + IAT_LEEWAY_S:
        raise TokenError("the token was issued in the future")


def reset_caches() -> None:
    """Forget loaded keys (tests swap key sets)."""
    global _signer, _verifier
    with _signer_lock:
        _signer = None
    _verifier = _Verifier()
