"""Object storage: V4 signed URLs (uploads and downloads) and the bucket's CORS rules.

Two signers behind one URL shape (docs/architecture.md, the event path: V4, 10 minutes, Content-Type,
`x-goog-content-length-range` and `x-goog-if-generation-match: 0` pinned for uploads):

- locally (env `local`/`test`) the development service-account key generated into `.dev/secrets`
  signs in-process; the URL points at fake-gcs-server (`STORAGE_EMULATOR_HOST`), which accepts any
  signature whose host matches its `-public-host`. This path never calls IAM.
- in production the function's own service account signs through the IAM Credentials API
  (`signBlob`), with the bearer token of the refreshed default credentials: no key file exists, and the
  development key is refused. The runtime service account needs `roles/iam.serviceAccountTokenCreator`
  on itself. The call is made here with httpx under the settings' deadline (the library's own signBlob
  path uses `requests` with a long default retry and no way to bound it); every failure of it raises
  `SigningUnavailable`, a `ConnectionError`, which the router answers as 503, never a URL.

The V4 canonical request and string-to-sign are built by google-cloud-storage (`Blob.generate_signed_url`);
only the RSA-SHA256 signature over the string-to-sign comes from one of the two signers.

CORS: the browser PUTs to and GETs from the bucket directly, so the bucket allows the lab origin only,
the methods the signed URLs use, and exactly the request headers they pin. `infra/storage-cors.json` is
`cors_file("https://lab.${DOMAIN}")` (the deploy step substitutes DOMAIN); a unit test keeps them equal.
"""

from __future__ import annotations

import base64
import functools
import json
import os
import sys
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from mllab.platform import clients, clock, config

URL_TTL = timedelta(minutes=10)
CONTENT_LENGTH_RANGE = "x-goog-content-length-range"
# Signed as "0": GCS creates the object only if none exists under the name (a second PUT with the same
# URL answers 412), so one upload URL makes at most one object. The recorder enforces it again.
IF_GENERATION_MATCH = "x-goog-if-generation-match"
# The request headers an upload URL pins (besides Host): the bucket's CORS must permit exactly these.
UPLOAD_HEADERS = ("Content-Type", CONTENT_LENGTH_RANGE, IF_GENERATION_MATCH)
CORS_METHODS = ("PUT", "GET", "HEAD")
CORS_MAX_AGE_S = 3600
CORS_FILE_ORIGIN = "https://lab.${DOMAIN}"  # the origin infra/storage-cors.json is written for

GCS_ENDPOINT = "https://storage.googleapis.com"
CLOUD_PLATFORM_SCOPE = "https://www.googleapis.com/auth/cloud-platform"
# The IAM Credentials API. A module constant, not a setting: tests point it at a fake server, and no
# configuration can redirect production signing anywhere else.
IAM_ENDPOINT = "https://iamcredentials.googleapis.com"
_IAM_RETRY_STATUS = frozenset({429, 500, 502, 503, 504})
_IAM_ATTEMPTS = 3


class SigningUnavailable(ConnectionError):
    """IAM signBlob (or the access token it needs) did not give a signature: answer 503, no URL.
    A `ConnectionError`, so `mllab.api.http.dependency_outage` recognises it."""


@dataclass(frozen=True)
class SignedUrl:
    url: str
    method: str
    headers: dict[str, str]  # the request must send exactly these (they are signed)
    object: str
    expires_at: datetime


# --- public API -----------------------------------------------------------------------------------


def signed_upload_url(object_name: str, content_type: str, max_bytes: int) -> SignedUrl:
    """A V4 PUT URL for exactly this object, content type and size cap (0..max_bytes bytes), that
    creates the object only if it does not exist yet."""
    if max_bytes < 0:
        raise ValueError("max_bytes must be >= 0")
    headers = {"Content-Type": content_type, CONTENT_LENGTH_RANGE: f"0,{max_bytes}", IF_GENERATION_MATCH: "0"}
    return _sign(object_name, "PUT", headers)


def signed_download_url(object_name: str) -> SignedUrl:
    """A V4 GET URL for exactly this object; no request header is pinned."""
    return _sign(object_name, "GET", {})


def new_dev_service_account(project: str) -> dict[str, Any]:
    """A service-account key file for local V4 signing only."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    return {
        "type": "service_account",
        "project_id": project,
        "private_key_id": "dev",
        "private_key": pem,
        "client_email": f"dev-signer@{project}.iam.gserviceaccount.com",
        "client_id": "0",
        "token_uri": "https://oauth2.googleapis.com/token",
    }


def reset() -> None:
    """Forget cached signers, tokens and HTTP clients (tests change the environment)."""
    global _default_credentials
    with _token_lock:
        _default_credentials = None
    for cached in (_dev_credentials, _signing_client, _iam_http):
        cached.cache_clear()


# --- signing --------------------------------------------------------------------------------------


def _sign(object_name: str, method: str, headers: dict[str, str]) -> SignedUrl:
    s = config.settings()
    credentials = _iam_signer() if s.is_production else _local_signer()
    content_type = headers.get("Content-Type")
    extra = {k: v for k, v in headers.items() if k != "Content-Type"}
    issued = clock.now()
    blob = _signing_client(s.project).bucket(s.bucket).blob(object_name)
    # generate_signed_url_v4 adds Content-Type and Host to the dict it is given: pass a copy.
    url = blob.generate_signed_url(
        version="v4",
        expiration=URL_TTL,
        method=method,
        content_type=content_type,
        headers=dict(extra),
        credentials=credentials,
        api_access_endpoint=_endpoint(s),
    )
    return SignedUrl(url=url, method=method, headers=dict(headers), object=object_name, expires_at=issued + URL_TTL)


def _endpoint(s: config.Settings) -> str:
    host = "" if s.is_production else os.environ.get("STORAGE_EMULATOR_HOST", "")
    if host:
        return host if host.startswith("http") else f"http://{host}"
    return GCS_ENDPOINT


@functools.cache
def _signing_client(project: str) -> Any:
    """A client used only to build Blob objects for signing: it never makes a request, so it needs no
    credentials (and unit tests need no Application Default Credentials)."""
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage as gcs  # type: ignore[attr-defined]  # google-cloud-storage has no type information

    return gcs.Client(project=project, credentials=AnonymousCredentials())


# --- local: the development key -------------------------------------------------------------------


def _local_signer() -> Any:
    if config.settings().is_production:
        raise config.ConfigError("production never signs with the development key (IAM signBlob only)")
    return _dev_credentials(config.secret(config.DEV_SIGNER))


@functools.lru_cache(maxsize=4)
def _dev_credentials(info_json: str) -> Any:
    from google.oauth2 import service_account

    return service_account.Credentials.from_service_account_info(json.loads(info_json))


# --- production: IAM signBlob with the function's own service account --------------------------

_token_lock = threading.Lock()
_default_credentials: Any = None


class IamSigner:
    """`google.auth.credentials.Signing` over IAM signBlob (registered as one on first use), so
    google-cloud-storage builds the V4 request and only the signature comes from IAM."""

    def __init__(self, email: str, token: str) -> None:
        self._email = email
        self._token = token

    @property
    def signer_email(self) -> str:
        return self._email

    @property
    def signer(self) -> IamSigner:
        return self

    @property
    def key_id(self) -> None:
        return None

    def sign(self, message: bytes | str) -> bytes:
        return self.sign_bytes(message)

    def sign_bytes(self, message: bytes | str) -> bytes:
        data = message.encode() if isinstance(message, str) else message
        return sign_blob(self._email, self._token, data)


@functools.cache
def _register_iam_signer() -> None:
    from google.auth.credentials import Signing

    Signing.register(IamSigner)


def _iam_signer() -> IamSigner:
    _register_iam_signer()
    email, token = _service_account_token()
    return IamSigner(email, token)


def _service_account_token() -> tuple[str, str]:
    """(email, bearer token) of the function's own service account, refreshed when stale."""
    global _default_credentials
    import google.auth
    from google.auth import exceptions as auth_errors

    with _token_lock:
        try:
            if _default_credentials is None:
                _default_credentials, _ = google.auth.default(scopes=[CLOUD_PLATFORM_SCOPE])
            credentials = _default_credentials
            if not credentials.valid:
                from google.auth.transport.requests import Request

                credentials.refresh(Request())
        except auth_errors.DefaultCredentialsError as exc:
            raise config.ConfigError(f"no default credentials to sign URLs with: {exc}") from exc
        except (auth_errors.RefreshError, auth_errors.TransportError) as exc:
            raise SigningUnavailable(f"could not get an access token for IAM signBlob: {exc}") from exc
        email = getattr(credentials, "service_account_email", None) or ""
        token = credentials.token
    if "@" not in email:
        raise config.ConfigError(
            f"the default credentials ({type(credentials).__name__}) name no service account to sign as"
        )
    if not token:
        raise SigningUnavailable("the default credentials gave no access token")
    return email, token


@functools.cache
def _iam_http() -> Any:
    import httpx

    return httpx.Client(follow_redirects=False)


def sign_blob(email: str, token: str, payload: bytes) -> bytes:
    """RSA-SHA256 signature of `payload` by `email`'s Google-managed key, through IAM signBlob.

    Retries 429/5xx and connection failures while the settings' deadline (`rpc_timeout_s`) lasts;
    any failure raises SigningUnavailable."""
    import httpx

    url = f"{IAM_ENDPOINT}/v1/projects/-/serviceAccounts/{email}:signBlob"
    body = {"payload": base64.b64encode(payload).decode("ascii")}
    headers = {"Authorization": f"Bearer {token}"}
    deadline = time.monotonic() + clients.deadline()
    failure = "no attempt made"
    for attempt in range(_IAM_ATTEMPTS):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        try:
            resp = _iam_http().post(url, json=body, headers=headers, timeout=httpx.Timeout(remaining))
        except httpx.TimeoutException as exc:
            raise SigningUnavailable(f"IAM signBlob did not answer within {clients.deadline()}s") from exc
        except httpx.TransportError as exc:
            failure = f"IAM signBlob unreachable: {type(exc).__name__}: {exc}"
            error: BaseException | None = exc
        else:
            if resp.status_code == 200:
                return _signature(resp)
            failure = f"IAM signBlob answered {resp.status_code}: {_iam_error(resp)}"
            error = None
            if resp.status_code not in _IAM_RETRY_STATUS:
                raise SigningUnavailable(failure)
        pause = 0.1 * 2**attempt
        if attempt + 1 < _IAM_ATTEMPTS and deadline - time.monotonic() > pause:
            time.sleep(pause)
            continue
        raise SigningUnavailable(failure) from error
    raise SigningUnavailable(failure)


def _signature(resp: Any) -> bytes:
    try:
        return base64.b64decode(resp.json()["signedBlob"], validate=True)
    except (ValueError, KeyError, TypeError) as exc:
        raise SigningUnavailable("IAM signBlob answered 200 without a usable signedBlob") from exc


def _iam_error(resp: Any) -> str:
    """The API's error message (never echoes the request, so never the token)."""
    try:
        message = resp.json()["error"]["message"]
    except (ValueError, KeyError, TypeError):
        message = resp.text
    return str(message)[:300]


# --- bucket CORS ----------------------------------------------------------------------------------


def lab_origin(url: str | None = None) -> str:
    """The origin (scheme://host[:port]) of the lab URL (default: the settings' lab_url)."""
    parts = urlsplit(url if url is not None else config.settings().lab_url)
    return f"{parts.scheme}://{parts.netloc}"


def bucket_cors(origin: str | None = None) -> list[dict[str, Any]]:
    """The bucket's CORS rules: the lab origin only; the signed URLs' methods; exactly the request
    headers they pin (GCS uses `responseHeader` both to allow request headers in a preflight and to
    expose response headers)."""
    origin = lab_origin() if origin is None else origin
    parts = urlsplit(origin)
    if (
        "*" in origin
        or parts.scheme not in ("http", "https")
        or not parts.netloc
        or f"{parts.scheme}://{parts.netloc}" != origin
    ):
        raise ValueError(f"a CORS origin is scheme://host[:port] without wildcard or path, got {origin!r}")
    return [
        {
            "origin": [origin],
            "method": list(CORS_METHODS),
            "responseHeader": list(UPLOAD_HEADERS),
            "maxAgeSeconds": CORS_MAX_AGE_S,
        }
    ]


def cors_file(origin: str = CORS_FILE_ORIGIN) -> str:
    """The JSON `gcloud storage buckets update gs://BUCKET --cors-file=FILE` takes."""
    return json.dumps(bucket_cors(origin), indent=2) + "\n"


def apply_bucket_cors(bucket: str | None = None, origin: str | None = None) -> list[dict[str, Any]]:
    """Set the bucket's CORS rules through the JSON API (`make dev` bootstrap; production uses the file)."""
    rules = bucket_cors(origin)
    target = clients.storage().bucket(bucket or config.settings().bucket)
    target.cors = rules
    target.patch(**clients.opts())
    return rules


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m mllab.files.storage")
    commands = parser.add_subparsers(dest="command", required=True)
    cors = commands.add_parser("cors", help="print the bucket CORS file for an origin")
    cors.add_argument("--origin", default=None, help="the lab origin (default: MLLAB_LAB_URL's origin)")
    args = parser.parse_args(argv)
    try:
        sys.stdout.write(cors_file(args.origin if args.origin is not None else lab_origin()))
    except ValueError as exc:
        parser.error(str(exc))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
