"""An S3-compatible bucket (Cloudflare R2, Amazon S3, MinIO) as the file store (`MLLAB_STORAGE=s3`): the
operations mllab.files.storage does on GCS, through the S3 API with botocore, which builds every SigV4 request
and presigned URL (nothing here signs by hand). botocore is imported on first use only: a GCS deployment
never loads it (tests/stack/test_function_imports.py).

Uploads are as tight as GCS's (docs/architecture.md, the event path), without POST policies (R2 has none):
a presigned PUT, valid 10 minutes, that signs Content-Type, Content-Length (the exact size the lab
declared, where GCS signs a range 0..size) and `If-None-Match: *`, so the store creates the object only
if none exists under the name: one URL makes at most one object, and a replay answers 412. The recorder
checks type, size, owner and quota again, whatever the store enforced.

What moto's S3 server (the local stack and the tests) enforces, measured on moto 5.2.5: `If-None-Match: *`
on a PUT (412 when the object exists), and nothing of a SigV4 signature: not its expiry, not the signed
Content-Type or Content-Length, not even a wrong secret key or a tampered signature (anonymous PUTs are
accepted too). Real S3 and R2 refuse all of those with 403. So the tests check what this module signs
(tests/unit/test_s3_store.py) and the recorder's own refusals (tests/stack), never moto's enforcement of
a signature. docs/operations.md lists the gaps.

Generations: S3 has none (and R2 no versioning). An object's generation here is derived from what
HEAD and LIST both report, its Last-Modified second and its ETag: `seconds * 10**6 + (the ETag's first
five hex digits) % 10**6`. It names one stored object, so the recorder's idempotency (one artifact per
bucket/name/generation) holds for a completion and a sweep reporting the same object.
"""

from __future__ import annotations

import base64
import binascii
import functools
import json
from collections.abc import Iterator
from datetime import datetime
from typing import Any

from mllab.files import storage
from mllab.files.store import ObjectInfo
from mllab.platform import clock, config

# The request headers an upload URL pins besides Host and Content-Length (which the browser sets from
# the body and may not set itself): the bucket's CORS must allow exactly these.
IF_NONE_MATCH = "If-None-Match"
UPLOAD_HEADERS = ("Content-Type", IF_NONE_MATCH)
_ATTEMPTS = 2  # botocore's "standard" retry mode: the first try and one retry, within the deadline


class StoreUnavailable(ConnectionError):
    """The S3 endpoint did not answer in time or at all: answer 503. A `ConnectionError`, so
    `mllab.http.dependency_outage` recognises it."""


# --- signed URLs ----------------------------------------------------------------------------------


def signed_upload_url(object_name: str, content_type: str, size: int) -> storage.SignedUrl:
    """A presigned PUT for exactly this object, content type and size, that creates the object only if
    none exists under the name."""
    if size < 0:
        raise ValueError("size must be >= 0")
    params = {
        "Bucket": config.settings().bucket,
        "Key": object_name,
        "ContentType": content_type,
        "ContentLength": size,
        "IfNoneMatch": "*",
    }
    return _presign("put_object", params, {"Content-Type": content_type, IF_NONE_MATCH: "*"})


def signed_download_url(object_name: str) -> storage.SignedUrl:
    """A presigned GET for exactly this object; no request header is pinned."""
    return _presign("get_object", {"Bucket": config.settings().bucket, "Key": object_name}, {})


def _presign(operation: str, params: dict[str, Any], headers: dict[str, str]) -> storage.SignedUrl:
    issued = clock.now()
    ttl = int(storage.URL_TTL.total_seconds())
    url = client().generate_presigned_url(operation, Params=params, ExpiresIn=ttl)
    method = "PUT" if operation == "put_object" else "GET"
    return storage.SignedUrl(
        url=url, method=method, headers=headers, object=params["Key"], expires_at=issued + storage.URL_TTL
    )


# --- objects --------------------------------------------------------------------------------------


def generation_of(last_modified: datetime, etag: str) -> int:
    """The generation this module gives an object (see the module docstring)."""
    digits = "".join(c for c in etag.lower() if c in "0123456789abcdef")[:5] or "0"
    return int(last_modified.timestamp()) * 10**6 + int(digits, 16) % 10**6


def _md5(etag: str) -> str | None:
    value = etag.strip('"')
    try:
        return base64.b64encode(binascii.unhexlify(value)).decode() if len(value) == 32 else None
    except binascii.Error:
        return None


def stat(object_name: str) -> ObjectInfo | None:
    """The object's metadata, or None when there is no such object."""
    try:
        head = _call("head_object", Bucket=config.settings().bucket, Key=object_name)
    except _NotFound:
        return None
    return ObjectInfo(
        name=object_name,
        size=int(head["ContentLength"]),
        generation=generation_of(head["LastModified"], head["ETag"]),
        content_type=head.get("ContentType"),
        md5=_md5(head["ETag"]),
        updated=head["LastModified"],
    )


def read(object_name: str, generation: int | None = None) -> bytes:
    """The object's bytes (of this generation, when given: FileNotFoundError if it was replaced)."""
    return bytes(open_object(object_name, generation).read())


def open_object(object_name: str, generation: int | None = None) -> Any:
    """The object's body as a readable binary stream (read in chunks, never all in memory)."""
    try:
        got = _call("get_object", Bucket=config.settings().bucket, Key=object_name)
    except _NotFound:
        raise FileNotFoundError(object_name) from None
    if generation is not None and generation_of(got["LastModified"], got["ETag"]) != generation:
        got["Body"].close()
        raise FileNotFoundError(f"{object_name} is no longer generation {generation}")
    return got["Body"]


def delete(object_name: str, generation: int | None = None) -> bool:
    """Delete the object (only if it is still this generation, when given). True when one was deleted.

    S3 has no generation precondition on DELETE: the object is read first, so a newer object created in
    the instant between the read and the delete would be deleted too. Upload URLs never replace an
    object (`If-None-Match: *`), so only an operator's own write could be caught that way."""
    if generation is not None:
        info = stat(object_name)
        if info is None or info.generation != generation:
            return False
    _call("delete_object", Bucket=config.settings().bucket, Key=object_name)
    return True


def list_prefix(prefix: str) -> Iterator[ObjectInfo]:
    """Every object whose name starts with `prefix`, in name order, a page (1,000) at a time."""
    kwargs: dict[str, Any] = {"Bucket": config.settings().bucket, "Prefix": prefix}
    while True:
        page = _call("list_objects_v2", **kwargs)
        for item in page.get("Contents", []):
            yield ObjectInfo(
                name=item["Key"],
                size=int(item["Size"]),
                generation=generation_of(item["LastModified"], item["ETag"]),
                content_type=None,  # LIST does not report it: stat() does
                md5=_md5(item["ETag"]),
                updated=item["LastModified"],
            )
        if not page.get("IsTruncated"):
            return
        kwargs["ContinuationToken"] = page["NextContinuationToken"]


# --- bucket CORS ----------------------------------------------------------------------------------


def bucket_cors(origin: str | None = None) -> dict[str, Any]:
    """The bucket's CORS configuration (the S3 API's shape): the lab origin only, the signed URLs'
    methods, exactly the request headers an upload URL pins, and the ETag readable by the lab."""
    rule = storage.bucket_cors(origin)[0]  # validates the origin as GCS's rules do
    return {
        "CORSRules": [
            {
                "AllowedOrigins": list(rule["origin"]),
                "AllowedMethods": list(storage.CORS_METHODS),
                "AllowedHeaders": [h.lower() for h in UPLOAD_HEADERS],
                "ExposeHeaders": ["ETag"],
                "MaxAgeSeconds": storage.CORS_MAX_AGE_S,
            }
        ]
    }


def apply_bucket_cors(origin: str | None = None) -> dict[str, Any]:
    """Set the bucket's CORS configuration through the S3 API (`make dev STORAGE=s3`, the deploy)."""
    rules = bucket_cors(origin)
    _call("put_bucket_cors", Bucket=config.settings().bucket, CORSConfiguration=rules)
    return rules


def create_bucket() -> None:
    """Create the bucket if it does not exist (the local stack's bootstrap; a deployment's exists)."""
    try:
        _call("head_bucket", Bucket=config.settings().bucket)
    except _NotFound:
        _call("create_bucket", Bucket=config.settings().bucket)


# --- the client -----------------------------------------------------------------------------------


class _NotFound(Exception):
    pass


def _call(operation: str, **kwargs: Any) -> Any:
    """One S3 API call; a missing object or bucket raises _NotFound, an unreachable or hung endpoint
    StoreUnavailable, any other refusal botocore's ClientError."""
    from botocore.exceptions import BotoCoreError, ClientError, ConnectionError, HTTPClientError

    try:
        return getattr(client(), operation)(**kwargs)
    except ClientError as exc:
        code = str(exc.response.get("Error", {}).get("Code", ""))
        if code in ("404", "NoSuchKey", "NoSuchBucket", "NotFound"):
            raise _NotFound(code) from None
        raise
    except (ConnectionError, HTTPClientError) as exc:
        raise StoreUnavailable(f"the S3 endpoint did not answer: {type(exc).__name__}") from exc
    except BotoCoreError as exc:  # read timeouts and the like
        raise StoreUnavailable(f"the S3 call failed: {type(exc).__name__}") from exc


def client() -> Any:
    """The S3 client of the current settings and credentials (cached per both)."""
    s = config.settings()
    if not s.s3_endpoint:
        raise config.ConfigError("MLLAB_STORAGE=s3 needs MLLAB_S3_ENDPOINT (the bucket's S3 API endpoint)")
    return store_client(
        s.s3_endpoint, s.s3_region, s.s3_addressing, config.secret(config.S3_CREDENTIALS), s.rpc_timeout_s
    )


@functools.lru_cache(maxsize=4)
def store_client(endpoint: str, region: str, addressing: str, credentials: str, timeout: float = 8.0) -> Any:
    """A botocore S3 client for this endpoint and these credentials (the secret's JSON)."""
    import botocore.session
    from botocore.config import Config

    try:
        keys = json.loads(credentials)
        access_key, secret_key = keys["access_key_id"], keys["secret_access_key"]
    except (ValueError, KeyError, TypeError):
        raise config.ConfigError(
            f"secret {config.S3_CREDENTIALS} must be JSON with access_key_id and secret_access_key"
        ) from None
    session = botocore.session.get_session()
    return session.create_client(
        "s3",
        endpoint_url=endpoint,
        region_name=region,
        aws_access_key_id=access_key,
        aws_secret_access_key=secret_key,
        config=Config(
            signature_version="s3v4",
            s3={"addressing_style": addressing},
            connect_timeout=timeout,
            read_timeout=timeout,
            retries={"mode": "standard", "total_max_attempts": _ATTEMPTS},
            # botocore adds CRC checksums to uploads by default since 1.36; a presigned URL is signed before
            # the body exists, and S3-compatible stores differ in which checksums they take: only where required
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        ),
    )


def reset() -> None:
    """Forget cached clients (tests change the environment)."""
    store_client.cache_clear()


def main(argv: list[str] | None = None) -> int:
    """`python -m mllab.files.s3 cors --origin https://lab.example.com`: set the bucket's CORS rules through
    the S3 API, with the MLLAB_* settings and the s3-credentials secret (docs/operations.md)."""
    import argparse
    import sys

    parser = argparse.ArgumentParser(prog="python -m mllab.files.s3")
    commands = parser.add_subparsers(dest="command", required=True)
    cors = commands.add_parser("cors", help="set the bucket's CORS rules for the lab origin")
    cors.add_argument("--origin", default=None, help="the lab origin (default: MLLAB_LAB_URL's origin)")
    cors.add_argument("--print", action="store_true", help="print the rules instead of setting them")
    args = parser.parse_args(argv)
    try:
        rules = bucket_cors(args.origin) if args.print else apply_bucket_cors(args.origin)
    except ValueError as exc:
        parser.error(str(exc))
    sys.stdout.write(json.dumps(rules, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
