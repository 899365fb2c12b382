"""GCS object events: the three delivery shapes, poison events, the recorder (docs/architecture.md, the event path).

Golden inputs live in tests/golden/: the raw push body the Pub/Sub emulator sends, the production
Eventarc Pub/Sub CloudEvent (binary mode) and a direct Eventarc storage CloudEvent."""

from __future__ import annotations

import base64
import copy
import hashlib
import json
from collections.abc import Callable
from typing import Any

import pytest
from cloudevents.http import CloudEvent

from mllab.files import events, recorder
from tests.unit.helpers import LogCapture, golden

# functions_framework's raw Pub/Sub conversion calls datetime.utcnow(); not ours to fix.
pytestmark = pytest.mark.filterwarnings(
    "ignore:datetime.datetime.utcnow:DeprecationWarning:functions_framework.event_conversion"
)

PUSH_PATH = "/projects/demo-mllab/topics/gcs-events"
RESOURCE = golden("gcs_object_resource.json")
EXPECTED_KEY = hashlib.sha256(f"{RESOURCE['bucket']}/{RESOURCE['name']}#{RESOURCE['generation']}".encode()).hexdigest()
DROPPED = "unusable object event dropped"


@pytest.fixture
def recorded(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[events.ObjectEvent]]:
    calls: dict[str, list[events.ObjectEvent]] = {"finalize": [], "delete": []}

    def fake_finalize(event: events.ObjectEvent) -> bool:
        calls["finalize"].append(event)
        return True

    def fake_delete(event: events.ObjectEvent) -> None:
        calls["delete"].append(event)

    monkeypatch.setattr(recorder, "finalize", fake_finalize)
    monkeypatch.setattr(recorder, "delete", fake_delete)
    return calls


@pytest.fixture
def function(load_function: Callable[[str], Any]) -> Any:
    return load_function("on_object_finalized").test_client()


def post_push(function: Any, body: dict[str, Any]) -> Any:
    return function.post(PUSH_PATH, data=json.dumps(body), content_type="application/json")


def post_binary(function: Any, shape: dict[str, Any]) -> Any:
    headers = dict(shape["headers"])
    content_type = headers.pop("Content-Type")
    return function.post("/", headers=headers, data=json.dumps(shape["body"]), content_type=content_type)


def _only(recorded: dict[str, list[events.ObjectEvent]]) -> events.ObjectEvent:
    assert recorded["delete"] == []
    (event,) = recorded["finalize"]
    return event


def _assert_is_the_golden_object(event: events.ObjectEvent) -> None:
    assert event.event_type == "OBJECT_FINALIZE"
    assert event.bucket == "mllab-local"
    assert event.name == "users/u-7f3a/models/m-42/weights.bin"
    assert event.generation == int(RESOURCE["generation"])
    assert event.size == int(RESOURCE["size"])
    assert event.content_type == RESOURCE["contentType"]
    assert event.crc32c == RESOURCE["crc32c"]
    assert event.md5 == RESOURCE["md5Hash"]
    assert event.key == EXPECTED_KEY
    assert event.uid == "u-7f3a"


# --- golden files --------------------------------------------------------------------------------


def test_golden_notifications_carry_the_golden_object_resource() -> None:
    push = golden("pubsub_push_finalize.json")
    eventarc = golden("eventarc_pubsub_finalize.json")
    storage = golden("eventarc_storage_finalized.json")
    assert json.loads(base64.b64decode(push["message"]["data"])) == RESOURCE
    assert json.loads(base64.b64decode(eventarc["body"]["message"]["data"])) == RESOURCE
    assert storage["body"]["name"] == RESOURCE["name"]
    for shape in (push["message"]["attributes"], eventarc["body"]["message"]["attributes"]):
        assert shape["objectId"] == RESOURCE["name"]
        assert shape["bucketId"] == RESOURCE["bucket"]
        assert shape["objectGeneration"] == RESOURCE["generation"]


# --- the three delivery shapes through the real function -----------------------------------------


def test_emulator_raw_push_is_parsed(function: Any, recorded: dict[str, list[events.ObjectEvent]]) -> None:
    resp = post_push(function, golden("pubsub_push_finalize.json"))
    assert resp.status_code == 200
    event = _only(recorded)
    _assert_is_the_golden_object(event)
    assert event.event_id == "1"
    assert event.event_time == "2024-11-22T01:46:40.123456Z"


def test_production_eventarc_pubsub_cloudevent_is_parsed(
    function: Any, recorded: dict[str, list[events.ObjectEvent]]
) -> None:
    resp = post_binary(function, golden("eventarc_pubsub_finalize.json"))
    assert resp.status_code == 200
    event = _only(recorded)
    _assert_is_the_golden_object(event)
    assert event.event_id == "12345678901234"
    assert event.event_time == "2024-11-22T01:46:40.123456Z"


def test_direct_storage_cloudevent_is_parsed(function: Any, recorded: dict[str, list[events.ObjectEvent]]) -> None:
    resp = post_binary(function, golden("eventarc_storage_finalized.json"))
    assert resp.status_code == 200
    event = _only(recorded)
    _assert_is_the_golden_object(event)
    assert event.event_id == "9876543210987654"
    assert event.event_time == "2024-11-22T01:46:40.123456Z"


def test_structured_mode_storage_cloudevent_is_parsed(
    function: Any, recorded: dict[str, list[events.ObjectEvent]]
) -> None:
    shape = golden("eventarc_storage_finalized.json")
    envelope = {k.removeprefix("ce-"): v for k, v in shape["headers"].items() if k.startswith("ce-")}
    envelope.update(datacontenttype="application/json", data=shape["body"])
    resp = function.post("/", data=json.dumps(envelope), content_type="application/cloudevents+json")
    assert resp.status_code == 200
    _assert_is_the_golden_object(_only(recorded))


def test_all_shapes_agree(function: Any, recorded: dict[str, list[events.ObjectEvent]]) -> None:
    post_push(function, golden("pubsub_push_finalize.json"))
    post_binary(function, golden("eventarc_pubsub_finalize.json"))
    post_binary(function, golden("eventarc_storage_finalized.json"))
    assert len(recorded["finalize"]) == 3

    def essentials(e: events.ObjectEvent) -> tuple[Any, ...]:
        return (e.event_type, e.bucket, e.name, e.generation, e.size, e.content_type, e.crc32c, e.md5, e.key, e.uid)

    assert len({essentials(e) for e in recorded["finalize"]}) == 1


def test_redelivery_parses_to_the_same_key(function: Any, recorded: dict[str, list[events.ObjectEvent]]) -> None:
    body = golden("pubsub_push_finalize.json")
    post_push(function, body)
    body["message"]["messageId"] = body["message"]["message_id"] = "2"
    post_push(function, body)
    first, second = recorded["finalize"]
    assert first.key == second.key
    assert (first.event_id, second.event_id) == ("1", "2")


def test_a_new_generation_is_a_new_key(function: Any, recorded: dict[str, list[events.ObjectEvent]]) -> None:
    body = golden("pubsub_push_finalize.json")
    post_push(function, body)
    body["message"]["attributes"]["objectGeneration"] = "1732240000999999"
    post_push(function, body)
    first, second = recorded["finalize"]
    assert first.key != second.key
    assert second.key == hashlib.sha256(f"mllab-local/{RESOURCE['name']}#1732240000999999".encode()).hexdigest()


def test_delete_notification_goes_to_the_delete_recorder(
    function: Any, recorded: dict[str, list[events.ObjectEvent]]
) -> None:
    body = golden("pubsub_push_finalize.json")
    body["message"]["attributes"].update(eventType="OBJECT_DELETE", overwrittenByGeneration="1732240000999999")
    assert post_push(function, body).status_code == 200
    assert recorded["finalize"] == []
    (event,) = recorded["delete"]
    assert event.event_type == "OBJECT_DELETE"
    assert event.key == EXPECTED_KEY
    assert event.overwritten_by_generation == 1732240000999999


def test_other_event_types_are_acknowledged_and_ignored(
    function: Any, recorded: dict[str, list[events.ObjectEvent]], logs: LogCapture
) -> None:
    body = golden("pubsub_push_finalize.json")
    body["message"]["attributes"]["eventType"] = "OBJECT_METADATA_UPDATE"
    assert post_push(function, body).status_code == 200
    assert recorded == {"finalize": [], "delete": []}
    (line,) = logs.find("object event ignored")
    assert line["event_type"] == "OBJECT_METADATA_UPDATE"


# --- poison events -------------------------------------------------------------------------------


def _push_with(mutate: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    body = golden("pubsub_push_finalize.json")
    mutate(body["message"])
    return body


def _b64(obj: Any) -> str:
    raw = obj if isinstance(obj, bytes) else json.dumps(obj).encode()
    return base64.b64encode(raw).decode()


POISON_PUSHES: dict[str, Callable[[dict[str, Any]], None]] = {
    "non-base64 data": lambda m: m.update(data="!!! not base64 !!!"),
    "base64 of non-JSON": lambda m: m.update(data=_b64(b"\xff\xfe not json")),
    "base64 of a JSON array": lambda m: m.update(data=_b64([1, 2, 3])),
    "no attributes": lambda m: m.pop("attributes"),
    "missing objectGeneration": lambda m: m["attributes"].pop("objectGeneration"),
    "missing bucketId": lambda m: m["attributes"].pop("bucketId"),
    "empty objectId": lambda m: m["attributes"].update(objectId=""),
    "non-integer generation": lambda m: m["attributes"].update(objectGeneration="12abc"),
    "data is not a string": lambda m: m.update(data=12345),
    "attributes are not an object": lambda m: m.update(attributes=["bucketId", "objectId"]),
    "object id is not a string": lambda m: m["attributes"].update(objectId=["users", "u1"]),
}


@pytest.mark.parametrize("case", sorted(POISON_PUSHES))
def test_poison_push_is_acknowledged_logged_and_not_recorded(
    function: Any, recorded: dict[str, list[events.ObjectEvent]], logs: LogCapture, case: str
) -> None:
    resp = post_push(function, _push_with(POISON_PUSHES[case]))
    assert resp.status_code == 200
    assert recorded == {"finalize": [], "delete": []}
    (line,) = logs.find(DROPPED)
    assert line["severity"] == "ERROR"
    assert line["reason"]
    assert line["ce_type"] == events.PUBSUB_TYPE
    assert line["function"] == "on_object_finalized"


def _storage_with(mutate: Callable[[dict[str, Any]], None], ce_type: str | None = None) -> dict[str, Any]:
    shape = golden("eventarc_storage_finalized.json")
    mutate(shape["body"])
    if ce_type:
        shape["headers"]["ce-type"] = ce_type
    return shape


POISON_CLOUDEVENTS: dict[str, dict[str, Any]] = {
    "unknown type": _storage_with(lambda d: None, "com.example.something.happened"),
    "storage event without name": _storage_with(lambda d: d.pop("name")),
    "storage event without bucket": _storage_with(lambda d: d.update(bucket="")),
    "storage non-integer generation": _storage_with(lambda d: d.update(generation="not-a-number")),
    "storage missing generation": _storage_with(lambda d: d.pop("generation")),
    "storage name is not a string": _storage_with(lambda d: d.update(name={"a": 1})),
    "storage data is not an object": _storage_with(lambda d: None) | {"body": ["a", "list"]},
    "pubsub event without message": {
        "headers": golden("eventarc_pubsub_finalize.json")["headers"],
        "body": {"subscription": "s"},
    },
}


@pytest.mark.parametrize("case", sorted(POISON_CLOUDEVENTS))
def test_poison_cloudevent_is_acknowledged_logged_and_not_recorded(
    function: Any, recorded: dict[str, list[events.ObjectEvent]], logs: LogCapture, case: str
) -> None:
    shape = copy.deepcopy(POISON_CLOUDEVENTS[case])
    resp = post_binary(function, shape)
    assert resp.status_code == 200
    assert recorded == {"finalize": [], "delete": []}
    (line,) = logs.find(DROPPED)
    assert line["severity"] == "ERROR"
    assert line["ce_type"] == shape["headers"]["ce-type"]
    assert line["event_id"] == shape["headers"]["ce-id"]


def test_a_transient_failure_is_not_acknowledged(function: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Only poison is swallowed: a recorder failure surfaces, so Pub/Sub redelivers."""

    def failing(event: events.ObjectEvent) -> bool:
        raise ConnectionError("firestore unavailable")

    monkeypatch.setattr(recorder, "finalize", failing)
    resp = post_push(function, golden("pubsub_push_finalize.json"))
    assert resp.status_code == 500


# --- parse() and ObjectEvent directly ------------------------------------------------------------


def test_parse_accepts_generation_and_size_as_numbers_or_strings() -> None:
    data = dict(golden("eventarc_storage_finalized.json")["body"], generation=7, size=12)
    event = events.parse(
        CloudEvent(
            {"type": "google.cloud.storage.object.v1.finalized", "source": "//storage.googleapis.com/x", "id": "e1"},
            data,
        )
    )
    assert (event.generation, event.size) == (7, 12)
    assert event.key == hashlib.sha256(f"mllab-local/{RESOURCE['name']}#7".encode()).hexdigest()


def test_parse_tolerates_a_missing_or_odd_size() -> None:
    data = dict(golden("eventarc_storage_finalized.json")["body"], size="")
    data.pop("contentType")
    event = events.parse(
        CloudEvent(
            {"type": "google.cloud.storage.object.v1.finalized", "source": "//storage.googleapis.com/x", "id": "e1"},
            data,
        )
    )
    assert event.size is None and event.content_type is None


@pytest.mark.parametrize(
    ("ce_type", "expected"),
    [
        ("google.cloud.storage.object.v1.finalized", "OBJECT_FINALIZE"),
        ("google.cloud.storage.object.v1.deleted", "OBJECT_DELETE"),
        ("google.cloud.storage.object.v1.metadataUpdated", "OBJECT_METADATA_UPDATE"),
        ("google.cloud.storage.object.v1.archived", "OBJECT_ARCHIVE"),
    ],
)
def test_storage_types_map_to_notification_event_types(ce_type: str, expected: str) -> None:
    event = events.parse(
        CloudEvent(
            {"type": ce_type, "source": "//storage.googleapis.com/x", "id": "e"},
            golden("eventarc_storage_finalized.json")["body"],
        )
    )
    assert event.event_type == expected


@pytest.mark.parametrize(
    ("name", "uid"),
    [
        ("users/u-1/models/m/weights.bin", "u-1"),
        ("users/abc/x", "abc"),
        ("users/abc", None),
        ("users//models/x", None),
        ("public/abc/x", None),
        ("Users/abc/x", None),
        ("x/users/abc/y", None),
    ],
)
def test_uid_comes_from_users_prefix(name: str, uid: str | None) -> None:
    event = events.ObjectEvent(event_type="OBJECT_FINALIZE", bucket="b", name=name, generation=1, event_id="e")
    assert event.uid == uid


def test_object_key_is_sha256_of_bucket_name_and_generation() -> None:
    assert events.object_key("b", "n/o", 5) == hashlib.sha256(b"b/n/o#5").hexdigest()
    assert events.object_key("b", "n/o", 5) != events.object_key("b", "n/o", 6)


# The recorder itself (transactions, quota, ordering, tombstones) is tested against the Firestore
# emulator in tests/stack/test_storage_flow.py; a fake here would only test the fake.
