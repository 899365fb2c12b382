"""Signed URLs, both signers: the development key (local) and IAM signBlob (production, through a fake
IAM server that checks the exact request and signs with its own RSA key).

Every URL is verified the way GCS would: the V4 canonical request and string-to-sign are rebuilt here
from the URL and the headers the client will send (independently of google-cloud-storage), and the
X-Goog-Signature is checked against the signer's public key."""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlsplit

import google.auth
import google.auth.credentials
import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from mllab.api import http
from mllab.files import objects, storage
from mllab.platform import clock, config

SA_EMAIL = "fn-signed-urls@mllab-prod.iam.gserviceaccount.com"
TOKEN = "ya29.fake-access-token-for-tests"
PROD_BUCKET = "mllab-prod-objects"
PRODUCTION = {
    "MLLAB_ENV": "production",
    "MLLAB_PROJECT": "mllab-prod",
    "MLLAB_BUCKET": PROD_BUCKET,
    "MLLAB_PUBLIC_URL": "https://lab.example.com",
    "MLLAB_CORS_ORIGINS": "https://lab.example.com",
    "MLLAB_LAB_URL": "https://lab.example.com",
    "MLLAB_OIDC_ISSUER": "https://accounts.google.com",
}
UID, PID, MID = "a" * 32, "b" * 32, "c" * 32
MODEL = str(objects.model_file(UID, PID, MID, 3, "model"))
WEIGHTS = str(objects.model_file(UID, PID, MID, 3, "weights"))


# --- an independent V4 verifier ------------------------------------------------------------------


def _enc(value: str) -> str:
    return quote(value, safe="-_.~")  # RFC 3986 unreserved characters stay as they are


def string_to_sign(url: str, method: str, sent_headers: dict[str, str]) -> str:
    """GOOG4-RSA-SHA256 string-to-sign for a request with this URL, method and headers (plus Host)."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True, strict_parsing=True)
    params = dict(query)
    canonical_query = "&".join(sorted(f"{_enc(k)}={_enc(v)}" for k, v in query if k != "X-Goog-Signature"))
    signed = params["X-Goog-SignedHeaders"].split(";")
    assert signed == sorted(signed)
    sent = {k.lower(): " ".join(v.split()) for k, v in sent_headers.items()}
    sent["host"] = parts.netloc
    # A signed header the request does not send cannot match: GCS rejects the request.
    canonical_headers = "".join(f"{name}:{sent.get(name, '')}\n" for name in signed)
    canonical_request = "\n".join(
        [method, parts.path, canonical_query, canonical_headers, ";".join(signed), "UNSIGNED-PAYLOAD"]
    )
    scope = params["X-Goog-Credential"].split("/", 1)[1]
    return "\n".join(
        ["GOOG4-RSA-SHA256", params["X-Goog-Date"], scope, hashlib.sha256(canonical_request.encode()).hexdigest()]
    )


def verifies(public_key: rsa.RSAPublicKey, url: str, method: str, sent_headers: dict[str, str]) -> bool:
    signature = bytes.fromhex(dict(parse_qsl(urlsplit(url).query))["X-Goog-Signature"])
    try:
        public_key.verify(
            signature, string_to_sign(url, method, sent_headers).encode(), padding.PKCS1v15(), hashes.SHA256()
        )
    except InvalidSignature:
        return False
    return True


def query(url: str) -> dict[str, str]:
    return dict(parse_qsl(urlsplit(url).query, keep_blank_values=True))


# --- a fake IAM Credentials API ------------------------------------------------------------------


@functools.cache
def _iam_key() -> rsa.RSAPrivateKey:
    """The fake IAM's key: not the development key, generated once per test run."""
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@dataclass
class FakeIam:
    """signBlob over HTTP on 127.0.0.1. Signs only a request exactly as IAM expects it; `script` holds
    the answers to give, in order ("ok", a status code, "slow", "no-signature"), then "ok"."""

    key: rsa.RSAPrivateKey = field(default_factory=lambda: _iam_key())
    requests: list[dict[str, Any]] = field(default_factory=list)
    script: list[Any] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)
    url: str = ""

    def answer(self, handler: BaseHTTPRequestHandler) -> tuple[int, dict[str, Any]]:
        raw = handler.rfile.read(int(handler.headers.get("Content-Length", "0")))
        request = {
            "method": handler.command,
            "path": handler.path,
            "headers": dict(handler.headers.items()),
            "body": raw,
        }
        self.requests.append(request)
        step = self.script.pop(0) if self.script else "ok"
        if step == "slow":
            self.release.wait(10)
        if isinstance(step, int):
            status = {403: "PERMISSION_DENIED", 429: "RESOURCE_EXHAUSTED"}.get(step, "INTERNAL")
            return step, {
                "error": {"code": step, "status": status, "message": "Permission 'iam.serviceAccounts.signBlob' denied"}
            }
        problems, payload = self.check(handler, raw)
        if problems:
            return 400, {"error": {"code": 400, "message": "; ".join(problems)}}
        if step == "no-signature":
            return 200, {"keyId": "fake-key-1"}
        signature = self.key.sign(payload, padding.PKCS1v15(), hashes.SHA256())
        return 200, {"keyId": "fake-key-1", "signedBlob": base64.b64encode(signature).decode()}

    @staticmethod
    def check(handler: BaseHTTPRequestHandler, raw: bytes) -> tuple[list[str], bytes]:
        """How the request differs from a signBlob call as IAM expects it (nothing when exact), and the
        payload it asks to sign."""
        problems = []
        if handler.command != "POST":
            problems.append(f"method {handler.command}")
        if handler.path != f"/v1/projects/-/serviceAccounts/{SA_EMAIL}:signBlob":
            problems.append(f"path {handler.path}")
        if handler.headers.get("Authorization") != f"Bearer {TOKEN}":
            problems.append("authorization")
        if not handler.headers.get("Content-Type", "").startswith("application/json"):
            problems.append("content type")
        payload = b""
        try:
            body = json.loads(raw)
            payload = base64.b64decode(body["payload"], validate=True)
            if set(body) != {"payload"}:
                problems.append(f"body fields {sorted(body)}")
        except (ValueError, KeyError, TypeError):
            problems.append("body")
        return problems, payload

    @property
    def public_key(self) -> rsa.RSAPublicKey:
        return self.key.public_key()


@pytest.fixture
def fake_iam(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeIam]:
    fake = FakeIam()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            status, body = fake.answer(self)
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_PUT = do_PATCH = do_POST  # recorded, and refused by the exact-request check

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    fake.url = f"http://127.0.0.1:{server.server_address[1]}"
    monkeypatch.setattr(storage, "IAM_ENDPOINT", fake.url)
    yield fake
    fake.release.set()
    server.shutdown()
    server.server_close()


class FakeDefaultCredentials(google.auth.credentials.Credentials):
    """What google.auth.default() gives on Cloud Functions: no key; the email is "default" until a
    refresh reads it from the metadata server."""

    def __init__(self, fail: BaseException | None = None) -> None:
        super().__init__()
        self.email = "default"
        self.refreshes = 0
        self.fail = fail

    @property
    def service_account_email(self) -> str:
        return self.email

    def refresh(self, request: Any) -> None:
        self.refreshes += 1
        if self.fail is not None:
            raise self.fail
        self.token = TOKEN
        self.expiry = datetime.now(UTC).replace(tzinfo=None) + timedelta(hours=1)
        self.email = SA_EMAIL


@dataclass
class DefaultAuth:
    credentials: FakeDefaultCredentials
    scopes: list[Any]


@pytest.fixture(autouse=True)
def fresh_storage() -> Iterator[None]:
    storage.reset()
    yield
    storage.reset()


@pytest.fixture
def default_auth(monkeypatch: pytest.MonkeyPatch) -> DefaultAuth:
    auth = DefaultAuth(FakeDefaultCredentials(), [])

    def fake_default(scopes: Any = None, **kwargs: Any) -> tuple[Any, str]:
        auth.scopes.append(scopes)
        return auth.credentials, "mllab-prod"

    monkeypatch.setattr(google.auth, "default", fake_default)
    return auth


@pytest.fixture
def production(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, fake_iam: FakeIam, default_auth: DefaultAuth
) -> FakeIam:
    for key, value in PRODUCTION.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("MLLAB_SECRETS_DIR", str(tmp_path / "mounted"))
    config.reload()
    assert config.settings().is_production
    return fake_iam


@dataclass
class Signer:
    name: str
    public_key: rsa.RSAPublicKey
    email: str
    bucket: str
    host: str


@pytest.fixture(params=["local", "production"])
def signer(request: pytest.FixtureRequest) -> Signer:
    if request.param == "local":
        info = json.loads(config.secret(config.DEV_SIGNER))
        key = serialization.load_pem_private_key(info["private_key"].encode(), password=None)
        return Signer("local", key.public_key(), info["client_email"], "mllab-local", "storage.googleapis.com")
    fake = request.getfixturevalue("production")
    return Signer("production", fake.public_key, SA_EMAIL, PROD_BUCKET, "storage.googleapis.com")


# --- both signers ---------------------------------------------------------------------------------


def test_upload_url_verifies_against_the_signers_public_key(signer: Signer) -> None:
    before = clock.now()
    signed = storage.signed_upload_url(MODEL, "application/json", 2 * config.MiB)
    after = clock.now()

    assert signed.method == "PUT" and signed.object == MODEL
    assert signed.headers == {
        "Content-Type": "application/json",
        "x-goog-content-length-range": "0,2097152",
        "x-goog-if-generation-match": "0",
    }
    assert verifies(signer.public_key, signed.url, "PUT", signed.headers)
    parts, q = urlsplit(signed.url), query(signed.url)
    assert parts.scheme == "https" and parts.netloc == signer.host
    assert parts.path == f"/{signer.bucket}/{MODEL}"
    assert q["X-Goog-Algorithm"] == "GOOG4-RSA-SHA256"
    assert q["X-Goog-Expires"] == "600"
    assert q["X-Goog-SignedHeaders"] == "content-type;host;x-goog-content-length-range;x-goog-if-generation-match"
    date = datetime.strptime(q["X-Goog-Date"], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    assert q["X-Goog-Credential"] == f"{signer.email}/{date:%Y%m%d}/auto/storage/goog4_request"
    assert before + storage.URL_TTL <= signed.expires_at <= after + storage.URL_TTL
    assert abs(date + timedelta(seconds=600) - signed.expires_at) < timedelta(seconds=5)


def test_upload_url_is_bound_to_its_content_type_and_size_cap(signer: Signer) -> None:
    signed = storage.signed_upload_url(WEIGHTS, "application/octet-stream", 50 * config.MiB)
    assert verifies(signer.public_key, signed.url, "PUT", signed.headers)
    for other in ("text/csv", "application/json", "text/html", "application/octet-stream; x=1"):
        assert not verifies(signer.public_key, signed.url, "PUT", {**signed.headers, "Content-Type": other})
    wider = {**signed.headers, "x-goog-content-length-range": f"0,{50 * config.MiB + 1}"}
    assert not verifies(signer.public_key, signed.url, "PUT", wider)
    # A second upload with the same URL cannot drop the create-only precondition or change it.
    for generation in (None, "1", "1796634397598066"):
        changed = {k: v for k, v in signed.headers.items() if k != "x-goog-if-generation-match"}
        if generation is not None:
            changed["x-goog-if-generation-match"] = generation
        assert not verifies(signer.public_key, signed.url, "PUT", changed)
    assert not verifies(signer.public_key, signed.url, "PUT", {"Content-Type": "application/octet-stream"})
    assert not verifies(signer.public_key, signed.url, "GET", signed.headers)
    # Another object under the same signature does not verify either.
    moved = signed.url.replace("/weights.bin?", "/model.json?")
    assert moved != signed.url and not verifies(signer.public_key, moved, "PUT", signed.headers)


def test_download_url_is_get_with_no_content_type_pinned(signer: Signer) -> None:
    signed = storage.signed_download_url(WEIGHTS)
    assert signed.method == "GET" and signed.headers == {} and signed.object == WEIGHTS
    q = query(signed.url)
    assert q["X-Goog-SignedHeaders"] == "host"
    assert q["X-Goog-Expires"] == "600"
    assert urlsplit(signed.url).path == f"/{signer.bucket}/{WEIGHTS}"
    assert verifies(signer.public_key, signed.url, "GET", {})
    # Unsigned headers do not matter to a GET; the method and the object do.
    assert verifies(signer.public_key, signed.url, "GET", {"Accept": "*/*"})
    assert not verifies(signer.public_key, signed.url, "PUT", {})
    assert not verifies(signer.public_key, signed.url.replace("/weights.bin?", "/model.json?"), "GET", {})


def test_object_path_is_exactly_the_percent_encoded_object_name(signer: Signer) -> None:
    name = "users/x y/ü#?a+b%2F~c.csv"
    signed = storage.signed_upload_url(name, "text/csv", 10)
    path = urlsplit(signed.url).path
    assert path == f"/{signer.bucket}/users/x%20y/%C3%BC%23%3Fa%2Bb%252F~c.csv"
    assert unquote(path) == f"/{signer.bucket}/{name}"
    assert signed.object == name
    assert verifies(signer.public_key, signed.url, "PUT", signed.headers)


# --- local ----------------------------------------------------------------------------------------


def test_local_signing_uses_the_emulator_host_and_never_calls_iam(
    monkeypatch: pytest.MonkeyPatch, fake_iam: FakeIam
) -> None:
    def no_default_credentials(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("local signing looked for default credentials")

    monkeypatch.setattr(google.auth, "default", no_default_credentials)
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", "127.0.0.1:4443")
    info = json.loads(config.secret(config.DEV_SIGNER))
    public_key = serialization.load_pem_private_key(info["private_key"].encode(), password=None).public_key()

    up = storage.signed_upload_url(MODEL, "application/json", 1024)
    down = storage.signed_download_url(MODEL)
    for signed in (up, down):
        assert signed.url.startswith(f"http://127.0.0.1:4443/mllab-local/{MODEL}?")
        assert verifies(public_key, signed.url, signed.method, signed.headers)
        assert query(signed.url)["X-Goog-Credential"].startswith("dev-signer@demo-mllab.iam.gserviceaccount.com/")
    assert fake_iam.requests == []


# --- production: IAM signBlob ---------------------------------------------------------------------


def test_production_signs_through_iam_with_the_exact_request(production: FakeIam, default_auth: DefaultAuth) -> None:
    signed = storage.signed_upload_url(MODEL, "application/json", 2048)

    (request,) = production.requests
    assert request["method"] == "POST"
    assert request["path"] == f"/v1/projects/-/serviceAccounts/{SA_EMAIL}:signBlob"
    assert request["headers"]["Authorization"] == f"Bearer {TOKEN}"
    body = json.loads(request["body"])
    assert set(body) == {"payload"}
    # The payload is exactly the V4 string-to-sign of the URL it returned.
    assert base64.b64decode(body["payload"]).decode() == string_to_sign(signed.url, "PUT", signed.headers)
    assert verifies(production.public_key, signed.url, "PUT", signed.headers)
    assert default_auth.scopes == [[storage.CLOUD_PLATFORM_SCOPE]]
    assert default_auth.credentials.refreshes == 1


def test_production_token_is_reused_until_it_goes_stale(production: FakeIam, default_auth: DefaultAuth) -> None:
    storage.signed_upload_url(MODEL, "application/json", 1)
    storage.signed_download_url(MODEL)
    assert default_auth.credentials.refreshes == 1 and len(default_auth.scopes) == 1
    default_auth.credentials.expiry = datetime.now(UTC).replace(tzinfo=None) - timedelta(seconds=1)
    signed = storage.signed_download_url(MODEL)
    assert default_auth.credentials.refreshes == 2
    assert verifies(production.public_key, signed.url, "GET", {})
    assert len(production.requests) == 3


def test_production_never_uses_the_development_key(production: FakeIam, tmp_path: Path) -> None:
    # Even with a development key lying in the mounted secrets, production signs as its own account.
    mounted = tmp_path / "mounted"
    mounted.mkdir()
    dev = storage.new_dev_service_account("mllab-prod")
    (mounted / config.DEV_SIGNER).write_text(json.dumps(dev))
    signed = storage.signed_upload_url(MODEL, "application/json", 1)
    assert query(signed.url)["X-Goog-Credential"].startswith(f"{SA_EMAIL}/")
    assert verifies(production.public_key, signed.url, "PUT", signed.headers)
    dev_public = serialization.load_pem_private_key(dev["private_key"].encode(), password=None).public_key()
    assert not verifies(dev_public, signed.url, "PUT", signed.headers)
    with pytest.raises(config.ConfigError, match="development key"):
        storage._local_signer()


def test_production_without_default_credentials_is_a_config_error(
    production: FakeIam, monkeypatch: pytest.MonkeyPatch
) -> None:
    import google.auth.exceptions

    def missing(*args: Any, **kwargs: Any) -> Any:
        raise google.auth.exceptions.DefaultCredentialsError("no ADC")

    monkeypatch.setattr(google.auth, "default", missing)
    with pytest.raises(config.ConfigError, match="default credentials"):
        storage.signed_upload_url(MODEL, "application/json", 1)
    assert production.requests == []


def test_production_credentials_without_a_service_account_are_a_config_error(
    production: FakeIam, default_auth: DefaultAuth, monkeypatch: pytest.MonkeyPatch
) -> None:
    # e.g. a user's gcloud login instead of a service account: nothing to sign as.
    monkeypatch.setattr(FakeDefaultCredentials, "service_account_email", property(lambda self: None))
    with pytest.raises(config.ConfigError, match="no service account"):
        storage.signed_download_url(MODEL)
    assert production.requests == []


# --- production: IAM failures are 503s, never URLs --------------------------------------------------


def _assert_outage(exc: BaseException) -> None:
    assert isinstance(exc, storage.SigningUnavailable)
    assert http.dependency_outage(exc)
    assert TOKEN not in str(exc)


def test_iam_permission_denied_is_an_outage_and_not_retried(production: FakeIam) -> None:
    production.script = [403]
    with pytest.raises(storage.SigningUnavailable) as caught:
        storage.signed_upload_url(MODEL, "application/json", 1)
    _assert_outage(caught.value)
    assert "403" in str(caught.value) and "iam.serviceAccounts.signBlob" in str(caught.value)
    assert len(production.requests) == 1


def test_iam_server_errors_are_retried_then_an_outage(production: FakeIam) -> None:
    production.script = [500, 503, 500]
    with pytest.raises(storage.SigningUnavailable) as caught:
        storage.signed_upload_url(MODEL, "application/json", 1)
    _assert_outage(caught.value)
    assert len(production.requests) == 3


def test_a_transient_iam_error_then_success_gives_a_valid_url(production: FakeIam) -> None:
    production.script = [429]
    signed = storage.signed_upload_url(MODEL, "application/json", 1)
    assert len(production.requests) == 2
    assert verifies(production.public_key, signed.url, "PUT", signed.headers)


def test_iam_timeout_is_an_outage_within_the_deadline(production: FakeIam, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLLAB_RPC_TIMEOUT_S", "0.5")
    config.reload()
    production.script = ["slow"]
    started = time.monotonic()
    with pytest.raises(storage.SigningUnavailable) as caught:
        storage.signed_upload_url(MODEL, "application/json", 1)
    elapsed = time.monotonic() - started
    _assert_outage(caught.value)
    assert 0.4 <= elapsed < 2.0
    assert len(production.requests) == 1


def test_iam_unreachable_is_an_outage(production: FakeIam, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLLAB_RPC_TIMEOUT_S", "1")
    config.reload()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed_port = s.getsockname()[1]
    monkeypatch.setattr(storage, "IAM_ENDPOINT", f"http://127.0.0.1:{closed_port}")
    started = time.monotonic()
    with pytest.raises(storage.SigningUnavailable) as caught:
        storage.signed_download_url(MODEL)
    _assert_outage(caught.value)
    assert time.monotonic() - started < 3.0


def test_iam_answer_without_a_signature_is_an_outage(production: FakeIam) -> None:
    production.script = ["no-signature"]
    with pytest.raises(storage.SigningUnavailable) as caught:
        storage.signed_download_url(MODEL)
    _assert_outage(caught.value)


def test_token_refresh_failure_is_an_outage(production: FakeIam, default_auth: DefaultAuth) -> None:
    import google.auth.exceptions

    default_auth.credentials.fail = google.auth.exceptions.RefreshError("metadata server unavailable")
    with pytest.raises(storage.SigningUnavailable) as caught:
        storage.signed_upload_url(MODEL, "application/json", 1)
    _assert_outage(caught.value)
    assert production.requests == []


def test_negative_size_cap_is_refused() -> None:
    with pytest.raises(ValueError):
        storage.signed_upload_url(MODEL, "application/json", -1)
