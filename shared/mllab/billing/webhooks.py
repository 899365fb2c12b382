"""PayPal webhook signatures, verified offline (no API call per event).

PayPal signs `<transmission id>|<transmission time>|<webhook id>|<crc32 of the raw body>` with the
private key of a certificate it publishes at `paypal-cert-url`. We check, in this order and before any
network I/O: every header is there, the algorithm is exactly SHA256withRSA, the certificate URL is
https on an allow-listed origin (exact scheme + host + port) under /v1/notifications/certs/, and the
signature is valid base64. Only then is the certificate fetched (https, verified TLS, no redirects,
5 s, 64 KiB), checked (RSA, CN under .paypal.com, valid now) and cached in memory until it expires.

    InvalidSignature        the event is not from PayPal: answer 400 and change nothing
    CertificateUnavailable  we could not get the certificate: a ConnectionError, so 5xx and PayPal retries
"""

from __future__ import annotations

import base64
import binascii
import functools
import re
import threading
import time
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
from cryptography import exceptions as crypto_exceptions
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

from mllab.billing import paypal
from mllab.platform import clock, config, log

TRANSMISSION_ID = "paypal-transmission-id"
TRANSMISSION_TIME = "paypal-transmission-time"
TRANSMISSION_SIG = "paypal-transmission-sig"
CERT_URL = "paypal-cert-url"
AUTH_ALGO = "paypal-auth-algo"
HEADERS = (TRANSMISSION_ID, TRANSMISSION_TIME, TRANSMISSION_SIG, CERT_URL, AUTH_ALGO)
ALGORITHM = "SHA256withRSA"  # the only one accepted; PayPal's old SDK also mapped SHA1withRSA
CERT_PATH = re.compile(r"/v1/notifications/certs/[A-Za-z0-9_-][A-Za-z0-9._~-]{0,199}")
# Printable ASCII except the backslash: no IDN or full-width look-alike, whitespace or control character.
_URL_CHARS = re.compile(r"[!-\[\]-~]+")
CERT_CN_SUFFIX = ".paypal.com"
CERT_URL_MAX = 500  # PayPal's own limit for cert_url
SIGNATURE_MAX = 1024  # base64 characters; a 4096-bit RSA signature needs 684
FETCH_TIMEOUT_S = 5.0
CERT_MAX_BYTES = 64 * 1024
MIN_RSA_BITS = 2048
_FETCH_LOCKS_MAX = 256


class InvalidSignature(Exception):
    """The event is not authentic. The message names the failed check and is safe to show;
    it never echoes the signature or the certificate URL."""


class CertificateUnavailable(ConnectionError):
    """The signing certificate could not be fetched or parsed: transient, answer 5xx."""


# --- the certificate URL -------------------------------------------------------------------------


def check_cert_url(url: str, allowed: tuple[str, ...]) -> None:
    """Refuse any certificate URL that is not https on one of `allowed` (`https://host[:port]`,
    compared exactly) under /v1/notifications/certs/. Runs before the URL is ever fetched."""
    if not isinstance(url, str) or not url or len(url) > CERT_URL_MAX:
        raise InvalidSignature("the certificate URL is missing or too long")
    # An IDN or full-width look-alike never matches, and neither do whitespace, control characters
    # or backslashes that URL parsers disagree about.
    if not _URL_CHARS.fullmatch(url):
        raise InvalidSignature("the certificate URL has characters a PayPal URL never has")
    parts = urlsplit(url)
    if parts.scheme != "https":
        raise InvalidSignature("the certificate URL is not https")
    if "@" in parts.netloc:
        raise InvalidSignature("the certificate URL carries user info")
    if "?" in url or "#" in url:
        raise InvalidSignature("the certificate URL has a query or fragment")
    origin = _origin_of(parts)
    if origin is None or origin not in _allowed_origins(tuple(allowed)):
        raise InvalidSignature("the certificate URL is not on PayPal's allow-listed hosts")
    if not CERT_PATH.fullmatch(parts.path):
        raise InvalidSignature("the certificate URL is not under /v1/notifications/certs/")


def _origin_of(parts: Any) -> tuple[str, int] | None:
    try:
        port = parts.port
    except ValueError:  # not a number, or out of range
        return None
    host = parts.hostname
    if not host:
        return None
    return host, port if port is not None else 443


@functools.lru_cache(maxsize=16)
def _allowed_origins(allowed: tuple[str, ...]) -> frozenset[tuple[str, int]]:
    origins = set()
    for entry in allowed:
        parts = urlsplit(entry)
        origin = _origin_of(parts) if parts.scheme == "https" and "@" not in parts.netloc else None
        if origin is None or parts.path not in ("", "/"):
            raise config.ConfigError(f"webhook certificate origin must be https://host[:port], got {entry!r}")
        origins.add(origin)
    return frozenset(origins)


# --- verification --------------------------------------------------------------------------------


def verify(
    headers: Mapping[str, str],
    raw_body: bytes,
    *,
    webhook_id: str,
    allowed: tuple[str, ...] | None = None,
    fetch: Callable[[str], x509.Certificate] | None = None,
) -> None:
    """Return if PayPal signed this delivery; raise InvalidSignature or CertificateUnavailable.
    `raw_body` must be the bytes as received (re-serialised JSON changes the CRC)."""
    lowered = {str(k).lower(): v for k, v in headers.items()}
    missing = [name for name in HEADERS if not lowered.get(name)]
    if missing:
        raise InvalidSignature(f"missing webhook header(s): {', '.join(missing)}")
    if lowered[AUTH_ALGO] != ALGORITHM:
        raise InvalidSignature(f"paypal-auth-algo must be {ALGORITHM}")
    cert_url = lowered[CERT_URL]
    check_cert_url(cert_url, config.settings().webhook_cert_origins if allowed is None else allowed)
    signature = _decode_signature(lowered[TRANSMISSION_SIG])
    if not webhook_id:
        raise config.ConfigError("no PayPal webhook id is configured")
    cert = _certificate(cert_url, fetch or fetch_certificate)
    if not cert.not_before <= clock.now() < cert.not_after:
        raise InvalidSignature("the signing certificate is not valid at this time")
    # Unsigned decimal. Python's zlib.crc32 is already unsigned; the mask documents the pitfall:
    # implementations that keep a signed 32-bit CRC print a negative number for half of all bodies
    # and fail exactly those events.
    crc = zlib.crc32(raw_body) & 0xFFFFFFFF
    message = f"{lowered[TRANSMISSION_ID]}|{lowered[TRANSMISSION_TIME]}|{webhook_id}|{crc}".encode()
    try:
        cert.public_key.verify(signature, message, padding.PKCS1v15(), hashes.SHA256())
    except crypto_exceptions.InvalidSignature:
        raise InvalidSignature("the signature does not match this body, these headers and our webhook id") from None


def _decode_signature(value: str) -> bytes:
    if len(value) > SIGNATURE_MAX:
        raise InvalidSignature("paypal-transmission-sig is too long")
    try:
        signature = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidSignature("paypal-transmission-sig is not valid base64") from None
    if not signature:
        raise InvalidSignature("paypal-transmission-sig is empty")
    return signature


# --- certificates: fetch, check, cache -----------------------------------------------------------


@dataclass(frozen=True)
class _Checked:
    public_key: rsa.RSAPublicKey
    not_before: datetime
    not_after: datetime


_cache: dict[str, _Checked] = {}
_cache_lock = threading.Lock()
_fetch_locks: dict[str, threading.Lock] = {}


def _certificate(url: str, fetch: Callable[[str], x509.Certificate]) -> _Checked:
    """The checked certificate at `url`: from memory while it is valid, else fetched once, even when
    a burst of deliveries asks at the same time (they wait on one fetch)."""
    cached = _cache.get(url)
    if cached is not None and clock.now() < cached.not_after:
        return cached
    with _cache_lock:
        if len(_fetch_locks) > _FETCH_LOCKS_MAX:
            _fetch_locks.clear()  # bounded; a fetch in progress keeps its own lock object
        lock = _fetch_locks.setdefault(url, threading.Lock())
    with lock:
        cached = _cache.get(url)
        if cached is not None and clock.now() < cached.not_after:
            return cached
        checked = _check_certificate(fetch(url))
        if clock.now() < checked.not_after:
            with _cache_lock:
                _cache[url] = checked
        return checked


def _check_certificate(cert: x509.Certificate) -> _Checked:
    names = [a.value for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    if len(names) != 1 or not str(names[0]).lower().endswith(CERT_CN_SUFFIX):
        raise InvalidSignature("the signing certificate is not issued to a paypal.com name")
    key = cert.public_key()
    if not isinstance(key, rsa.RSAPublicKey):
        raise InvalidSignature("the signing certificate's key is not RSA")
    if key.key_size < MIN_RSA_BITS:
        raise InvalidSignature("the signing certificate's RSA key is too short")
    return _Checked(key, cert.not_valid_before_utc, cert.not_valid_after_utc)


def fetch_certificate(url: str) -> x509.Certificate:
    """GET the PEM at `url` (already allow-listed by the caller): verified TLS, no redirects,
    5 s in all, at most 64 KiB. Any failure is CertificateUnavailable."""
    started = time.monotonic()
    data = bytearray()
    try:
        with _http(config.settings().paypal_ca_file).stream("GET", url) as resp:
            if resp.status_code != 200:  # a redirect included: it is never followed
                raise CertificateUnavailable(f"the certificate host answered {resp.status_code}")
            declared = resp.headers.get("content-length", "")
            if declared.isdigit() and int(declared) > CERT_MAX_BYTES:
                raise CertificateUnavailable("the certificate response is too large")
            for chunk in resp.iter_bytes():
                data += chunk
                if len(data) > CERT_MAX_BYTES:
                    raise CertificateUnavailable("the certificate response is too large")
                if time.monotonic() - started > FETCH_TIMEOUT_S:
                    raise CertificateUnavailable("the certificate download is too slow")
    except httpx.HTTPError as exc:
        log.warning(
            "paypal certificate fetch failed",
            url=url,
            error=type(exc).__name__,
            elapsed_ms=round((time.monotonic() - started) * 1000, 1),
        )
        raise CertificateUnavailable(f"could not fetch the signing certificate: {type(exc).__name__}") from exc
    try:
        cert = x509.load_pem_x509_certificates(bytes(data))[0]  # the leaf; any chain after it is unused
    except ValueError:
        raise CertificateUnavailable("the certificate response is not a PEM certificate") from None
    log.info("paypal certificate fetched", url=url, elapsed_ms=round((time.monotonic() - started) * 1000, 1))
    return cert


_clients: dict[Path | None, httpx.Client] = {}


def _http(ca_file: Path | None) -> httpx.Client:
    """One client per trust configuration (kept alive: a burst after a cert rotation reuses it)."""
    client = _clients.get(ca_file)
    if client is None:
        with _cache_lock:
            client = _clients.get(ca_file)
            if client is None:
                client = _clients[ca_file] = httpx.Client(
                    verify=paypal.tls_verify(ca_file),
                    timeout=httpx.Timeout(FETCH_TIMEOUT_S),
                    follow_redirects=False,
                    headers={"Accept": "application/x-pem-file, */*"},
                )
    return client


def reset_cache() -> None:
    """Forget cached certificates and close the fetch clients (tests)."""
    with _cache_lock:
        _cache.clear()
        _fetch_locks.clear()
        clients = list(_clients.values())
        _clients.clear()
    for client in clients:
        client.close()
