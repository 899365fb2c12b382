"""Object events for a store that sends none to Pub/Sub (an S3-compatible bucket: S3 and R2 notify only
through their own queues). The message is the one a GCS bucket's Pub/Sub notification carries (the
same attributes and JSON_API_V1 object resource), published to the same topic, so mllab.events parses
it and mllab.recorder records it unchanged. Delivery is at least once either way: a completion and the
sweep reporting the same object make the same event, which the recorder takes once."""

from __future__ import annotations

import json
from typing import Any

from mllab.files.store import ObjectInfo
from mllab.platform import clients, clock, config

FINALIZE = "OBJECT_FINALIZE"
DELETE = "OBJECT_DELETE"


def object_message(event_type: str, bucket: str, info: ObjectInfo) -> tuple[bytes, dict[str, str]]:
    """(data, attributes) of the notification for this object, as GCS would publish it."""
    resource: dict[str, Any] = {
        "kind": "storage#object",
        "bucket": bucket,
        "name": info.name,
        "generation": str(info.generation),
        "size": str(info.size),
        "updated": clock.rfc3339(info.updated),
    }
    if info.content_type is not None:
        resource["contentType"] = info.content_type
    if info.md5 is not None:
        resource["md5Hash"] = info.md5
    attributes = {
        "eventType": event_type,
        "bucketId": bucket,
        "objectId": info.name,
        "objectGeneration": str(info.generation),
        "payloadFormat": "JSON_API_V1",
        "eventTime": clock.rfc3339(clock.now()),
    }
    return json.dumps(resource, separators=(",", ":")).encode(), attributes


def publish(event_type: str, info: ObjectInfo) -> None:
    """Publish one object event to the events topic; waits for Pub/Sub's acknowledgement."""
    s = config.settings()
    data, attributes = object_message(event_type, s.bucket, info)
    publisher = clients.publisher()
    future = publisher.publish(publisher.topic_path(s.project, s.events_topic), data, **attributes)
    future.result(timeout=clients.call_timeout())
