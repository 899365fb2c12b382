"""ES256 access tokens: issue, verify, refusals, key rotation (docs/security.md, sessions and tokens)."""

from __future__ import annotations

import hashlib
import hmac
import json
import types
from datetime import timedelta
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from hypothesis import example, given
from hypothesis import strategies as st
from jwt.algorithms import ECAlgorithm

from mllab.identity import tokens
from mllab.platform import clock, config
from tests.unit.helpers import b64url, b64url_json, private_key_set


def _settings() -> config.Settings:
    return config.settings()


def _signing_jwk() -> dict[str, Any]:
    """The first (original) key of the development key set."""
    return private_key_set()["keys"][0]


def _good_claims(**overrides: Any) -> dict[str, Any]:
    now = clock.timestamp()
    claims = {
        "sub": "user-1",
        "sid": "session-1",
        "iat": now,
        "exp": now + 600,
        "iss": _settings().token_issuer,
        "aud": _settings().token_audience,
        "jti": "jti-1",
    }
    claims.update(overrides)
    return claims


def _sign(claims: dict[str, Any], jwk: dict[str, Any] | None = None, **header: Any) -> str:
    jwk = jwk or _signing_jwk()
    headers = {"kid": jwk["kid"], "typ": tokens.TOKEN_TYPE, **header}
    return jwt.encode(claims, ECAlgorithm.from_jwk(jwk), algorithm="ES256", headers=headers)


def _write_secret(name: str, data: dict[str, Any]) -> None:
    path = config.local_secrets_dir() / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))


def _refused(token: str, match: str | None = None) -> tokens.TokenError:
    with pytest.raises(tokens.TokenError, match=match) as info:
        tokens.verify_access_token(token)
    return info.value


# --- roundtrip -----------------------------------------------------------------------------------


def test_issued_token_verifies_with_every_required_claim() -> None:
    issued = tokens.issue_access_token("user-42", "session-7")
    claims = tokens.verify_access_token(issued.token)

    assert set(tokens.REQUIRED_CLAIMS) <= set(claims)
    assert claims["sub"] == "user-42"
    assert claims["sid"] == "session-7"
    assert claims["iss"] == _settings().public_url
    assert claims["aud"] == _settings().token_audience
    assert claims["exp"] - claims["iat"] == config.LIMITS.access_token_ttl_s == issued.expires_in
    assert isinstance(claims["jti"], str) and len(claims["jti"]) >= 16
    assert claims == issued.claims


def test_issued_token_header_names_kid_type_and_es256() -> None:
    token = tokens.issue_access_token("u", "s").token
    header = jwt.get_unverified_header(token)
    assert header["alg"] == "ES256"
    assert header["typ"] == "at+jwt"
    assert header["kid"] == _signing_jwk()["kid"]


def test_each_token_has_a_fresh_jti() -> None:
    first = tokens.verify_access_token(tokens.issue_access_token("u", "s").token)
    second = tokens.verify_access_token(tokens.issue_access_token("u", "s").token)
    assert first["jti"] != second["jti"]


def test_extra_claims_are_kept_but_cannot_override_required_ones() -> None:
    issued = tokens.issue_access_token("user-1", "sid-1", role="admin", sub="attacker")
    claims = tokens.verify_access_token(issued.token)
    assert claims["role"] == "admin"
    assert claims["sub"] == "user-1"


# --- refusals ------------------------------------------------------------------------------------


def test_alg_none_is_refused() -> None:
    header = {"alg": "none", "typ": tokens.TOKEN_TYPE, "kid": _signing_jwk()["kid"]}
    token = f"{b64url_json(header)}.{b64url_json(_good_claims())}."
    error = _refused(token)
    assert "algorithm" in str(error)


def test_hs256_signed_with_the_public_key_pem_is_refused() -> None:
    """The classic key-confusion attack: the public key used as an HMAC secret."""
    public_key = ECAlgorithm.from_jwk(_signing_jwk()).public_key()
    pem = public_key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    header = {"alg": "HS256", "typ": tokens.TOKEN_TYPE, "kid": _signing_jwk()["kid"]}
    signing_input = f"{b64url_json(header)}.{b64url_json(_good_claims())}"
    signature = hmac.new(pem, signing_input.encode(), hashlib.sha256).digest()
    token = f"{signing_input}.{b64url(signature)}"
    error = _refused(token)
    assert "algorithm" in str(error)


def test_wrong_typ_is_refused() -> None:
    token = _sign(_good_claims(), typ="JWT")
    _refused(token, "not an access token")


def test_token_without_kid_is_refused() -> None:
    header = {"alg": "ES256", "typ": tokens.TOKEN_TYPE}
    key = ECAlgorithm.from_jwk(_signing_jwk())
    token = jwt.encode(_good_claims(), key, algorithm="ES256", headers=header)
    _refused(token, "names no key")


def test_expired_token_is_refused() -> None:
    token = tokens.issue_access_token("u", "s").token
    with clock.travel(by=timedelta(minutes=9)):
        assert tokens.verify_access_token(token)["sub"] == "u"
    with clock.travel(by=timedelta(minutes=11)):
        _refused(token, "expired")


def test_token_issued_in_the_future_is_refused() -> None:
    with clock.travel(by=timedelta(minutes=5)):
        token = tokens.issue_access_token("u", "s").token
    _refused(token, "future")


def test_small_clock_skew_between_instances_is_tolerated() -> None:
    with clock.travel(by=timedelta(seconds=tokens.IAT_LEEWAY_S // 2)):
        token = tokens.issue_access_token("u", "s").token
    assert tokens.verify_access_token(token)["sub"] == "u"


def test_wrong_audience_is_refused() -> None:
    _refused(_sign(_good_claims(aud="another-api")), "audience")


def test_wrong_issuer_is_refused() -> None:
    _refused(_sign(_good_claims(iss="https://evil.example")), "issuer")


def test_hand_signed_valid_token_is_accepted() -> None:
    """Control for the refusals below: the hand-made token itself is fine."""
    claims = tokens.verify_access_token(_sign(_good_claims()))
    assert claims["sub"] == "user-1"


@pytest.mark.parametrize("claim", tokens.REQUIRED_CLAIMS)
def test_token_missing_a_required_claim_is_refused(claim: str) -> None:
    claims = _good_claims()
    del claims[claim]
    error = _refused(_sign(claims))
    assert claim in str(error)


@pytest.mark.parametrize(
    ("claim", "value"),
    [
        ("sub", ""),
        ("sid", 5),
        ("jti", ["x"]),
        ("iat", "123"),
        ("exp", 1.5e12),
        ("exp", True),
    ],
)
def test_token_with_a_malformed_claim_is_refused(claim: str, value: Any) -> None:
    _refused(_sign(_good_claims(**{claim: value})))


def test_unknown_kid_is_refused() -> None:
    token = _sign(_good_claims(), kid="no-such-key")
    _refused(token, "unknown key")


def test_tampered_payload_is_refused() -> None:
    token = tokens.issue_access_token("user-1", "s").token
    header, payload, signature = token.split(".")
    claims = json.loads(jwt.utils.base64url_decode(payload))
    claims["sub"] = "admin"
    _refused(f"{header}.{b64url_json(claims)}.{signature}", "signature")


def test_tampered_signature_is_refused() -> None:
    token = tokens.issue_access_token("user-1", "s").token
    header, payload, signature = token.split(".")
    raw = bytearray(jwt.utils.base64url_decode(signature))
    raw[0] ^= 0x01
    _refused(f"{header}.{payload}.{b64url(bytes(raw))}", "signature")


def test_token_signed_by_a_foreign_key_claiming_an_existing_kid_is_refused() -> None:
    foreign = tokens.new_private_jwk()
    foreign["kid"] = _signing_jwk()["kid"]
    _refused(_sign(_good_claims(), jwk=foreign), "signature")


@pytest.mark.parametrize("token", ["", "abc", "a.b", "a.b.c", "....", "eyJ.eyJ.", "Bearer x.y.z"])
def test_garbage_is_refused(token: str) -> None:
    _refused(token)


def test_refusal_message_never_echoes_the_token() -> None:
    token = _sign(_good_claims(aud="another-api"))
    error = _refused(token)
    for part in token.split("."):
        assert part not in str(error)


# --- key sets and rotation -----------------------------------------------------------------------


def test_public_key_set_never_contains_the_private_part() -> None:
    private = tokens.rotate(tokens.rotate(tokens.new_key_set()))
    public = tokens.public_key_set(private)
    assert len(public["keys"]) == 3
    for jwk in public["keys"]:
        assert "d" not in jwk
        assert jwk["kty"] == "EC" and jwk["crv"] == "P-256" and jwk["alg"] == "ES256"
    assert [k["kid"] for k in public["keys"]] == [k["kid"] for k in private["keys"]]
    # The generated development secret obeys the same rule.
    assert '"d"' not in config.secret(config.PUBLIC_KEYS)
    assert all("d" not in k for k in tokens.public_jwks()["keys"])


def test_kid_is_the_rfc7638_thumbprint() -> None:
    jwk = tokens.new_private_jwk()
    canonical = json.dumps({m: jwk[m] for m in ("crv", "kty", "x", "y")}, separators=(",", ":"), sort_keys=True)
    assert jwk["kid"] == b64url(hashlib.sha256(canonical.encode()).digest())


def test_rotate_keeps_old_keys_and_adds_a_new_one() -> None:
    original = tokens.new_key_set()
    with clock.travel(by=timedelta(minutes=3)):
        rotated = tokens.rotate(original)
        now = clock.timestamp()
    retired = dict(rotated["keys"][0])
    assert retired.pop("retired_at") == now
    assert retired == original["keys"][0]
    assert len(rotated["keys"]) == 2
    assert rotated["keys"][1]["kid"] != original["keys"][0]["kid"]
    assert "retired_at" not in rotated["keys"][1] and rotated["keys"][1]["created_at"] == now
    # a second rotation keeps the first retirement date
    assert tokens.rotate(rotated)["keys"][0]["retired_at"] == now


def _rotate_secret_files() -> dict[str, Any]:
    rotated = tokens.rotate(private_key_set())
    _write_secret(config.SIGNING_KEYS, rotated)
    _write_secret(config.PUBLIC_KEYS, tokens.public_key_set(rotated))
    return rotated


def test_rotation_old_tokens_still_verify_and_new_tokens_use_the_new_kid() -> None:
    old_kid = _signing_jwk()["kid"]
    old_token = tokens.issue_access_token("user-1", "s").token
    assert jwt.get_unverified_header(old_token)["kid"] == old_kid

    rotated = _rotate_secret_files()  # rotated within the same second as the first key was made
    new_kid = rotated["keys"][-1]["kid"]
    tokens.reset_caches()  # a fresh instance reads the rotated secrets

    new_token = tokens.issue_access_token("user-2", "s").token
    assert jwt.get_unverified_header(new_token)["kid"] == new_kid != old_kid
    assert tokens.verify_access_token(old_token)["sub"] == "user-1"
    assert tokens.verify_access_token(new_token)["sub"] == "user-2"
    assert {k["kid"] for k in tokens.public_jwks()["keys"]} == {old_kid, new_kid}


def test_signer_prefers_the_newest_key_by_created_at() -> None:
    older = tokens.new_private_jwk()
    newer = tokens.new_private_jwk()
    older["created_at"], newer["created_at"] = 1_000, 2_000
    key_set = {"keys": [newer, older]}  # the list order does not decide
    _write_secret(config.SIGNING_KEYS, key_set)
    _write_secret(config.PUBLIC_KEYS, tokens.public_key_set(key_set))
    token = tokens.issue_access_token("u", "s").token
    assert jwt.get_unverified_header(token)["kid"] == newer["kid"]


class _FakeMonotonic:
    def __init__(self) -> None:
        self.now = 1_000.0

    def monotonic(self) -> float:
        return self.now


def _count_public_reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    reads: list[str] = []
    real_secret = config.secret

    def counting_secret(name: str) -> str:
        if name == config.PUBLIC_KEYS:
            reads.append(name)
        return real_secret(name)

    monkeypatch.setattr(config, "secret", counting_secret)
    return reads


def test_verifier_reloads_public_keys_on_unknown_kid_at_most_once_per_interval(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = _FakeMonotonic()
    monkeypatch.setattr(tokens, "time", types.SimpleNamespace(monotonic=fake.monotonic))
    reads = _count_public_reads(monkeypatch)

    tokens.verify_access_token(tokens.issue_access_token("u", "s").token)
    assert len(reads) == 1

    # Known kid: no re-read, however much time passes.
    fake.now += 10 * tokens.RELOAD_INTERVAL_S
    tokens.verify_access_token(tokens.issue_access_token("u", "s").token)
    assert len(reads) == 1

    # A rotation published a new key; a token names it.
    fake.now = 5_000.0
    rotated = _rotate_secret_files()
    token_new_key = _sign(_good_claims(), jwk=rotated["keys"][-1])
    tokens.verify_access_token(token_new_key)  # unknown kid, interval elapsed: re-read, then verifies
    assert len(reads) == 2

    # Unknown kids within the interval do not hammer the secret store.
    for _ in range(5):
        _refused(_sign(_good_claims(), kid="unknown-kid"), "unknown key")
    fake.now += tokens.RELOAD_INTERVAL_S - 1
    _refused(_sign(_good_claims(), kid="unknown-kid"), "unknown key")
    assert len(reads) == 2

    # Once the interval has passed, one more re-read is allowed.
    fake.now += 1
    _refused(_sign(_good_claims(), kid="unknown-kid"), "unknown key")
    assert len(reads) == 3


def test_verifier_does_not_see_a_new_kid_until_the_interval_has_passed(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = _FakeMonotonic()
    monkeypatch.setattr(tokens, "time", types.SimpleNamespace(monotonic=fake.monotonic))
    tokens.verify_access_token(tokens.issue_access_token("u", "s").token)  # loads the public set

    rotated = _rotate_secret_files()
    token_new_key = _sign(_good_claims(), jwk=rotated["keys"][-1])
    fake.now += tokens.RELOAD_INTERVAL_S / 2
    _refused(token_new_key, "unknown key")
    fake.now += tokens.RELOAD_INTERVAL_S / 2
    assert tokens.verify_access_token(token_new_key)["sub"] == "user-1"


def test_private_key_set_in_the_public_slot_is_a_config_error() -> None:
    _write_secret(config.PUBLIC_KEYS, private_key_set())
    with pytest.raises(config.ConfigError):
        tokens.verify_access_token(_sign(_good_claims()))


# --- fuzz ----------------------------------------------------------------------------------------

_SEGMENT = st.one_of(
    st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_=", max_size=60),
    st.binary(max_size=60).map(b64url),
    st.dictionaries(
        st.sampled_from(["alg", "typ", "kid", "sub", "aud", "exp", "iat", "crit", "b64"]),
        st.one_of(
            st.none(),
            st.booleans(),
            st.integers(),
            st.floats(allow_nan=False),
            st.text(max_size=10),
            st.lists(st.integers(), max_size=2),
        ),
        max_size=5,
    ).map(b64url_json),
    st.fixed_dictionaries(
        {"alg": st.just("ES256"), "typ": st.just("at+jwt"), "kid": st.sampled_from(["x", "unknown"])}
    ).map(b64url_json),
)


@given(st.one_of(st.text(max_size=200), st.text(alphabet=st.characters(codec=None), max_size=200)))
@example("\ud800.eyJ.x")  # a lone surrogate cannot be encoded as UTF-8
@example("eyJhbGciOiJFUzI1NiJ9.\udfff.x")
def test_arbitrary_text_raises_only_token_error(text: str) -> None:
    with pytest.raises(tokens.TokenError):
        tokens.verify_access_token(text)


@given(st.tuples(_SEGMENT, _SEGMENT, _SEGMENT).map(".".join))
def test_arbitrary_three_part_strings_raise_only_token_error(token: str) -> None:
    with pytest.raises(tokens.TokenError):
        tokens.verify_access_token(token)


@given(payload=_SEGMENT, signature=_SEGMENT)
def test_valid_header_with_arbitrary_payload_and_signature_raises_only_token_error(
    payload: str, signature: str
) -> None:
    header = b64url_json({"alg": "ES256", "typ": "at+jwt", "kid": _signing_jwk()["kid"]})
    with pytest.raises(tokens.TokenError):
        tokens.verify_access_token(f"{header}.{payload}.{signature}")


def test_warm_signer_picks_up_a_rotation_after_the_refresh_interval(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = _FakeMonotonic()
    monkeypatch.setattr(tokens.time, "monotonic", fake.monotonic)
    old_kid = _signing_jwk()["kid"]
    assert jwt.get_unverified_header(tokens.issue_access_token("u", "s").token)["kid"] == old_kid

    new_kid = _rotate_secret_files()["keys"][-1]["kid"]  # no reset_caches(): the instance stays warm
    fake.now += tokens.SIGNER_REFRESH_S - 1
    assert jwt.get_unverified_header(tokens.issue_access_token("u", "s").token)["kid"] == old_kid
    fake.now += 2
    token = tokens.issue_access_token("u", "s").token
    assert jwt.get_unverified_header(token)["kid"] == new_kid
    assert tokens.verify_access_token(token)["sub"] == "u"


def test_the_published_key_set_is_what_its_route_model_describes() -> None:
    """GET /.well-known/jwks.json sends public_jwks() as is (its path loads no pydantic): it must be the
    route's model, field for field, with no private member."""
    from mllab.identity import schemas

    published = tokens.public_jwks()
    assert published["keys"]
    assert schemas.Jwks.model_validate(published).model_dump(mode="json") == published


# --- tokens checked before -------------------------------------------------------------------------


def _count_signature_checks(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    checked: list[str] = []
    real = tokens._signed_claims

    def counting(token: str, key: Any, **kwargs: Any) -> dict[str, Any]:
        checked.append(token)
        return real(token, key, **kwargs)

    monkeypatch.setattr(tokens, "_signed_claims", counting)
    return checked


def test_a_token_presented_again_is_not_checked_again_and_gets_its_own_claims(monkeypatch: pytest.MonkeyPatch) -> None:
    checked = _count_signature_checks(monkeypatch)
    token = tokens.issue_access_token("u", "s").token
    first = tokens.verify_access_token(token)
    first["sub"] = "someone-else"  # a caller changing its copy changes nothing for the next
    assert tokens.verify_access_token(token)["sub"] == "u"
    assert checked == [token]
    other = tokens.issue_access_token("u", "s").token
    assert tokens.verify_access_token(other)["jti"] != first["jti"]
    assert checked == [token, other]


def test_a_token_checked_before_still_expires() -> None:
    token = tokens.issue_access_token("u", "s").token
    assert tokens.verify_access_token(token)["sub"] == "u"
    with clock.travel(by=timedelta(minutes=11)):
        _refused(token, "expired")


def test_a_token_checked_before_is_refused_once_its_key_leaves_the_public_set(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = _FakeMonotonic()
    monkeypatch.setattr(tokens, "time", types.SimpleNamespace(monotonic=fake.monotonic))
    old_token = tokens.issue_access_token("u", "s").token
    assert tokens.verify_access_token(old_token)["sub"] == "u"

    replacement = tokens.new_key_set()  # the old key dropped from both secrets
    _write_secret(config.SIGNING_KEYS, replacement)
    _write_secret(config.PUBLIC_KEYS, tokens.public_key_set(replacement))
    fake.now += tokens.RELOAD_INTERVAL_S
    new_token = _sign(_good_claims(), jwk=replacement["keys"][0])
    assert tokens.verify_access_token(new_token)["sub"] == "user-1"  # its unknown kid re-read the set
    _refused(old_token, "unknown key")


def test_a_token_checked_for_one_audience_is_checked_again_for_another(monkeypatch: pytest.MonkeyPatch) -> None:
    token = tokens.issue_access_token("u", "s").token
    assert tokens.verify_access_token(token)["sub"] == "u"
    monkeypatch.setenv("MLLAB_TOKEN_AUDIENCE", "another-api")
    config.reload()
    _refused(token, "audience")


def test_the_remembered_tokens_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tokens, "VERIFIED_MAX", 3)
    for _ in range(7):
        tokens.verify_access_token(tokens.issue_access_token("u", "s").token)
    assert 0 < len(tokens._verifier._verified) <= 3
