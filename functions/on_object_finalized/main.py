"""GCS object events (via the bucket's Pub/Sub notification) recorded in Firestore."""

import functions_framework
from cloudevents.http import CloudEvent

from mllab.files import events, recorder
from mllab.platform import log


@functions_framework.cloud_event
def on_object_finalized(cloud_event: CloudEvent) -> None:
    """Raises only for transient failures (so Pub/Sub retries); an unusable event is acknowledged."""
    ctx = log.bind(event_id=str(cloud_event["id"]), function="on_object_finalized")
    try:
        event = events.parse_or_drop(cloud_event)
        if event is not None:
            recorder.handle(event)
    finally:
        log.unbind(ctx)
