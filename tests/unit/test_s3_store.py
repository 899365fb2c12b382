"""What the S3 store's URLs sign, checked the way S3 and R2 check them (moto's server checks no
signature at all, docs/operations.md): the SigV4 canonical request is rebuilt here, independently of
botocore, from the URL and the headers the browser will send, and the signature recomputed with the
secret key. A request that differs in any signed part (type, length, the create-only precondition,
the object, the method) no longer matches; the URL lives 10 minutes."""

from __future__ import annotations

import hashlib
import hmac
import json
import subprocess
import sys
from datetime import timedelta
from urllib.parse import parse_qsl, quote, urlsplit

import pytest

from mllab.files import objects, s3, storage, store
from mllab.platform import clock, config

SECRET = "s3cr3t-key-for-tests"
ENDPOINT = "https://0123abcd.r2.cloudflarestorage.com"
UID, PID, MID = "a" * 32, "b" * 32, "c" * 32
MODEL = str(objects.model_file(UID, PID, MID, 3, "model"))


@pytest.fixture(autouse=True)
def s3_settings(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    secrets = tmp_path / "mounted-secrets"
    secrets.mkdir(exist_ok=True)
    (secrets / config.S3_CREDENTIALS).write_text(json.dumps({"access_key_id": "AKTEST", "secret_access_key": SECRET}))
    monkeypatch.setenv("MLLAB_STORAGE", "s3")
    monkeypatch.setenv("MLLAB_S3_ENDPOINT", ENDPOINT)
    monkeypatch.setenv("MLLAB_BUCKET", "models")
    monkeypatch.setenv("MLLAB_SECRETS_DIR", str(secrets))
    config.reload()
    s3.reset()
    yield
    s3.reset()


def _enc(value: str, safe: str = "-_.~") -> str:
    return quote(value, safe=safe)


def signature_matches(url: str, method: str, sent: dict[str, str], secret: str = SECRET) -> bool:
    """Whether an S3 endpoint would accept this presigned request (SigV4, query authentication)."""
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    given = query.pop("X-Amz-Signature")
    signed_names = query["X-Amz-SignedHeaders"].split(";")
    headers = {k.lower(): v.strip() for k, v in {**sent, "Host": parts.netloc}.items()}
    if any(name not in headers for name in signed_names):
        return False
    canonical = "\n".join(
        [
            method,
            _enc(parts.path, safe="/-_.~"),
            "&".join(f"{_enc(k)}={_enc(v)}" for k, v in sorted(query.items())),
            "".join(f"{name}:{headers[name]}\n" for name in signed_names),
            ";".join(signed_names),
            "UNSIGNED-PAYLOAD",
        ]
    )
    _, date, region, service, terminal = query["X-Amz-Credential"].split("/")
    scope = f"{date}/{region}/{service}/{terminal}"
    to_sign = "\n".join(
        ["AWS4-HMAC-SHA256", query["X-Amz-Date"], scope, hashlib.sha256(canonical.encode()).hexdigest()]
    )
    key = f"AWS4{secret}".encode()
    for part in (date, region, service, terminal):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return hmac.compare_digest(hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest(), given)


def upload_request(size: int = 1234) -> tuple[storage.SignedUrl, dict[str, str]]:
    signed = s3.signed_upload_url(MODEL, "application/json", size)
    return signed, {**signed.headers, "Content-Length": str(size)}  # the browser adds the body's length


def test_an_upload_url_is_accepted_with_exactly_the_headers_it_names() -> None:
    signed, sent = upload_request()
    assert signed.method == "PUT" and signed.object == MODEL
    assert signed.headers == {"Content-Type": "application/json", "If-None-Match": "*"}
    assert signature_matches(signed.url, "PUT", sent)


@pytest.mark.parametrize(
    ("change", "value"),
    [
        ("Content-Type", "text/html"),
        ("Content-Length", "1235"),  # one byte more than declared
        ("If-None-Match", '"etag-of-something"'),
    ],
)
def test_an_upload_with_any_other_signed_header_does_not_match(change: str, value: str) -> None:
    signed, sent = upload_request()
    assert not signature_matches(signed.url, "PUT", {**sent, change: value})


def test_an_upload_without_the_create_only_precondition_does_not_match() -> None:
    signed, sent = upload_request()
    assert "if-none-match" in dict(parse_qsl(urlsplit(signed.url).query))["X-Amz-SignedHeaders"].split(";")
    assert not signature_matches(signed.url, "PUT", {k: v for k, v in sent.items() if k != "If-None-Match"})


def test_an_upload_url_names_one_object_one_method_and_the_secret_it_was_signed_with() -> None:
    signed, sent = upload_request()
    other = str(objects.model_file(UID, PID, MID, 4, "model"))
    assert not signature_matches(signed.url.replace(MODEL, other), "PUT", sent)
    assert not signature_matches(signed.url, "GET", sent)
    assert not signature_matches(signed.url, "PUT", sent, secret="another-secret")


def test_urls_expire_after_ten_minutes_from_the_moment_they_are_issued() -> None:
    before = clock.now()
    signed, _ = upload_request()
    query = dict(parse_qsl(urlsplit(signed.url).query))
    assert query["X-Amz-Expires"] == "600"
    assert timedelta(0) <= signed.expires_at - (before + timedelta(minutes=10)) < timedelta(seconds=5)
    assert query["X-Amz-Credential"].split("/")[2] == "auto"  # R2's region


def test_a_download_url_signs_only_the_host_of_one_object() -> None:
    signed = s3.signed_download_url(MODEL)
    query = dict(parse_qsl(urlsplit(signed.url).query))
    assert (signed.method, signed.headers, query["X-Amz-SignedHeaders"]) == ("GET", {}, "host")
    assert signature_matches(signed.url, "GET", {})
    assert urlsplit(signed.url).path == f"/models/{MODEL}"


def test_virtual_host_addressing_puts_the_bucket_in_the_host(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLLAB_S3_ADDRESSING", "virtual")
    config.reload()
    signed, sent = upload_request()
    assert urlsplit(signed.url).netloc == "models.0123abcd.r2.cloudflarestorage.com"
    assert urlsplit(signed.url).path == f"/{MODEL}"
    assert signature_matches(signed.url, "PUT", sent)


def test_production_refuses_an_s3_endpoint_without_https() -> None:
    env = {
        "MLLAB_ENV": "production",
        "MLLAB_PROJECT": "mllab-prod",
        "MLLAB_PUBLIC_URL": "https://lab.example.com",
        "MLLAB_CORS_ORIGINS": "https://lab.example.com",
        "MLLAB_LAB_URL": "https://lab.example.com",
        "MLLAB_OIDC_ISSUER": "https://accounts.google.com",
        "MLLAB_STORAGE": "s3",
    }
    with pytest.raises(config.ConfigError, match="s3_endpoint must be https"):
        config.load({**env, "MLLAB_S3_ENDPOINT": "http://minio.internal:9000"})
    assert config.load({**env, "MLLAB_S3_ENDPOINT": ENDPOINT}).storage == "s3"


def test_an_unusable_credentials_secret_or_no_endpoint_is_a_configuration_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path
) -> None:
    (tmp_path / "mounted-secrets" / config.S3_CREDENTIALS).write_text('{"access_key_id": "only"}')
    with pytest.raises(config.ConfigError, match="access_key_id and secret_access_key"):
        s3.signed_download_url(MODEL)
    monkeypatch.delenv("MLLAB_S3_ENDPOINT")
    config.reload()
    with pytest.raises(config.ConfigError, match="MLLAB_S3_ENDPOINT"):
        s3.signed_download_url(MODEL)


def test_the_bucket_cors_allows_the_lab_origin_and_exactly_the_pinned_headers() -> None:
    assert s3.bucket_cors("https://lab.example.com") == {
        "CORSRules": [
            {
                "AllowedOrigins": ["https://lab.example.com"],
                "AllowedMethods": ["PUT", "GET", "HEAD"],
                "AllowedHeaders": ["content-type", "if-none-match"],
                "ExposeHeaders": ["ETag"],
                "MaxAgeSeconds": 3600,
            }
        ]
    }
    with pytest.raises(ValueError):
        s3.bucket_cors("*")


def test_a_generation_is_the_same_for_head_and_list_and_differs_by_content() -> None:
    from datetime import UTC, datetime

    head_time = datetime(2026, 12, 7, 12, 0, 5, tzinfo=UTC)  # HEAD's Last-Modified: whole seconds
    list_time = head_time.replace(microsecond=0)  # LIST's: milliseconds, .000 on S3
    one = s3.generation_of(head_time, '"781e5e245d69b566979b86e28d23f2c7"')
    assert one == s3.generation_of(list_time, "781e5e245d69b566979b86e28d23f2c7")
    assert one != s3.generation_of(head_time, '"0f1e5e245d69b566979b86e28d23f2c7"')
    assert s3.generation_of(head_time, '"9b2cf535f27731c974343645a3985328-3"') > 0  # a multipart ETag


def test_importing_the_s3_store_loads_no_s3_library() -> None:
    code = (
        "import sys, mllab.files.s3; print(sorted(m for m in sys.modules if m.split('.')[0] in ('botocore', 'boto3')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_a_published_object_event_parses_as_a_gcs_notification_does() -> None:
    import base64
    from datetime import UTC, datetime

    from cloudevents.http import CloudEvent

    from mllab.files import events, notify

    info = store.ObjectInfo(
        name=MODEL,
        size=1234,
        generation=s3.generation_of(datetime(2026, 12, 7, 12, 0, 5, tzinfo=UTC), '"781e5e245d69b566979b86e28d23f2c7"'),
        content_type="application/json",
        md5=s3._md5('"781e5e245d69b566979b86e28d23f2c7"'),
        updated=datetime(2026, 12, 7, 12, 0, 5, tzinfo=UTC),
    )
    data, attributes = notify.object_message(notify.FINALIZE, "models", info)
    pushed = CloudEvent(
        {"type": events.PUBSUB_TYPE, "source": "//pubsub.googleapis.com/t", "id": "m-1", "specversion": "1.0"},
        {"message": {"data": base64.b64encode(data).decode(), "attributes": attributes, "messageId": "m-1"}},
    )
    event = events.parse(pushed)
    assert (event.event_type, event.bucket, event.name, event.generation) == (
        "OBJECT_FINALIZE",
        "models",
        MODEL,
        info.generation,
    )
    assert (event.size, event.content_type, event.md5) == (1234, "application/json", "eB5eJF1ptWaXm4bijSPyxw==")
    assert event.key == events.object_key("models", MODEL, info.generation)
