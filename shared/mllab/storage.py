"""Object storage: V4 signed URLs for uploads.

Locally the URL is signed with a development service-account key generated into `.dev/secrets`
(fake-gcs-server accepts any signature whose host matches `-public-host`). Production signing through
IAM `signBlob` with the function's own service account arrives with the storage issue.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from mllab import clients, clock, config

URL_TTL = timedelta(minutes=10)


@dataclass(frozen=True)
class SignedUrl:
    url: str
    method: str
    headers: dict[str, str]
    object: str
    expires_at: datetime


def new_dev_service_account(project: str) -> dict[str, Any]:
    """A service-account key file for local V4 signing only."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()
    return {
        "type": "service_account", "project_id": project, "private_key_id": "dev",
        "private_key": pem, "client_email": f"dev-signer@{project}.iam.gserviceaccount.com",
        "client_id": "0", "token_uri": "https://oauth2.googleapis.com/token",
    }


def _endpoint() -> str:
    host = os.environ.get("STORAGE_EMULATOR_HOST", "")
    if host:
        return host if host.startswith("http") else f"http://{host}"
    return "https://storage.googleapis.com"


def signed_upload_url(object_name: str, content_type: str, max_bytes: int) -> SignedUrl:
    """A V4 PUT URL for exactly this object, content type and size cap."""
    s = config.settings()
    if s.is_production:
        raise config.ConfigError("production URL signing goes through IAM signBlob (storage issue)")
    from google.oauth2 import service_account

    info = json.loads(config.secret(config.DEV_SIGNER))
    credentials = service_account.Credentials.from_service_account_info(info)
    headers = {"Content-Type": content_type, "x-goog-content-length-range": f"0,{max_bytes}"}
    blob = clients.storage().bucket(s.bucket).blob(object_name)
    url = blob.generate_signed_url(
        version="v4", expiration=URL_TTL, method="PUT", content_type=content_type,
        headers={"x-goog-content-length-range": headers["x-goog-content-length-range"]},
        credentials=credentials, api_access_endpoint=_endpoint(),
    )
    return SignedUrl(url=url, method="PUT", headers=headers, object=object_name, expires_at=clock.now() + URL_TTL)
