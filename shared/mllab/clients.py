"""Cached Google Cloud clients. Each getter imports its library on first use, so a function pays
only for the clients its path touches (cold start), and honours the `*_EMULATOR_HOST` variables.

Every Google API call made with these clients passes `**clients.opts()`: a deadline that bounds the
whole call, retries included. (`timeout=` alone bounds one attempt; the clients' default retry policy
would keep a request waiting for minutes while a dependency is down, instead of answering 503.)
"""

from __future__ import annotations

import functools
import os
from typing import Any

from mllab import config


def deadline() -> float:
    """Seconds any single outbound call may take."""
    return config.settings().rpc_timeout_s


def opts() -> dict[str, Any]:
    """Keyword arguments for one Google API call: per-attempt timeout and a total deadline."""
    return {"timeout": deadline(), "retry": _retry(deadline())}


@functools.cache
def _retry(total_s: float) -> Any:
    from google.api_core.retry import Retry, if_transient_error

    return Retry(predicate=if_transient_error, initial=0.1, maximum=2.0, multiplier=2.0, timeout=total_s)


def _anonymous_if(var: str) -> dict[str, Any]:
    if not os.environ.get(var):
        return {}
    from google.auth.credentials import AnonymousCredentials

    return {"credentials": AnonymousCredentials()}


@functools.cache
def firestore() -> Any:
    from google.cloud import firestore as fs  # FIRESTORE_EMULATOR_HOST is read by the client

    return fs.Client(project=config.settings().project)


@functools.cache
def storage() -> Any:
    from google.cloud import storage as gcs  # STORAGE_EMULATOR_HOST is read by the client

    return gcs.Client(project=config.settings().project, **_anonymous_if("STORAGE_EMULATOR_HOST"))


@functools.cache
def publisher() -> Any:
    from google.cloud import pubsub_v1  # PUBSUB_EMULATOR_HOST is read by the client

    return pubsub_v1.PublisherClient()


@functools.cache
def secret_manager() -> Any:
    from google.cloud import secretmanager

    return secretmanager.SecretManagerServiceClient()


def delete_refs(refs: list[Any], batch_size: int = 400) -> int:
    """Delete Firestore documents in batches (a batch holds at most 500 writes). Returns how many."""
    db = firestore()
    for start in range(0, len(refs), batch_size):
        batch = db.batch()
        for ref in refs[start:start + batch_size]:
            batch.delete(ref)
        batch.commit(**opts())
    return len(refs)


def reset() -> None:
    """Drop cached clients (tests point the process at another emulator)."""
    for getter in (firestore, storage, publisher, secret_manager):
        getter.cache_clear()
