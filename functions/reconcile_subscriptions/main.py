"""Daily (Cloud Scheduler -> Pub/Sub): re-reads subscriptions a missed webhook may have left wrong."""

import functions_framework
from cloudevents.http import CloudEvent

from mllab.billing import subscriptions


@functions_framework.cloud_event
def reconcile_subscriptions(cloud_event: CloudEvent) -> None:
    subscriptions.handle_reconcile_event(cloud_event)
