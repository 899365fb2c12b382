"""Daily purge (Cloud Scheduler -> Pub/Sub): hard-deletes accounts soft-deleted more than
ACCOUNT_PURGE_AFTER_DAYS ago, with everything they own."""

import functions_framework
from cloudevents.http import CloudEvent

from mllab import account


@functions_framework.cloud_event
def purge_accounts(cloud_event: CloudEvent) -> None:
    account.handle_purge_event(cloud_event)
