"""The suites that run on both file stores (`make test` runs each module once per store): a module
stack fixture parametrized over them, and what a test does with a stored object the same way on both.
On GCS the bucket reports objects itself; on S3 the lab reports each upload through POST
/signed/complete, and the sweep reports what nothing else did."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import httpx
import pytest

from mllab.platform import clients
from mllab_dev.stack import BUCKET, Stack

from .conftest import Browser, running_stack

BACKENDS = ("gcs", "s3")


def on_backend(backend: str, shared: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The suite's shared (GCS) stack, or a stack of this module's on the S3 store (moto's server)."""
    if backend == "gcs":
        yield shared
        return
    with running_stack(tmp_path_factory.mktemp("s3stack"), storage_backend="s3") as s:
        yield s


def is_s3(stack: Stack) -> bool:
    return stack.storage == "s3"


def upload_headers(stack: Stack, content_type: str, size: int) -> dict[str, str]:
    """The headers an upload URL for this type and size pins on this store."""
    if is_s3(stack):
        return {"Content-Type": content_type, "If-None-Match": "*"}
    return {
        "Content-Type": content_type,
        "x-goog-content-length-range": f"0,{size}",
        "x-goog-if-generation-match": "0",
    }


def upload(lab: Browser, body: dict, data: bytes, headers: dict | None = None) -> tuple[dict, httpx.Response]:
    """What the lab does for one file: sign, PUT to the store, report the upload. (signed, PUT response)"""
    r = lab.request("POST", "/signed/upload", json_body=body)
    assert r.status_code == 200, r.text
    signed = r.json()
    assert signed["method"] == "PUT"
    put = httpx.put(signed["url"], content=data, headers=signed["headers"] if headers is None else headers, timeout=20)
    if put.status_code in (200, 412):
        done = lab.request("POST", "/signed/complete", json_body={"object": signed["object"]})
        assert done.status_code == 202, done.text
    return signed, put


def stored(stack: Stack, name: str) -> bool:
    """Whether the store holds an object by this name."""
    if is_s3(stack):
        from mllab.files import s3

        return s3.stat(name) is not None
    return clients.storage().bucket(BUCKET).get_blob(name) is not None


def write_behind_the_api(stack: Stack, name: str, data: bytes, content_type: str) -> None:
    """Store an object without a signed URL (as someone holding the bucket's keys could); the store
    reports it: GCS's notification, or on S3 the sweep (the completion route takes no such name)."""
    if is_s3(stack):
        from mllab.files import completion, s3

        s3.client().put_object(Bucket=BUCKET, Key=name, Body=data, ContentType=content_type)
        assert name in completion.sweep(min_age=timedelta(0))
        return
    clients.storage().bucket(BUCKET).blob(name).upload_from_string(data, content_type=content_type)
