"""Cached Google Cloud clients. Each getter imports its library on first use, so a function pays
only for the clients its path touches (cold start), and honours the `*_EMULATOR_HOST` variables.

Every call to Secret Manager, Storage or Pub/Sub passes `**clients.opts()`: a deadline that bounds the
whole call, retries included. (`timeout=` alone bounds one attempt; the clients' default retry policy
would keep a request waiting for minutes while a dependency is down, instead of answering 503.)
Firestore calls pass nothing: the client gets the same bound as the default of every RPC it makes
(`_bounded`), which also covers the calls no caller can pass options to (a transaction's begin and
commit); a transaction's rollback is sent in the background (see `_in_background`). One exception: a
query or count run outside a transaction (`stream()`, `get()`) still passes `**clients.opts()`, because
google-cloud-firestore resumes such a stream broken midway by the retry it was given (without one it
looks for the RPC's default retry where there is none, and raises AttributeError instead).

Within one request (`call_scope()`, entered by the HTTP router) a hung dependency is waited for once,
so the request answers 503 about one deadline after it started waiting, however many calls it makes:
- the first call must end within the deadline of the request's start (a cold start's imports count);
- a call that starts while the previous one was still within its deadline (it was answered) gets
  the whole deadline again;
- a call that starts after the previous one ran out its deadline gets only `STALLED_TIMEOUT_S`
  (a best-effort write after a failure, such as a webhook's "failed" marker or an audit entry).
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import os
import threading
import time
from collections.abc import Iterator
from typing import Any

from mllab.platform import config, log

STALLED_TIMEOUT_S = 0.5  # the least a call gets; all it gets once its request has waited a deadline out
_SLACK_S = 0.05
# Inside call_scope(): [the request's start, the latest call's deadline or None].
_scope: contextvars.ContextVar[list[Any] | None] = contextvars.ContextVar("mllab_call_scope", default=None)


def deadline() -> float:
    """Seconds any single outbound call may take."""
    return config.settings().rpc_timeout_s


@contextlib.contextmanager
def call_scope() -> Iterator[None]:
    """The calls of one request (see the module docstring)."""
    token = _scope.set([time.monotonic(), None])
    try:
        yield
    finally:
        _scope.reset(token)


def call_timeout() -> float:
    """The timeout of a call starting now (see the module docstring)."""
    full = deadline()
    scope = _scope.get()
    if scope is None:
        return full
    now = time.monotonic()
    started, previous = scope
    if previous is None:
        ends = started + full
    elif now < previous - _SLACK_S:
        ends = now + full
    else:
        ends = now
    timeout = round(max(STALLED_TIMEOUT_S, min(full, ends - now)), 1)
    scope[1] = now + timeout
    return timeout


def opts() -> dict[str, Any]:
    """Keyword arguments for one Google API call: per-attempt timeout and a total deadline."""
    timeout = call_timeout()
    return {"timeout": timeout, "retry": _retry(timeout)}


def read_all(refs: list[Any]) -> dict[str, Any]:
    """Firestore documents by path, each with its snapshot (existing or not), read in one round trip."""
    return {snap.reference.path: snap for snap in firestore().get_all(refs)} if refs else {}


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

    _single_threaded_streams()
    client = fs.Client(project=config.settings().project)
    transport = client._firestore_api._transport  # every RPC the client makes goes through these
    for method, wrapped in list(transport._wrapped_methods.items()):
        background = method is transport.rollback
        transport._wrapped_methods[method] = _in_background(wrapped) if background else _bounded(wrapped)
    return client


def _single_threaded_streams() -> None:
    """Firestore's reads (batchGet, runQuery) are gRPC unary-stream calls. By default gRPC's Python
    layer runs each on a thread of its own and hands every streamed document across threads; with
    this channel option the calling thread reads its call itself (same deadlines, same errors).
    Measured in-process (tests/bench/paths.py): GET /me, which reads 19 documents in one batch,
    1.5 ms less CPU per request. The client builds its channel from these two lists of options (the
    first for Firestore itself, the second for the emulator): there is no public way to add one."""
    import grpc
    from google.cloud.firestore_v1 import base_client

    option = (grpc.experimental.ChannelOptions.SingleThreadedUnaryStream, 1)
    for options in (base_client._DEFAULT_CHANNEL_OPTIONS, base_client._GRPC_MSG_SIZE_OPTIONS):
        if option not in options:
            options.append(option)


ROLLBACK_TIMEOUT_S = 60.0


def _in_background(rollback: Any) -> Any:
    """A transaction's rollback, sent without waiting for it. It runs after the transaction already
    failed and only releases the documents it locked; waited for, it held a failing request (the 503)
    up to another deadline while Firestore hung. Given up on early, it left those locks to Firestore's
    own expiry, and the next transaction on the same documents waited for them (a refresh answered
    503 for 15 s and more after Firestore had come back). In the background it gets a long deadline."""

    def send(args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        try:
            rollback(*args, timeout=ROLLBACK_TIMEOUT_S, retry=_retry(ROLLBACK_TIMEOUT_S), **kwargs)
        except Exception as exc:  # noqa: BLE001 - best effort: the locks still expire on their own
            log.warning("transaction rollback failed", error_type=type(exc).__name__)

    def call(*args: Any, timeout: Any = None, retry: Any = None, **kwargs: Any) -> None:
        threading.Thread(target=send, args=(args, kwargs), name="firestore-rollback", daemon=True).start()

    call.__wrapped__ = rollback  # type: ignore[attr-defined]
    return call


def _bounded(wrapped: Any) -> Any:
    """An RPC whose default timeout and retry are ours (the library's are 60 s and more, retried)."""
    from google.api_core.gapic_v1.method import DEFAULT

    def call(*args: Any, timeout: Any = DEFAULT, retry: Any = DEFAULT, **kwargs: Any) -> Any:
        if timeout is DEFAULT:
            timeout = call_timeout()
            retry = _retry(timeout) if retry is DEFAULT else retry
        elif retry is DEFAULT and isinstance(timeout, (int, float)):
            retry = _retry(float(timeout))
        return wrapped(*args, timeout=timeout, retry=retry, **kwargs)

    call.__wrapped__ = wrapped  # type: ignore[attr-defined]
    return call


@functools.cache
def storage() -> Any:
    from google.cloud import storage as gcs  # type: ignore[attr-defined]  # STORAGE_EMULATOR_HOST: read by the client

    return gcs.Client(project=config.settings().project, **_anonymous_if("STORAGE_EMULATOR_HOST"))


@functools.cache
def publisher() -> Any:
    from google.cloud import pubsub_v1  # type: ignore[attr-defined]  # PUBSUB_EMULATOR_HOST: read by the client

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
        for ref in refs[start : start + batch_size]:
            batch.delete(ref)
        batch.commit()
    return len(refs)


def reset() -> None:
    """Drop cached clients (tests point the process at another emulator)."""
    for getter in (firestore, storage, publisher, secret_manager):
        getter.cache_clear()
