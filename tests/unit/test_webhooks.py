"""mllab.billing.webhooks: offline PayPal signature verification with self-made certificates, the certificate
URL allow-list (checked before any fetch), the certificate cache, and a real TLS fetch."""

from __future__ import annotations

import base64
import functools
import http.server
import ipaddress
import itertools
import json
import ssl
import threading
import time
import zlib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import NameOID
from werkzeug.datastructures import Headers

from mllab.billing import webhooks
from mllab.billing.webhooks import CertificateUnavailable, InvalidSignature
from mllab.platform import clock, config

WEBHOOK_ID = "8PT597110X687430LKGECATA"
PAYPAL_CN = "messageverificationcerts.sandbox.paypal.com"
CERT_URL = "https://api.sandbox.paypal.com/v1/notifications/certs/CERT-360caa42-fca2a594-5edc0ebc"
BODY = json.dumps(
    {
        "id": "WH-58D329510W468432D-8HN650336L201105X",
        "event_type": "BILLING.SUBSCRIPTION.ACTIVATED",
        "resource": {"id": "I-BW452GLLEP1G", "status": "ACTIVE"},
    }
).encode()


# --- certificates ----------------------------------------------------------------------------------


@functools.cache
def rsa_key(name: str, bits: int = 2048) -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


def make_cert(
    cn: str = PAYPAL_CN,
    key: Any = None,
    *,
    days: tuple[int, int] = (-1, 365),
    issuer: tuple[x509.Certificate, Any] | None = None,
    ca: bool = False,
    ip: str | None = None,
) -> x509.Certificate:
    key = key if key is not None else rsa_key("signer")
    now = datetime.now(UTC)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    issuer_name, signing_key = (issuer[0].subject, issuer[1]) if issuer else (subject, key)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now + timedelta(days=days[0]))
        .not_valid_after(now + timedelta(days=days[1]))
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    if issuer:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer[1].public_key()), critical=False
        )
    if ca:
        builder = builder.add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True).add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    if ip:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(ip))]), critical=False
        ).add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
    return builder.sign(signing_key, hashes.SHA256())


@functools.cache
def make_ca() -> tuple[bytes, x509.Certificate, rsa.RSAPrivateKey]:
    key = rsa_key("ca")
    cert = make_cert("ML Lab test CA", key, ca=True)
    return cert.public_bytes(serialization.Encoding.PEM), cert, key


def pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


@functools.cache
def good_cert() -> x509.Certificate:
    return make_cert()


def sign(
    body: bytes = BODY,
    *,
    key: Any = None,
    tid: str = "b2384410-f8d2-11ec-8c5b-4b8d4f6d5e0b",
    ttime: str = "2026-03-01T10:00:00Z",
    webhook_id: str = WEBHOOK_ID,
    crc: int | None = None,
) -> str:
    key = key if key is not None else rsa_key("signer")
    crc = zlib.crc32(body) if crc is None else crc
    message = f"{tid}|{ttime}|{webhook_id}|{crc}".encode()
    return base64.b64encode(key.sign(message, padding.PKCS1v15(), hashes.SHA256())).decode()


def headers(body: bytes = BODY, **overrides: str) -> dict[str, str]:
    h = {
        "PAYPAL-TRANSMISSION-ID": "b2384410-f8d2-11ec-8c5b-4b8d4f6d5e0b",
        "PAYPAL-TRANSMISSION-TIME": "2026-03-01T10:00:00Z",
        "PAYPAL-TRANSMISSION-SIG": sign(body),
        "PAYPAL-CERT-URL": CERT_URL,
        "PAYPAL-AUTH-ALGO": "SHA256withRSA",
        "Content-Type": "application/json",
    }
    h.update({k.upper().replace("_", "-"): v for k, v in overrides.items()})
    return h


class Fetcher:
    def __init__(self, cert: x509.Certificate | None = None, error: Exception | None = None, delay: float = 0) -> None:
        self.cert, self.error, self.delay = cert or good_cert(), error, delay
        self.urls: list[str] = []
        self.lock = threading.Lock()

    def __call__(self, url: str) -> x509.Certificate:
        with self.lock:
            self.urls.append(url)
        if self.delay:
            time.sleep(self.delay)
        if self.error:
            raise self.error
        return self.cert


@pytest.fixture(autouse=True)
def fresh_cache() -> Iterator[None]:
    webhooks.reset_cache()
    yield
    webhooks.reset_cache()


def check(h: dict[str, str] | Headers, body: bytes = BODY, fetch: Fetcher | None = None, **kw: Any) -> Fetcher:
    fetch = fetch or Fetcher()
    kw.setdefault("webhook_id", WEBHOOK_ID)
    webhooks.verify(h, body, fetch=fetch, **kw)
    return fetch


# --- the signature -----------------------------------------------------------------------------------


def test_valid_signature() -> None:
    fetch = check(headers())
    assert fetch.urls == [CERT_URL]


def test_header_names_are_case_insensitive() -> None:
    check({k.lower(): v for k, v in headers().items()})
    check(Headers(list(headers().items())))


def crc_high_body() -> bytes:
    for i in itertools.count():
        body = json.dumps({"id": "WH-HIGHCRC", "event_type": "PAYMENT.SALE.COMPLETED", "pad": i}).encode()
        if zlib.crc32(body) >= 2**31:
            return body
    raise AssertionError("unreachable")


def test_crc_is_unsigned() -> None:
    body = crc_high_body()
    crc = zlib.crc32(body)
    assert crc >= 2**31
    check(headers(body), body)
    signed = crc - 2**32  # what a signed 32-bit implementation would print
    assert signed < 0
    with pytest.raises(InvalidSignature, match="does not match"):
        check(headers(body, paypal_transmission_sig=sign(body, crc=signed)), body)


@pytest.mark.parametrize("change", ["body", "transmission_id", "transmission_time", "webhook_id", "key"])
def test_tampering_is_refused(change: str) -> None:
    h, body, webhook_id = headers(), BODY, WEBHOOK_ID
    if change == "body":
        body = BODY.replace(b"ACTIVE", b"CANCELLED")
    elif change == "transmission_id":
        h["PAYPAL-TRANSMISSION-ID"] = "c2384410-f8d2-11ec-8c5b-4b8d4f6d5e0b"
    elif change == "transmission_time":
        h["PAYPAL-TRANSMISSION-TIME"] = "2026-03-01T10:00:01Z"
    elif change == "webhook_id":
        webhook_id = "OTHERWEBHOOKID0000000000"
    else:
        h["PAYPAL-TRANSMISSION-SIG"] = sign(key=rsa_key("other"))
    with pytest.raises(InvalidSignature, match="does not match"):
        check(h, body, webhook_id=webhook_id)


def test_reserialised_json_fails() -> None:
    with pytest.raises(InvalidSignature):
        check(headers(), json.dumps(json.loads(BODY), indent=2).encode())


@pytest.mark.parametrize(
    "algo",
    ["SHA1withRSA", "sha256withrsa", "SHA256WITHRSA", " SHA256withRSA", "SHA256withRSA ", "SHA512withRSA", "none"],
)
def test_only_sha256withrsa(algo: str) -> None:
    fetch = Fetcher()
    with pytest.raises(InvalidSignature, match="paypal-auth-algo"):
        check(headers(paypal_auth_algo=algo), fetch=fetch)
    assert fetch.urls == []


@pytest.mark.parametrize("name", webhooks.HEADERS)
def test_missing_or_empty_headers(name: str) -> None:
    h = {k: v for k, v in headers().items() if k.lower() != name}
    fetch = Fetcher()
    with pytest.raises(InvalidSignature, match=f"missing webhook header.*{name}"):
        check(h, fetch=fetch)
    h[name] = ""
    with pytest.raises(InvalidSignature, match=name):
        check(h, fetch=fetch)
    assert fetch.urls == []


@pytest.mark.parametrize("sig", ["not base64!!", "abc", "YWJj\n", "====", "A" * 2000])
def test_bad_base64_signature(sig: str) -> None:
    fetch = Fetcher()
    with pytest.raises(InvalidSignature) as info:
        check(headers(paypal_transmission_sig=sig), fetch=fetch)
    assert "paypal-transmission-sig" in str(info.value) and sig not in str(info.value)
    assert fetch.urls == []


def test_messages_never_echo_the_signature_or_url() -> None:
    forged = base64.b64encode(b"\x01" * 256).decode()
    with pytest.raises(InvalidSignature) as info:
        check(headers(paypal_transmission_sig=forged))
    assert forged not in str(info.value)
    evil = "https://evil.example/v1/notifications/certs/CERT-1"
    with pytest.raises(InvalidSignature) as info2:
        check(headers(paypal_cert_url=evil))
    assert "evil" not in str(info2.value)


def test_webhook_id_must_be_configured() -> None:
    with pytest.raises(config.ConfigError):
        check(headers(), webhook_id="")


# --- the certificate URL -----------------------------------------------------------------------------

CERTS = "/v1/notifications/certs/CERT-360caa42-fca2a594-5edc0ebc"
BAD_URLS = [
    "https://evil.example.com" + CERTS,  # foreign host
    "https://api.paypal.com" + CERTS,  # live host while configured for sandbox
    "https://api.sandbox.paypal.com.evil.com" + CERTS,  # look-alike suffix
    "https://evil.com/api.sandbox.paypal.com" + CERTS,  # allowed host in the path
    "https://api.sandbox.paypal.com@evil.com" + CERTS,  # userinfo trick
    "https://user:pw@api.sandbox.paypal.com" + CERTS,  # userinfo on the right host
    "https://evil.com#@api.sandbox.paypal.com" + CERTS,  # fragment trick
    "https://evil.com\\@api.sandbox.paypal.com" + CERTS,  # backslash trick
    "http://api.sandbox.paypal.com" + CERTS,  # plain http
    "ftp://api.sandbox.paypal.com" + CERTS,
    "//api.sandbox.paypal.com" + CERTS,  # scheme-relative
    "https://api.sandbox.paypal.com:8443" + CERTS,  # other port
    "https://api.sandbox.paypal.com:0443x" + CERTS,  # not a port
    "https://api.sandbox.paypal.com." + CERTS,  # trailing dot
    "https://api.sandbox.paypaI.com" + CERTS,  # capital i for l
    "https://api.sandbox.paypal.c\u043em" + CERTS,  # Cyrillic o
    "https://api.sandbox.paypal\u3002com" + CERTS,  # ideographic full stop
    "https://xn--api-sandbox-paypal-com-xyz.com" + CERTS,  # punycode
    "https://api.sandbox.paypal.com" + CERTS + "?x=1",  # query
    "https://api.sandbox.paypal.com" + CERTS + "?",
    "https://api.sandbox.paypal.com" + CERTS + "#frag",
    "https://api.sandbox.paypal.com/v1/oauth2/token",  # other path
    "https://api.sandbox.paypal.com/v1/notifications/certs/",
    "https://api.sandbox.paypal.com/v1/notifications/certs/../../oauth2/token",
    "https://api.sandbox.paypal.com/v1/notifications/certs/%2e%2e/x",
    "https://api.sandbox.paypal.com/v1/notifications/certs/a/b",
    "https://api.sandbox.paypal.com /v1/notifications/certs/CERT-1",
    "https://api.sandbox.paypal.com" + CERTS + "\n",
    "https://api.sandbox.paypal.com/" + "a" * 600,
    "https://127.0.0.1" + CERTS,
    "https://[::1]" + CERTS,
    "",
]


@pytest.mark.parametrize("url", BAD_URLS)
def test_bad_cert_urls_are_refused_before_any_fetch(url: str) -> None:
    fetch = Fetcher()
    with pytest.raises(InvalidSignature):
        check(headers(paypal_cert_url=url), fetch=fetch)
    assert fetch.urls == []


@pytest.mark.parametrize(
    "url",
    [
        "https://api.sandbox.paypal.com" + CERTS,
        "https://api-m.sandbox.paypal.com" + CERTS,
        "https://API.Sandbox.PayPal.com" + CERTS,
        "https://api.sandbox.paypal.com:443" + CERTS,
    ],
)
def test_good_cert_urls(url: str) -> None:
    webhooks.check_cert_url(url, config.settings().webhook_cert_origins)


def test_origins_compare_the_port() -> None:
    allowed = ("https://127.0.0.1:9500",)
    webhooks.check_cert_url("https://127.0.0.1:9500" + CERTS, allowed)
    for url in (
        "https://127.0.0.1" + CERTS,
        "https://127.0.0.1:443" + CERTS,
        "https://127.0.0.1:9501" + CERTS,
        "http://127.0.0.1:9500" + CERTS,
        "https://localhost:9500" + CERTS,
    ):
        with pytest.raises(InvalidSignature):
            webhooks.check_cert_url(url, allowed)
    with pytest.raises(InvalidSignature):
        webhooks.check_cert_url("https://api.paypal.com" + CERTS, ())


def test_live_settings_allow_only_live_hosts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLLAB_PAYPAL_API_BASE", config.PAYPAL_LIVE_API)
    config.reload()
    live = "https://api.paypal.com" + CERTS
    webhooks.check_cert_url(live, config.settings().webhook_cert_origins)
    with pytest.raises(InvalidSignature):
        webhooks.check_cert_url(CERT_URL, config.settings().webhook_cert_origins)


def test_allowed_origins_must_be_origins() -> None:
    for entry in ("http://api.paypal.com", "https://api.paypal.com/v1", "api.paypal.com"):
        with pytest.raises(config.ConfigError):
            webhooks.check_cert_url(CERT_URL, (entry,))


# --- certificate checks --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "cert, reason",
    [
        (lambda: make_cert("messageverificationcerts.sandbox.paypal.com.evil.com"), "paypal.com name"),
        (lambda: make_cert("paypal.com"), "paypal.com name"),
        (lambda: make_cert("evil.example"), "paypal.com name"),
        (lambda: make_cert(days=(-400, -1)), "not valid at this time"),
        (lambda: make_cert(days=(1, 400)), "not valid at this time"),
        (lambda: make_cert(key=ec.generate_private_key(ec.SECP256R1())), "not RSA"),
        (lambda: make_cert(key=rsa_key("short", 1024)), "too short"),
    ],
)
def test_certificate_checks(cert: Any, reason: str) -> None:
    with pytest.raises(InvalidSignature, match=reason):
        check(headers(), fetch=Fetcher(cert()))


def test_fetch_failure_is_certificate_unavailable_and_not_cached() -> None:
    failing = Fetcher(error=CertificateUnavailable("down"))
    with pytest.raises(CertificateUnavailable) as info:
        check(headers(), fetch=failing)
    assert isinstance(info.value, ConnectionError)
    check(headers(), fetch=(working := Fetcher()))
    assert failing.urls == [CERT_URL] and working.urls == [CERT_URL]


def test_cache_one_fetch_for_many_events() -> None:
    fetch = Fetcher()
    for i in range(100):
        body = json.dumps({"id": f"WH-{i}"}).encode()
        check(headers(body, paypal_transmission_sig=sign(body)), body, fetch=fetch)
    assert fetch.urls == [CERT_URL]


def test_cache_one_fetch_for_a_concurrent_burst() -> None:
    fetch = Fetcher(delay=0.05)
    errors: list[BaseException] = []
    barrier = threading.Barrier(16)

    def deliver() -> None:
        barrier.wait()
        try:
            check(headers(), fetch=fetch)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=deliver) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and len(fetch.urls) == 1


def test_cache_ends_when_the_certificate_expires() -> None:
    fetch = Fetcher(make_cert(days=(-1, 2)))
    check(headers(), fetch=fetch)
    with clock.travel(by=timedelta(days=1)):
        check(headers(), fetch=fetch)
    assert len(fetch.urls) == 1
    with clock.travel(by=timedelta(days=3)), pytest.raises(InvalidSignature, match="not valid at this time"):
        check(headers(), fetch=fetch)
    assert len(fetch.urls) == 2  # the expired entry was dropped and the URL fetched again


def test_cache_is_per_url() -> None:
    fetch = Fetcher()
    other = CERT_URL.replace("5edc0ebc", "00000000")
    check(headers())  # a different fetcher warmed CERT_URL
    check(headers(paypal_cert_url=other), fetch=fetch)
    check(headers(), fetch=fetch)
    assert fetch.urls == [other]


# --- a real TLS fetch ------------------------------------------------------------------------------------


class _Handler(http.server.BaseHTTPRequestHandler):
    paths: list[str] = []

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        type(self).paths.append(self.path)
        base = "/v1/notifications/certs/"
        routes: dict[str, tuple[int, bytes, dict[str, str]]] = {
            base + "CERT-good": (200, pem(good_cert()) + make_ca()[0], {}),  # leaf, then a chain
            base + "CERT-redirect": (302, b"", {"Location": base + "CERT-good"}),
            base + "CERT-garbage": (200, b"hello, not a certificate", {}),
            base + "CERT-huge": (200, b"-" * (webhooks.CERT_MAX_BYTES + 10), {}),
            base + "CERT-error": (500, b"oops", {}),
        }
        status, body, extra = routes.get(self.path, (404, b"not found", {}))
        self.send_response(status)
        for k, v in extra.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


class _QuietServer(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that refuses our certificate or hangs up early (the size cap) is expected here


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    directory = tmp_path_factory.mktemp("tls")
    ca_pem, ca_cert, ca_key = make_ca()
    server_key = rsa_key("server")
    server_cert = make_cert("127.0.0.1", server_key, issuer=(ca_cert, ca_key), ip="127.0.0.1")
    (directory / "ca.pem").write_bytes(ca_pem)
    (directory / "server.pem").write_bytes(pem(server_cert))
    (directory / "server.key").write_bytes(
        server_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(directory / "server.pem", directory / "server.key")
    server = _QuietServer(("127.0.0.1", 0), _Handler)
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"https://127.0.0.1:{server.server_address[1]}", directory / "ca.pem"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def local_ca(tls_server: tuple[str, Path], monkeypatch: pytest.MonkeyPatch) -> str:
    origin, ca_file = tls_server
    monkeypatch.setenv("MLLAB_PAYPAL_CA_FILE", str(ca_file))
    monkeypatch.setenv("MLLAB_PAYPAL_CERT_ORIGINS", origin)
    config.reload()
    _Handler.paths.clear()
    return origin


def test_tls_fetch_of_the_pem(local_ca: str) -> None:
    cert = webhooks.fetch_certificate(local_ca + "/v1/notifications/certs/CERT-good")
    assert cert == good_cert()


def test_end_to_end_verify_over_tls(local_ca: str, logs: Any) -> None:
    url = local_ca + "/v1/notifications/certs/CERT-good"
    for _ in range(5):
        webhooks.verify(headers(paypal_cert_url=url), BODY, webhook_id=WEBHOOK_ID)  # origins from settings
    assert _Handler.paths == ["/v1/notifications/certs/CERT-good"]
    assert len(logs.find("paypal certificate fetched")) == 1


def test_redirects_are_not_followed(local_ca: str) -> None:
    with pytest.raises(CertificateUnavailable, match="302"):
        webhooks.fetch_certificate(local_ca + "/v1/notifications/certs/CERT-redirect")
    assert _Handler.paths == ["/v1/notifications/certs/CERT-redirect"]


@pytest.mark.parametrize(
    "name, match",
    [("CERT-garbage", "not a PEM"), ("CERT-huge", "too large"), ("CERT-error", "500"), ("CERT-missing", "404")],
)
def test_bad_certificate_responses(local_ca: str, name: str, match: str) -> None:
    with pytest.raises(CertificateUnavailable, match=match):
        webhooks.verify(
            headers(paypal_cert_url=f"{local_ca}/v1/notifications/certs/{name}"), BODY, webhook_id=WEBHOOK_ID
        )


def test_untrusted_tls_is_certificate_unavailable(
    tls_server: tuple[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    origin, _ = tls_server
    monkeypatch.setenv("MLLAB_PAYPAL_CERT_ORIGINS", origin)
    config.reload()  # no development CA: the server's certificate is not trusted
    with pytest.raises(CertificateUnavailable, match="ConnectError"):
        webhooks.verify(
            headers(paypal_cert_url=origin + "/v1/notifications/certs/CERT-good"), BODY, webhook_id=WEBHOOK_ID
        )


def test_unreachable_host_is_certificate_unavailable() -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens here
    with pytest.raises(CertificateUnavailable):
        webhooks.fetch_certificate(f"https://127.0.0.1:{port}/v1/notifications/certs/CERT-1")
