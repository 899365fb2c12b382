"""A development certificate authority for the local PayPal stand-in. Development only.

`ensure(dev_dir)` creates, once, under `<dev_dir>/paypal/`:

    ca.pem / ca.key                            the CA (10 years); only the local configuration trusts it
    server.pem / server.key                    TLS server certificate for 127.0.0.1 and localhost
    webhook-signing.pem / webhook-signing.key  RSA 2048 leaf, CN messageverificationcerts.sandbox.paypal.com,
                                               signs the stand-in's webhooks (1 year)

Every file is written create-if-absent through a hard link, so two processes racing each other end
up with one consistent set: each key is read back from disk after the race, and every certificate
is built from (and signed with) the keys that won. Keys are 0600, certificates 0644. Delete the
folder to start over (e.g. when a leaf has expired).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from mllab.platform import config

SUBDIR = "paypal"
CA_CN = "ML Lab local development CA (PayPal stand-in)"
SERVER_CN = "127.0.0.1"
SIGNING_CN = "messageverificationcerts.sandbox.paypal.com"
CA_DAYS = 3650
SERVER_DAYS = 825
SIGNING_DAYS = 365
# The kinds of key this CA makes (EC for the CA and the server, RSA for webhook signing): both can sign.
Key = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


@dataclass(frozen=True)
class DevCA:
    directory: Path
    ca_cert: Path
    ca_key: Path
    server_cert: Path
    server_key: Path
    signing_cert: Path
    signing_key: Path

    def client_context(self) -> ssl.SSLContext:
        """A client TLS context that trusts this CA and nothing else."""
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(self.ca_cert))
        return ctx

    def server_context(self) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(str(self.server_cert), str(self.server_key))
        return ctx

    def load_signing_key(self) -> rsa.RSAPrivateKey:
        key = _load_key(self.signing_key)
        assert isinstance(key, rsa.RSAPrivateKey)
        return key


def paths(dev_dir: Path) -> DevCA:
    d = Path(dev_dir) / SUBDIR
    return DevCA(
        directory=d,
        ca_cert=d / "ca.pem",
        ca_key=d / "ca.key",
        server_cert=d / "server.pem",
        server_key=d / "server.key",
        signing_cert=d / "webhook-signing.pem",
        signing_key=d / "webhook-signing.key",
    )


def ensure(dev_dir: Path) -> DevCA:
    """Create whatever is missing (never replaces a file) and return the paths."""
    ca = paths(dev_dir)
    files = (ca.ca_cert, ca.ca_key, ca.server_cert, ca.server_key, ca.signing_cert, ca.signing_key)
    if all(f.exists() for f in files):
        return ca
    ca.directory.mkdir(parents=True, exist_ok=True)

    ca_key = _ensure_key(ca.ca_key, lambda: ec.generate_private_key(ec.SECP256R1()))
    if not ca.ca_cert.exists():
        config.write_once(ca.ca_cert, _pem(_ca_certificate(ca_key)), 0o644)
    ca_cert = x509.load_pem_x509_certificate(ca.ca_cert.read_bytes())

    server_key = _ensure_key(ca.server_key, lambda: ec.generate_private_key(ec.SECP256R1()))
    if not ca.server_cert.exists():
        config.write_once(ca.server_cert, _pem(_server_certificate(server_key, ca_key, ca_cert)), 0o644)

    signing_key = _ensure_key(ca.signing_key, lambda: rsa.generate_private_key(65537, 2048))
    if not ca.signing_cert.exists():
        config.write_once(ca.signing_cert, _pem(_signing_certificate(signing_key, ca_key, ca_cert)), 0o644)
    return ca


# --- building blocks -------------------------------------------------------------------------------


def _ensure_key(path: Path, generate: Callable[[], Key]) -> Key:
    if not path.exists():
        key = generate()
        pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        config.write_once(path, pem, 0o600)
    # Whichever process won the race, use the key on disk.
    return _load_key(path)


def _load_key(path: Path) -> Key:
    # Our own keys: skip the RSA consistency check, which costs tens of milliseconds per load.
    key = serialization.load_pem_private_key(path.read_bytes(), password=None, unsafe_skip_rsa_key_validation=True)
    if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise ValueError(f"{path} holds a {type(key).__name__}, not a key this CA makes (delete the folder)")
    return key


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


def _ca_certificate(key: Key) -> x509.Certificate:
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "ML Lab development"),
            x509.NameAttribute(NameOID.COMMON_NAME, CA_CN),
        ]
    )
    now = _now()
    public = key.public_key()
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .sign(key, hashes.SHA256())
    )


def _leaf(subject_cn: str, key: Key, ca_key: Key, ca_cert: x509.Certificate, days: int) -> x509.CertificateBuilder:
    now = _now()
    public = key.public_key()
    ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    return (
        x509.CertificateBuilder()
        .subject_name(
            x509.Name(
                [
                    x509.NameAttribute(NameOID.ORGANIZATION_NAME, "ML Lab development"),
                    x509.NameAttribute(NameOID.COMMON_NAME, subject_cn),
                ]
            )
        )
        .issuer_name(ca_cert.subject)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(min(now + dt.timedelta(days=days), ca_cert.not_valid_after_utc))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False)
    )


def _server_certificate(key: Key, ca_key: Key, ca_cert: x509.Certificate) -> x509.Certificate:
    san = x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")])
    return (
        _leaf(SERVER_CN, key, ca_key, ca_cert, SERVER_DAYS)
        .add_extension(san, critical=False)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )


def _signing_certificate(key: Key, ca_key: Key, ca_cert: x509.Certificate) -> x509.Certificate:
    return (
        _leaf(SIGNING_CN, key, ca_key, ca_cert, SIGNING_DAYS)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )
