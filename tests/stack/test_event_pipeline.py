"""Signed-URL upload -> fake-gcs-server -> Pub/Sub emulator -> push -> on_object_finalized -> Firestore."""

from __future__ import annotations

import base64
import json
import time
import uuid

import httpx
import pytest
from cloudevents.conversion import to_binary
from cloudevents.http import CloudEvent

from mllab.files import events, objects, recorder, storage
from mllab.platform import clients
from mllab_dev.stack import BUCKET, PROJECT, TOPIC, Stack

from .conftest import function_log, wait_for_log


def _artifacts(name: str) -> list[dict]:
    db = clients.firestore()
    from google.cloud.firestore_v1.base_query import FieldFilter

    query = db.collection(recorder.ARTIFACTS).where(filter=FieldFilter("object", "==", name))
    docs = query.get(timeout=clients.deadline())
    return [d.to_dict() | {"_id": d.id} for d in docs]


def _wait_records(name: str, count: int, timeout: float = 20.0) -> list[dict]:
    deadline = time.monotonic() + timeout
    while True:
        found = _artifacts(name)
        if len(found) >= count or time.monotonic() > deadline:
            return found
        time.sleep(0.1)


@pytest.fixture
def tap(stack: Stack):
    """A pull subscription on the events topic, to see exactly what fake-gcs-server published."""
    base = f"http://127.0.0.1:{stack.ports.pubsub}/v1/projects/{PROJECT}"
    sub = f"tap-{uuid.uuid4().hex[:10]}"
    r = httpx.put(f"{base}/subscriptions/{sub}", json={"topic": f"projects/{PROJECT}/topics/{TOPIC}"})
    assert r.status_code == 200, r.text

    def pull(object_name: str, event_type: str = "OBJECT_FINALIZE", timeout: float = 15.0) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            resp = httpx.post(f"{base}/subscriptions/{sub}:pull", json={"maxMessages": 50}, timeout=10).json()
            for rm in resp.get("receivedMessages", []):
                httpx.post(f"{base}/subscriptions/{sub}:acknowledge", json={"ackIds": [rm["ackId"]]})
                attrs = rm["message"].get("attributes", {})
                if attrs.get("objectId") == object_name and attrs.get("eventType") == event_type:
                    return rm["message"]
            time.sleep(0.1)
        raise AssertionError(f"no {event_type} for {object_name} was published")

    yield pull
    httpx.delete(f"{base}/subscriptions/{sub}")


def _upload(name: str, data: bytes, content_type: str = "application/json") -> httpx.Response:
    signed = storage.signed_upload_url(name, content_type, max_bytes=1024 * 1024)
    assert "X-Goog-Signature=" in signed.url and "X-Goog-Algorithm=GOOG4-RSA-SHA256" in signed.url
    return httpx.put(signed.url, content=data, headers=signed.headers, timeout=20)


def test_signed_upload_produces_exactly_one_record(stack: Stack, records, tap) -> None:
    ids = records()
    name = str(objects.model_file(ids["uid"], ids["project_id"], ids["model_id"], 1, "model"))
    payload = json.dumps({"format": "layers-model", "id": ids["model_id"]}).encode()
    r = _upload(name, payload)
    assert r.status_code == 200, r.text

    found = _wait_records(name, 1)
    assert len(found) == 1
    rec = found[0]
    assert rec["bucket"] == BUCKET and rec["object"] == name
    assert rec["uid"] == ids["uid"] and rec["kind"] == "model" and rec["version"] == 1
    assert rec["size"] == len(payload)
    assert rec["content_type"] == "application/json"
    assert rec["deleted_at"] is None
    assert rec["_id"] == events.object_key(BUCKET, name, rec["generation"])

    # Redeliver the very message fake-gcs-server published: still exactly one record.
    message = tap(name)
    assert message["attributes"]["bucketId"] == BUCKET
    pub = httpx.post(
        f"http://127.0.0.1:{stack.ports.pubsub}/v1/projects/{PROJECT}/topics/{TOPIC}:publish",
        json={"messages": [{"data": message["data"], "attributes": message["attributes"]}]},
    )
    assert pub.status_code == 200
    lines = wait_for_log(function_log(stack, "on_object_finalized"), rec["_id"], count=2)
    assert any("duplicate object event ignored" in ln for ln in lines), lines
    assert len(_artifacts(name)) == 1


def test_an_overwrite_is_refused_and_the_dataset_says_its_file_was_lost(stack: Stack, records) -> None:
    """GCS refuses a second PUT with our upload URL (if-generation-match: 0); fake-gcs-server does not,
    so the recorder's own rule is what is seen here: the newcomer is never recorded."""
    ids = records()
    name = str(objects.dataset_file(ids["uid"], ids["project_id"], ids["dataset_id"], "train.csv"))
    assert _upload(name, b"a,b\n1,2\n", "text/csv").status_code == 200
    first = _wait_records(name, 1)
    assert len(first) == 1
    assert _upload(name, b"a,b\n1,2\n3,4\n", "text/csv").status_code == 200
    deadline = time.monotonic() + 15
    dataset = {}
    while time.monotonic() < deadline:
        dataset = clients.firestore().collection("datasets").document(ids["dataset_id"]).get().to_dict()
        gens = [g for g in _artifacts(name) if g["generation"] == first[0]["generation"]]
        if (
            dataset.get("status") == "failed"
            and gens[0]["deleted_at"] is not None
            and clients.storage().bucket(BUCKET).get_blob(name) is None
        ):
            break
        time.sleep(0.1)
    recorded = [g for g in _artifacts(name) if not g.get("tombstone")]  # (the newcomer's deletion leaves one)
    assert [g["generation"] for g in recorded] == [first[0]["generation"]]  # the newcomer: never recorded
    assert recorded[0]["deleted_at"] is not None  # OBJECT_DELETE for the overwritten generation
    assert clients.storage().bucket(BUCKET).get_blob(name) is None  # the newcomer is deleted
    assert dataset["status"] == "failed" and "overwritten" in dataset["failure"]
    assert dataset["generation"] == first[0]["generation"] and dataset["row_count"] == 1


def test_signed_url_pins_content_type_size_cap_and_ten_minutes(stack: Stack, unique: str) -> None:
    from urllib.parse import parse_qs, urlsplit

    signed = storage.signed_upload_url(f"users/u-{unique}/x/model.json", "application/json", max_bytes=2048)
    query = parse_qs(urlsplit(signed.url).query)
    assert query["X-Goog-Expires"] == ["600"]
    assert set(query["X-Goog-SignedHeaders"][0].split(";")) >= {"content-type", "host", "x-goog-content-length-range"}
    assert signed.headers == {
        "Content-Type": "application/json",
        "x-goog-content-length-range": "0,2048",
        "x-goog-if-generation-match": "0",
    }
    assert "x-goog-if-generation-match" in query["X-Goog-SignedHeaders"][0].split(";")
    assert urlsplit(signed.url).netloc == f"127.0.0.1:{stack.ports.gcs}"


def test_eventarc_shaped_event_is_recorded_once(stack: Stack, records) -> None:
    """The production delivery shape (binary CloudEvent wrapping MessagePublishedData) through the
    running function and the Firestore emulator; posting it twice still gives one record."""
    ids = records()
    name = str(objects.model_file(ids["uid"], ids["project_id"], ids["model_id"], 1, "weights"))
    resource = {
        "kind": "storage#object",
        "bucket": BUCKET,
        "name": name,
        "generation": "1700000000000001",
        "metageneration": "1",
        "contentType": "application/octet-stream",
        "size": "42",
        "crc32c": "AAAAAA==",
    }
    data = {
        "message": {
            "data": base64.b64encode(json.dumps(resource).encode()).decode(),
            "attributes": {
                "bucketId": BUCKET,
                "objectId": name,
                "objectGeneration": "1700000000000001",
                "eventType": "OBJECT_FINALIZE",
                "payloadFormat": "JSON_API_V1",
                "notificationConfig": "projects/_/buckets/b/notificationConfigs/1",
            },
            "messageId": f"m-{ids['model_id']}",
            "publishTime": "2026-11-22T00:00:00Z",
        },
        "subscription": f"projects/{PROJECT}/subscriptions/eventarc-sub",
    }
    event = CloudEvent(
        {
            "type": "google.cloud.pubsub.topic.v1.messagePublished",
            "source": f"//pubsub.googleapis.com/projects/{PROJECT}/topics/{TOPIC}",
            "id": f"m-{ids['model_id']}",
            "specversion": "1.0",
        },
        data,
    )
    headers, body = to_binary(event)
    url = f"http://127.0.0.1:{stack.ports.functions['on_object_finalized']}/"
    for _ in range(2):
        r = httpx.post(url, headers=headers, content=body, timeout=20)
        assert r.status_code == 200, r.text
    found = _artifacts(name)
    assert len(found) == 1
    assert found[0]["size"] == 42 and found[0]["generation"] == 1700000000000001
