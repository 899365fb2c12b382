"""GCS object events (via the bucket's Pub/Sub notification) recorded in Firestore."""

import functions_framework
from cloudevents.http import CloudEvent

from mllab import events


@functions_framework.cloud_event
def on_object_finalized(cloud_event: CloudEvent) -> None:
    events.handle(cloud_event)
