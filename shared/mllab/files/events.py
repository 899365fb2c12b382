"""GCS object events: the one place that converts their delivery shapes into an ObjectEvent.

Two shapes arrive as CloudEvents:
- `google.cloud.pubsub.topic.v1.messagePublished`: the bucket's Pub/Sub notification, as Eventarc
  delivers it in production and as functions-framework converts the emulator's raw push locally.
  Attributes carry bucket, object, generation and event type; `data` is the object resource.
- `google.cloud.storage.object.v1.*`: a direct Eventarc storage trigger (StorageObjectData).

Delivery is at least once and unordered; mllab.files.recorder decides what each generation means.
This module only parses; the recorder (its `handle`) acts on what it parses.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from dataclasses import dataclass
from typing import Any

from mllab.platform import log

_STORAGE_TYPES = {
    "google.cloud.storage.object.v1.finalized": "OBJECT_FINALIZE",
    "google.cloud.storage.object.v1.deleted": "OBJECT_DELETE",
    "google.cloud.storage.object.v1.metadataUpdated": "OBJECT_METADATA_UPDATE",
    "google.cloud.storage.object.v1.archived": "OBJECT_ARCHIVE",
}
PUBSUB_TYPE = "google.cloud.pubsub.topic.v1.messagePublished"


class PoisonEvent(ValueError):
    """An event that can never be processed: acknowledged and logged, never retried."""


@dataclass(frozen=True)
class ObjectEvent:
    event_type: str
    bucket: str
    name: str
    generation: int
    event_id: str
    size: int | None = None
    content_type: str | None = None
    crc32c: str | None = None
    md5: str | None = None
    event_time: str | None = None
    overwritten_by_generation: int | None = None

    @property
    def key(self) -> str:
        return object_key(self.bucket, self.name, self.generation)

    @property
    def uid(self) -> str | None:
        """Owner from the server-built name `users/<uid>/...`."""
        parts = self.name.split("/")
        return parts[1] if len(parts) > 2 and parts[0] == "users" and parts[1] else None


def object_key(bucket: str, name: str, generation: int) -> str:
    return hashlib.sha256(f"{bucket}/{name}#{generation}".encode()).hexdigest()


def _int(value: Any, what: str) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        raise PoisonEvent(f"{what} is not an integer") from None


def _opt_int(value: Any) -> int | None:
    try:
        return int(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None


def parse(cloud_event: Any) -> ObjectEvent:
    """Normalise either delivery shape to an ObjectEvent, or raise PoisonEvent."""
    ce_type = cloud_event["type"]
    data = cloud_event.data
    if not isinstance(data, dict):
        raise PoisonEvent("event data is not an object")
    if ce_type == PUBSUB_TYPE:
        resource, fields = _from_notification(cloud_event, data)
    elif ce_type in _STORAGE_TYPES:
        resource, fields = data, _from_storage_event(cloud_event, data)
    else:
        raise PoisonEvent(f"unexpected event type {ce_type!r}")
    if not isinstance(fields["bucket"], str) or not isinstance(fields["name"], str):
        raise PoisonEvent("bucket or object name is not a string")
    return ObjectEvent(
        **fields,
        size=_opt_int(resource.get("size")),
        content_type=resource.get("contentType"),
        crc32c=resource.get("crc32c"),
        md5=resource.get("md5Hash"),
    )


def _from_notification(cloud_event: Any, data: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The object resource and the event's fields of a bucket's Pub/Sub notification."""
    message = data.get("message")
    if not isinstance(message, dict):
        raise PoisonEvent("Pub/Sub event without a message")
    attrs = message.get("attributes") or {}
    if not isinstance(attrs, dict):
        raise PoisonEvent("notification attributes are not an object")
    resource = _notification_payload(message, attrs)
    missing = [a for a in ("eventType", "bucketId", "objectId", "objectGeneration") if not attrs.get(a)]
    if missing:
        raise PoisonEvent(f"notification lacks attributes {missing}")
    return resource, {
        "event_type": attrs["eventType"],
        "bucket": attrs["bucketId"],
        "name": attrs["objectId"],
        "generation": _int(attrs["objectGeneration"], "objectGeneration"),
        "event_id": str(message.get("messageId") or cloud_event["id"]),
        "event_time": attrs.get("eventTime"),
        "overwritten_by_generation": _opt_int(attrs.get("overwrittenByGeneration")),
    }


def _notification_payload(message: dict[str, Any], attrs: dict[str, Any]) -> dict[str, Any]:
    """The object resource a notification carries as base64 JSON (none without a JSON payload)."""
    if not message.get("data") or attrs.get("payloadFormat", "JSON_API_V1") != "JSON_API_V1":
        return {}
    try:
        resource = json.loads(base64.b64decode(message["data"], validate=True))
    except (binascii.Error, TypeError, ValueError):
        raise PoisonEvent("notification payload is not base64 JSON") from None
    if not isinstance(resource, dict):
        raise PoisonEvent("notification payload is not an object")
    return resource


def _from_storage_event(cloud_event: Any, data: dict[str, Any]) -> dict[str, Any]:
    """The event's fields of a direct storage trigger (its data is the object resource)."""
    if not data.get("bucket") or not data.get("name"):
        raise PoisonEvent("storage event lacks bucket or name")
    return {
        "event_type": _STORAGE_TYPES[cloud_event["type"]],
        "bucket": data["bucket"],
        "name": data["name"],
        "generation": _int(data.get("generation"), "generation"),
        "event_id": str(cloud_event["id"]),
        "event_time": cloud_event.get("time"),
        "overwritten_by_generation": None,
    }


def parse_or_drop(cloud_event: Any) -> ObjectEvent | None:
    """The event, or None for one that can never be processed: logged, so it is acknowledged and
    never retried."""
    try:
        return parse(cloud_event)
    except (PoisonEvent, KeyError) as exc:
        log.error("unusable object event dropped", reason=str(exc), ce_type=cloud_event["type"])
        return None
