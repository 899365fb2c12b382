"""The file store seam: every operation on stored files goes through here, to one of two implementations
selected by `MLLAB_STORAGE` (mllab.platform.config): GCS (the default: mllab.files.storage signs, the GCS client reads
and deletes) or an S3-compatible bucket (mllab.files.s3). Callers (uploads, the recorder, the catalog's
deletes, the account purge) are the same for both; each implementation's library is imported only when
it is the one selected.

Events: a GCS bucket reports each create and delete to the events topic itself (its Pub/Sub
notification). An S3-compatible store reports nothing there, so on S3 a delete made here publishes the
OBJECT_DELETE event itself (mllab.files.notify), and creates are reported by the completion route and
the sweep (mllab.files.completion)."""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from mllab.files import storage
from mllab.platform import clients, config

READ_CHUNK = 1024 * 1024


@dataclass(frozen=True)
class ObjectInfo:
    """What the store reports of one object (the fields a GCS object resource gives the recorder): an S3
    store's stat and list answer it, and mllab.files.notify publishes it as a GCS notification would."""

    name: str
    size: int
    generation: int
    content_type: str | None
    md5: str | None  # base64 of the MD5 digest, as GCS's md5Hash (None for a multipart ETag)
    updated: datetime


def is_s3() -> bool:
    return config.settings().storage == "s3"


def signed_upload_url(object_name: str, content_type: str, size: int) -> storage.SignedUrl:
    """A URL to PUT exactly this file once (GCS: any size up to `size`; S3: exactly `size` bytes)."""
    if is_s3():
        from mllab.files import s3

        return s3.signed_upload_url(object_name, content_type, size)
    return storage.signed_upload_url(object_name, content_type, size)


def signed_download_url(object_name: str) -> storage.SignedUrl:
    if is_s3():
        from mllab.files import s3

        return s3.signed_download_url(object_name)
    return storage.signed_download_url(object_name)


def read(object_name: str, generation: int) -> bytes:
    """The bytes of exactly this generation. When it is gone or replaced: FileNotFoundError on S3,
    google.api_core's NotFound on GCS."""
    if is_s3():
        from mllab.files import s3

        return s3.read(object_name, generation)
    return bytes(_blob(object_name, generation).download_as_bytes(**clients.opts()))


@contextlib.contextmanager
def open_object(object_name: str, generation: int) -> Iterator[Any]:
    """A buffered binary stream of exactly this generation, read a chunk at a time (errors as read's)."""
    if is_s3():
        from mllab.files import s3

        body = s3.open_object(object_name, generation)
        try:
            yield io.BufferedReader(_Raw(body), READ_CHUNK)
        finally:
            body.close()
        return
    with _blob(object_name, generation).open("rb", chunk_size=READ_CHUNK, **{"timeout": clients.deadline()}) as fh:
        yield fh


def _blob(object_name: str, generation: int) -> Any:
    return clients.storage().bucket(config.settings().bucket).blob(object_name, generation=generation)


class _Raw(io.RawIOBase):
    """An S3 response body as a raw stream (io.BufferedReader and io.TextIOWrapper need readinto)."""

    def __init__(self, body: Any) -> None:
        self._body = body

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self._body.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


def delete_generation(object_name: str, generation: int) -> None:
    """Delete exactly this generation, never a newer one; nothing when it is gone already."""
    if is_s3():
        from mllab.files import notify, s3

        info = s3.stat(object_name)
        if info is not None and info.generation == generation and s3.delete(object_name):
            notify.publish(notify.DELETE, info)
        return
    from google.api_core.exceptions import NotFound, PreconditionFailed

    # NotFound: already gone; PreconditionFailed: replaced by a newer upload that gets its own event
    with contextlib.suppress(NotFound, PreconditionFailed):
        clients.storage().bucket(config.settings().bucket).blob(object_name).delete(
            if_generation_match=generation, **clients.opts()
        )


def delete_prefix(object_prefix: str) -> int:
    """Delete every object under a prefix; how many were deleted (the recorder frees their quota on
    the OBJECT_DELETE events)."""
    if not object_prefix.startswith("users/") or not object_prefix.endswith("/"):
        raise ValueError(f"refusing to delete under {object_prefix!r}")
    if is_s3():
        from mllab.files import notify, s3

        deleted = 0
        for info in list(s3.list_prefix(object_prefix)):
            if s3.delete(info.name, info.generation):
                notify.publish(notify.DELETE, info)
                deleted += 1
        return deleted
    from google.api_core.exceptions import NotFound

    bucket = clients.storage().bucket(config.settings().bucket)
    deleted = 0
    for blob in bucket.list_blobs(prefix=object_prefix, **clients.opts()):
        try:
            blob.delete(**clients.opts())
        except NotFound:
            continue  # deleted meanwhile (a concurrent delete, or the recorder refusing it)
        deleted += 1
    return deleted


def apply_bucket_cors(origin: str | None = None) -> Any:
    if is_s3():
        from mllab.files import s3

        return s3.apply_bucket_cors(origin)
    return storage.apply_bucket_cors(origin=origin)
