"""Shared by the limits tests: signed-in users (free or PRO), problem checks, JSON values of an exact
size and depth, uploads straight to the bucket, and a scan of every Firestore collection."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx

from mllab.billing import entitlements, subscriptions
from mllab.files import events, recorder
from mllab.platform import clients, config, jsonvalues
from mllab_dev.stack import Stack

from .conftest import Browser


def signed_in(stack: Stack, user: dict, *, pro: bool = False) -> Browser:
    if pro:
        subscriptions.set_grant(user["uid"], lambda doc, now: entitlements.with_grant(doc, None, now))
    b = Browser(stack.gateway_url)
    r = b.login(user["email"], user["password"])
    assert r.status_code == 200, r.text
    b.uid, b.email = user["uid"], user["email"]  # type: ignore[attr-defined]
    return b


def ok(r: httpx.Response, status: int = 200) -> Any:
    assert r.status_code == status, r.text[:2000]
    return r.json() if r.content else None


def problem(r: httpx.Response, status: int | None = None) -> dict:
    """The problem+json body of a refusal (any 4xx unless `status` is given)."""
    assert (r.status_code == status) if status else 400 <= r.status_code < 500, (r.status_code, r.text[:2000])
    assert r.headers["content-type"].startswith("application/problem+json"), r.headers
    body = r.json()
    assert body["status"] == r.status_code and body["detail"] and body["request_id"]
    return body


def nested(depth: int, size: int) -> dict:
    """A JSON object nested exactly `depth` levels deep whose compact JSON is exactly `size` bytes."""
    inner = {"p": ""}
    value: dict = inner
    for _ in range(depth - 1):
        value = {"a": value}
    pad = size - len(jsonvalues.compact_json(value).encode())
    assert pad >= 0, f"{size} bytes cannot hold {depth} levels"
    inner["p"] = "x" * pad
    assert jsonvalues.json_depth(value) == depth and len(jsonvalues.compact_json(value).encode()) == size
    return value


def bucket():
    return clients.storage().bucket(config.settings().bucket)


def _s3() -> bool:
    return config.settings().storage == "s3"


def generation_of(name: str) -> int | None:
    """The stored object's generation, or None when there is none (either file store)."""
    if _s3():
        from mllab.files import s3

        info = s3.stat(name)
        return info.generation if info else None
    blob = bucket().get_blob(name)
    return int(blob.generation) if blob else None


def gone(name: str) -> bool:
    return generation_of(name) is None


def wait(predicate, timeout: float = 20.0):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.1)


def artifact(name: str, generation: int) -> dict | None:
    snap = (
        clients.firestore()
        .collection(recorder.ARTIFACTS)
        .document(events.object_key(config.settings().bucket, name, generation))
        .get()
    )
    return snap.to_dict() if snap.exists else None


def never_recorded(name: str, generation: int) -> bool:
    """No artifact was recorded for this generation (a tombstone left by its deletion is no record)."""
    a = artifact(name, generation)
    return a is None or bool(a.get("tombstone"))


def upload(name: str, data: bytes, content_type: str) -> int:
    """Put an object straight into the bucket, as a (replayed) signed PUT lands; its generation. On S3
    it is then reported as its completion would report it."""
    if _s3():
        from mllab.files import notify, s3

        s3.client().put_object(Bucket=config.settings().bucket, Key=name, Body=data, ContentType=content_type)
        info = s3.stat(name)
        assert info is not None
        notify.publish(notify.FINALIZE, info)
        return info.generation
    blob = bucket().blob(name)
    blob.upload_from_string(data, content_type=content_type)
    return int(blob.generation)


def metrics(model_id: str, **changes: Any) -> dict:
    doc = {
        "schema": 1,
        "model_id": model_id,
        "version": None,
        "dataset_id": None,
        "task": "binary",
        "params": {"epochs": 1},
        "epochs": [{"epoch": 1, "loss": 0.5}],
        "final": {"loss": 0.5},
        "backend": "cpu",
        "started_at": "2026-01-01T00:00:00Z",
        "finished_at": "2026-01-01T00:00:01Z",
    }
    return {**doc, **changes}


def metrics_of_size(model_id: str, size: int) -> bytes:
    """A schema-valid metrics.json of exactly `size` bytes (the padding is in `params`)."""
    doc = metrics(model_id, params={"note": ""})
    pad = size - len(json.dumps(doc, separators=(",", ":")).encode())
    assert pad >= 0
    doc["params"]["note"] = "x" * pad
    data = json.dumps(doc, separators=(",", ":")).encode()
    assert len(data) == size
    return data


def every_document() -> list[tuple[str, dict]]:
    """(path, fields) of every document in the Firestore emulator, subcollections included."""
    out: list[tuple[str, dict]] = []

    def walk(collection: Any) -> None:
        for snap in collection.stream():
            out.append((snap.reference.path, snap.to_dict()))
            for sub in snap.reference.collections():
                walk(sub)
        for ref in collection.list_documents():  # documents that exist only as parents of others
            if not ref.get().exists:
                for sub in ref.collections():
                    walk(sub)
                out.append((ref.path, {}))

    for collection in clients.firestore().collections():
        walk(collection)
    return out


def naming(needles: list[str]) -> list[tuple[str, str]]:
    """(path, needle) for every document whose path or any value contains one of `needles`."""
    found = []
    for path, doc in every_document():
        text = path + " " + json.dumps(jsonvalues.jsonable(doc), ensure_ascii=False)
        found += [(path, n) for n in needles if n in text]
    return found
