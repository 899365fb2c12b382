"""Google sign-in (mllab.identity.oauth): ID token checks one claim at a time, PKCE, the token request and the
open-redirect guard on return_to (docs/security.md). Tokens are minted here with a local
RSA key; discovery and the JWKS are served by a fake fetcher."""

from __future__ import annotations

import base64
import hashlib
import re
import urllib.parse
from datetime import timedelta
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from mllab.identity import oauth
from mllab.platform import clock, config
from mllab.platform.problems import Problem
from tests.unit.helpers import b64url_json

ISSUER = "http://127.0.0.1:9400"
CLIENT_ID = "mllab-local"
NONCE = "n-0123456789abcdef"


def _rsa() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


KEY = _rsa()
OTHER_KEY = _rsa()


def _jwk(key: rsa.RSAPrivateKey, kid: str | None) -> dict[str, Any]:
    jwk = RSAAlgorithm.to_jwk(key.public_key(), as_dict=True)
    if kid is not None:
        jwk["kid"] = kid
    jwk["use"] = "sig"
    return jwk


class FakeProvider:
    """Discovery and JWKS documents, served through oauth._fetch_json; counts fetches."""

    def __init__(self, issuer: str = ISSUER) -> None:
        self.issuer = issuer
        self.keys = [_jwk(KEY, "k1")]
        self.fetches: list[str] = []
        self.discovery = {
            "issuer": issuer,
            "authorization_endpoint": f"{issuer}/oauth2/authorize",
            "token_endpoint": f"{issuer}/oauth2/token",
            "jwks_uri": f"{issuer}/jwks",
        }

    def fetch(self, url: str) -> Any:
        self.fetches.append(url)
        if url == f"{self.issuer}/.well-known/openid-configuration":
            return self.discovery
        if url == self.discovery["jwks_uri"]:
            return {"keys": list(self.keys)}
        raise AssertionError(f"unexpected fetch {url}")


@pytest.fixture
def provider(monkeypatch: pytest.MonkeyPatch) -> FakeProvider:
    fake = FakeProvider()
    oauth.reset_caches()
    monkeypatch.setattr(oauth, "_fetch_json", fake.fetch)
    yield fake
    oauth.reset_caches()


def claims(**overrides: Any) -> dict[str, Any]:
    now = clock.timestamp()
    out = {
        "iss": ISSUER,
        "aud": [CLIENT_ID],
        "sub": "google-sub-1",
        "iat": now,
        "exp": now + 3600,
        "nonce": NONCE,
        "email": "Alice@Example.com",
        "email_verified": True,
        "name": "Alice",
    }
    for name, value in overrides.items():
        if value is ...:
            out.pop(name, None)
        else:
            out[name] = value
    return out


def mint(
    payload: dict[str, Any] | None = None,
    *,
    key: Any = KEY,
    kid: str | None = "k1",
    alg: str = "RS256",
    headers: dict[str, Any] | None = None,
) -> str:
    h = {"kid": kid} if kid is not None else {}
    h.update(headers or {})
    return jwt.encode(payload if payload is not None else claims(), key, algorithm=alg, headers=h)


# --- the good path ---------------------------------------------------------------------------------


def test_valid_token_is_accepted(provider: FakeProvider) -> None:
    token = oauth.verify_id_token(mint(), NONCE)
    assert (token.iss, token.sub, token.email, token.email_verified, token.name) == (
        ISSUER,
        "google-sub-1",
        "alice@example.com",
        True,
        "Alice",
    )


def test_aud_as_a_string_is_accepted(provider: FakeProvider) -> None:
    assert oauth.verify_id_token(mint(claims(aud=CLIENT_ID)), NONCE).sub == "google-sub-1"


def test_aud_list_with_several_entries_needs_azp_equal_to_client_id(provider: FakeProvider) -> None:
    token = mint(claims(aud=[CLIENT_ID, "other-client"], azp=CLIENT_ID))
    assert oauth.verify_id_token(token, NONCE).sub == "google-sub-1"


def test_token_without_kid_uses_the_only_rsa_key(provider: FakeProvider) -> None:
    provider.keys = [_jwk(KEY, None)]
    assert oauth.verify_id_token(mint(kid=None), NONCE).sub == "google-sub-1"


def test_token_without_kid_is_refused_when_the_set_has_several_keys(provider: FakeProvider) -> None:
    provider.keys = [_jwk(KEY, "k1"), _jwk(OTHER_KEY, "k2")]
    with pytest.raises(oauth.UnknownKey):
        oauth.verify_id_token(mint(kid=None), NONCE)


def test_kid_picks_the_matching_key_among_several(provider: FakeProvider) -> None:
    provider.keys = [_jwk(OTHER_KEY, "k2"), _jwk(KEY, "k1")]
    assert oauth.verify_id_token(mint(kid="k1"), NONCE).sub == "google-sub-1"
    assert oauth.verify_id_token(mint(key=OTHER_KEY, kid="k2"), NONCE).sub == "google-sub-1"


def test_skew_up_to_60_seconds_is_tolerated(provider: FakeProvider) -> None:
    now = clock.timestamp()
    token = mint(claims(iat=now + 50, exp=now - 50))
    assert oauth.verify_id_token(token, NONCE).sub == "google-sub-1"


def test_expiry_follows_the_mllab_clock(provider: FakeProvider) -> None:
    token = mint()
    with clock.travel(by=timedelta(seconds=3600 + 61)), pytest.raises(oauth.Expired):
        oauth.verify_id_token(token, NONCE)


def test_google_legacy_issuer_is_accepted_only_for_google(
    provider: FakeProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(oauth.WrongIssuer):
        oauth.verify_id_token(mint(claims(iss="accounts.google.com")), NONCE)
    google = FakeProvider("https://accounts.google.com")
    monkeypatch.setattr(oauth, "_fetch_json", google.fetch)
    monkeypatch.setenv("MLLAB_OIDC_ISSUER", "https://accounts.google.com")
    config.reload()
    for iss in ("https://accounts.google.com", "accounts.google.com"):
        token = oauth.verify_id_token(mint(claims(iss=iss)), NONCE)
        assert token.iss == "https://accounts.google.com"  # one identity key whichever form Google sent
    with pytest.raises(oauth.WrongIssuer):
        oauth.verify_id_token(mint(claims(iss="https://accounts.google.com.evil.example")), NONCE)


# --- one refusal per check -------------------------------------------------------------------------


def _hs256_with_public_key() -> str:
    """The classic confusion attack: HS256 keyed with the RSA public key's bytes."""
    header = b64url_json({"alg": "HS256", "typ": "JWT", "kid": "k1"})
    body = b64url_json(claims())
    import hmac as _hmac

    from cryptography.hazmat.primitives import serialization

    secret = KEY.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    sig = _hmac.new(secret, f"{header}.{body}".encode(), hashlib.sha256).digest()
    return f"{header}.{body}.{base64.urlsafe_b64encode(sig).rstrip(b'=').decode()}"


def _alg_none() -> str:
    return f"{b64url_json({'alg': 'none', 'typ': 'JWT', 'kid': 'k1'})}.{b64url_json(claims())}."


def _tampered() -> str:
    header, _, sig = mint().split(".")
    return f"{header}.{b64url_json(claims(sub='someone-else'))}.{sig}"


REFUSALS = [
    ("bad signature (other key, same kid)", lambda: mint(key=OTHER_KEY), oauth.BadSignature),
    ("tampered payload", _tampered, oauth.BadSignature),
    ("alg HS256 keyed with the public key", _hs256_with_public_key, oauth.WrongAlgorithm),
    ("alg none", _alg_none, oauth.WrongAlgorithm),
    ("alg RS512", lambda: mint(alg="RS512"), oauth.WrongAlgorithm),
    ("unknown kid", lambda: mint(kid="nope"), oauth.UnknownKey),
    ("not a JWT", lambda: "not-a-jwt", oauth.MalformedToken),
    ("wrong iss", lambda: mint(claims(iss="https://evil.example")), oauth.WrongIssuer),
    ("missing iss", lambda: mint(claims(iss=...)), oauth.WrongIssuer),
    ("wrong aud", lambda: mint(claims(aud=["other-client"])), oauth.WrongAudience),
    ("wrong aud string", lambda: mint(claims(aud="other-client")), oauth.WrongAudience),
    ("missing aud", lambda: mint(claims(aud=...)), oauth.WrongAudience),
    ("aud list of several without azp", lambda: mint(claims(aud=[CLIENT_ID, "other"])), oauth.WrongAuthorizedParty),
    (
        "aud list of several, azp other",
        lambda: mint(claims(aud=[CLIENT_ID, "other"], azp="other")),
        oauth.WrongAuthorizedParty,
    ),
    ("azp of another client", lambda: mint(claims(azp="other")), oauth.WrongAuthorizedParty),
    ("expired", lambda: mint(claims(exp=clock.timestamp() - 61)), oauth.Expired),
    ("missing exp", lambda: mint(claims(exp=...)), oauth.MalformedToken),
    ("iat in the future", lambda: mint(claims(iat=clock.timestamp() + 120)), oauth.IssuedInFuture),
    ("missing iat", lambda: mint(claims(iat=...)), oauth.MalformedToken),
    ("nonce mismatch", lambda: mint(claims(nonce="another-nonce")), oauth.NonceMismatch),
    ("missing nonce", lambda: mint(claims(nonce=...)), oauth.NonceMismatch),
    ("email_verified false", lambda: mint(claims(email_verified=False)), oauth.EmailNotVerified),
    ("email_verified the string 'true'", lambda: mint(claims(email_verified="true")), oauth.EmailNotVerified),
    ("email_verified missing", lambda: mint(claims(email_verified=...)), oauth.EmailNotVerified),
    ("missing sub", lambda: mint(claims(sub=...)), oauth.MissingSubject),
    ("empty sub", lambda: mint(claims(sub="")), oauth.MissingSubject),
    ("missing email", lambda: mint(claims(email=...)), oauth.MissingEmail),
]


@pytest.mark.parametrize(("case", "make", "error"), REFUSALS, ids=[r[0] for r in REFUSALS])
def test_each_failed_check_has_its_own_error(provider: FakeProvider, case: str, make: Any, error: type) -> None:
    with pytest.raises(error) as info:
        oauth.verify_id_token(make(), NONCE)
    assert type(info.value) is error
    problem = info.value.problem()
    assert problem.status in (400, 401)
    assert problem.slug == f"id-token-{error.reason}"
    assert "Google sign-in failed" in problem.detail and error.detail in problem.detail


def test_failure_reasons_are_distinct() -> None:
    kinds = [
        c
        for c in vars(oauth).values()
        if isinstance(c, type) and issubclass(c, oauth.IdTokenError) and c is not oauth.IdTokenError
    ]
    assert len({k.reason for k in kinds}) == len(kinds) >= 13


def test_nonce_is_compared_against_the_stored_one(provider: FakeProvider) -> None:
    token = mint()
    with pytest.raises(oauth.NonceMismatch):
        oauth.verify_id_token(token, "the-stored-nonce-of-another-attempt")
    with pytest.raises(oauth.NonceMismatch):
        oauth.verify_id_token(token, "")


def test_unknown_kid_rereads_the_key_set_once(provider: FakeProvider) -> None:
    assert oauth.verify_id_token(mint(), NONCE)  # key set cached now
    provider.keys = [_jwk(KEY, "k1"), _jwk(OTHER_KEY, "rotated")]
    jwks = provider.discovery["jwks_uri"]
    before = provider.fetches.count(jwks)
    # within the minimum refetch interval the cached set answers: an unknown kid cannot hammer Google
    with pytest.raises(oauth.UnknownKey):
        oauth.verify_id_token(mint(key=OTHER_KEY, kid="rotated"), NONCE)
    assert provider.fetches.count(jwks) == before
    # once the interval has passed, an unknown kid re-reads the set and finds the new key
    stamp, keys = oauth._jwks[jwks]
    oauth._jwks[jwks] = (stamp - oauth.JWKS_MIN_REFETCH_S - 1, keys)
    assert oauth.verify_id_token(mint(key=OTHER_KEY, kid="rotated"), NONCE).sub == "google-sub-1"
    assert provider.fetches.count(jwks) == before + 1


def test_discovery_is_cached_and_must_name_the_configured_issuer(provider: FakeProvider) -> None:
    oauth.verify_id_token(mint(), NONCE)
    oauth.verify_id_token(mint(), NONCE)
    assert provider.fetches.count(f"{ISSUER}/.well-known/openid-configuration") == 1
    oauth.reset_caches()
    provider.discovery["issuer"] = "https://evil.example"
    with pytest.raises(Problem) as info:
        oauth.discovery()
    assert info.value.status == 502


def test_the_id_token_never_reaches_the_log(provider: FakeProvider, logs: Any) -> None:
    token = mint(claims(nonce="wrong"))
    with pytest.raises(oauth.NonceMismatch):
        oauth.verify_id_token(token, NONCE)
    assert token not in logs.text and token.split(".")[1] not in logs.text


# --- PKCE, state, code exchange --------------------------------------------------------------------


def test_code_verifier_is_long_random_and_unreserved() -> None:
    verifiers = {oauth.new_code_verifier() for _ in range(50)}
    assert len(verifiers) == 50
    for v in verifiers:
        assert 43 <= len(v) <= 128
        assert re.fullmatch(r"[A-Za-z0-9\-._~]+", v)


def test_code_challenge_is_s256_of_the_verifier() -> None:
    # RFC 7636 appendix B
    assert (
        oauth.code_challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk")
        == "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
    )
    v = oauth.new_code_verifier()
    expected = base64.urlsafe_b64encode(hashlib.sha256(v.encode()).digest()).rstrip(b"=").decode()
    assert oauth.code_challenge(v) == expected and "=" not in expected


def _capture_post(monkeypatch: pytest.MonkeyPatch, respond: Any) -> list[httpx.Request]:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return respond(request)

    transport = httpx.MockTransport(handler)

    def post(url: str, **kw: Any) -> httpx.Response:
        assert isinstance(kw.get("timeout"), (int, float)) and kw["timeout"] > 0  # explicit deadline
        with httpx.Client(transport=transport) as client:
            return client.post(url, **kw)

    monkeypatch.setattr(oauth.httpx, "post", post)
    return seen


def test_token_request_carries_the_verifier_and_the_exact_redirect_uri(
    provider: FakeProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen = _capture_post(monkeypatch, lambda r: httpx.Response(200, json={"id_token": "x.y.z", "access_token": "a"}))
    verifier = oauth.new_code_verifier()
    assert oauth.exchange_code("the-code", verifier)["id_token"] == "x.y.z"
    (request,) = seen
    assert str(request.url) == provider.discovery["token_endpoint"] and request.method == "POST"
    form = dict(urllib.parse.parse_qsl(request.content.decode()))
    assert form == {
        "grant_type": "authorization_code",
        "code": "the-code",
        "redirect_uri": config.settings().public_url + "/auth/google/callback",
        "client_id": CLIENT_ID,
        "client_secret": config.secret(config.OAUTH_CLIENT_SECRET).strip(),
        "code_verifier": verifier,
    }


def test_a_refused_code_is_a_400_problem(provider: FakeProvider, monkeypatch: pytest.MonkeyPatch, logs: Any) -> None:
    _capture_post(
        monkeypatch, lambda r: httpx.Response(400, json={"error": "invalid_grant", "error_description": "bad code"})
    )
    with pytest.raises(Problem) as info:
        oauth.exchange_code("used-code", "v" * 43)
    assert info.value.status == 400 and "invalid_grant" in info.value.detail
    assert "used-code" not in logs.text


@pytest.mark.parametrize(
    "response",
    [
        httpx.Response(500, text="boom"),
        httpx.Response(200, text="not json"),
        httpx.Response(200, json={"access_token": "only"}),
    ],
)
def test_a_broken_provider_is_a_502_not_a_500(
    provider: FakeProvider, monkeypatch: pytest.MonkeyPatch, response: httpx.Response
) -> None:
    _capture_post(monkeypatch, lambda r: response)
    with pytest.raises(Problem) as info:
        oauth.exchange_code("code", "v" * 43)
    assert info.value.status == 502


def test_a_timeout_is_a_503(provider: FakeProvider, monkeypatch: pytest.MonkeyPatch) -> None:
    def slow(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("slow", request=request)

    _capture_post(monkeypatch, slow)
    with pytest.raises(Problem) as info:
        oauth.exchange_code("code", "v" * 43)
    assert info.value.status == 503 and info.value.headers.get("Retry-After")


def test_tx_cookie_attributes() -> None:
    assert oauth.tx_cookie("abc") == "__Host-oauth_tx=abc; Path=/; Secure; HttpOnly; SameSite=Lax; Max-Age=600"
    assert oauth.clear_tx_cookie() == "__Host-oauth_tx=; Path=/; Secure; HttpOnly; SameSite=Lax; Max-Age=0"


# --- return_to (R10) -------------------------------------------------------------------------------

BYPASSES = [
    "//evil.com",
    "/\\evil.com",
    "\\\\evil.com",
    "\\/evil.com",
    "https://evil.com",
    "http:/evil.com",
    "http:evil.com",
    "javascript:alert(1)",
    "JaVaScRiPt:alert(1)",
    "data:text/html,<script>alert(1)</script>",
    "evil.com",
    "lab",
    "/%2f%2fevil.com",
    "/%2F%2Fevil.com",
    "%2F%2Fevil.com",
    "%2f/evil.com",
    "/%5cevil.com",
    "/%5Cevil.com",
    "%5c%5cevil.com",
    "/%252f%252fevil.com",  # double encoded
    "/%25252f%25252fevil.com",  # triple encoded
    "///evil.com",
    "/\t/evil.com",
    "/%09/evil.com",
    "/\n/evil.com",
    "/%0a/evil.com",
    "/%0d%0a/evil.com",
    "/%00",
    "/ /evil.com",
    "/%20/evil.com",
    " /lab",
    "/lab\x7f",
    "/.//evil.com",
    "/./evil.com/../",
    "/lab/../..//evil.com",
    "/lab//evil.com",
    "/\u3002evil.com",  # non-ASCII look-alikes are refused outright
    "/\uff0f\uff0fevil.com",
    "/%ef%bc%8f%ef%bc%8fevil.com",
    "/%c0%af%c0%afevil.com",  # overlong UTF-8
    "/lab\\..\\evil",
    "/" + "a" * 512,
]

ACCEPTED = [
    ("/", "/"),
    ("/lab", "/lab"),
    ("/lab?x=1#y", "/lab?x=1#y"),
    ("/a/b", "/a/b"),
    ("/lab/models/42?tab=metrics", "/lab/models/42?tab=metrics"),
    ("/lab?next=%2Fa", "/lab?next=%2Fa"),
    ("/lab#section-2", "/lab#section-2"),
    ("/a" * 256, "/a" * 256),  # exactly 512 characters
    ("", "/"),
    (None, "/"),
]


def test_there_are_enough_bypass_strings() -> None:
    assert len(BYPASSES) >= 25 and len(set(BYPASSES)) == len(BYPASSES)


@pytest.mark.parametrize("value", BYPASSES, ids=[repr(v)[:40] for v in BYPASSES])
def test_return_to_bypasses_are_refused(value: str) -> None:
    with pytest.raises(Problem) as info:
        oauth.validate_return_to(value)
    assert info.value.status == 400 and info.value.slug == "invalid-return-to"


@pytest.mark.parametrize(("value", "expected"), ACCEPTED, ids=[repr(v)[:40] for v, _ in ACCEPTED])
def test_same_site_paths_are_accepted(value: str | None, expected: str) -> None:
    assert oauth.validate_return_to(value) == expected


@pytest.mark.parametrize("value", [v for v, _ in ACCEPTED if v])
def test_accepted_paths_stay_on_the_lab_origin(value: str) -> None:
    location = oauth.lab_location(oauth.validate_return_to(value))
    lab = urllib.parse.urlsplit(config.settings().lab_url)
    target = urllib.parse.urlsplit(urllib.parse.urljoin(config.settings().lab_url + "/", location))
    assert (target.scheme, target.netloc) == (lab.scheme, lab.netloc)
