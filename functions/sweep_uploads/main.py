"""The upload sweep (Cloud Scheduler -> Pub/Sub, every 10 minutes; deployed only with an S3-compatible
file store): reports to the recorder the uploads whose completion never came (mllab.files.completion)."""

import functions_framework
from cloudevents.http import CloudEvent

from mllab.files import completion
from mllab.platform import log


@functions_framework.cloud_event
def sweep_uploads(cloud_event: CloudEvent) -> None:
    """Raises only for transient failures (so Pub/Sub retries the run)."""
    ctx = log.bind(event_id=str(cloud_event["id"]), function="sweep_uploads")
    try:
        completion.sweep()
    finally:
        log.unbind(ctx)
