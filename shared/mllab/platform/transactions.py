"""Firestore read-write transactions whose reads are known up front: two round trips instead of three.

google-cloud-firestore's `@transactional` sends BeginTransaction, then the reads, then Commit. A
BatchGetDocuments request can begin the transaction itself (`new_transaction`), so a transaction that
reads all its documents in one batch (its reads precede its writes anyway) pays one round trip for the
begin and the reads together, and one for the commit: less time holding its locks (shorter waits for
work that shares a document) and one request fewer for Firestore to serve.

The library's rules otherwise: a transaction Firestore aborts for contention (ABORTED, on a read or at
the commit) is run again from its reads, up to `max_attempts`, naming the first attempt
(`retry_transaction`) so it keeps its place in line, after a jittered, growing pause (`backoff`): racers
that all retry at once can abort each other again every time, which the emulator, honouring no place in
line, showed as four racers aborted ten times. Any other failure rolls it back and propagates. A
body that wrote nothing is rolled back rather than committed (there is nothing to wait for; the
rollback only releases the read locks, sent in the background: see mllab.platform.clients).

`one_at_a_time`: transactions that would contend on one document (a user's usage counter) wait for
each other in the process instead. Firestore would serialise them anyway, but only after they all
took their read locks: the emulator then holds each until its 2 s lock timeout aborts one, and
Firestore retries the aborted with backoff. Across instances Firestore's own rules still apply.
"""

from __future__ import annotations

import contextlib
import random
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

from mllab.platform import clients

T = TypeVar("T")
MAX_ATTEMPTS = 10
FIRST_PAUSE = 0.02  # seconds: the ceiling of the first retry's random pause, doubling each time
LONGEST_PAUSE = 1.0
_guard = threading.Lock()
_held: dict[str, list[Any]] = {}  # key -> [its lock, how many hold it or wait for it]


def run(
    refs: Sequence[Any],
    body: Callable[[Any, dict[str, Any]], T],
    *,
    max_attempts: int = MAX_ATTEMPTS,
    queue: str | None = None,
) -> T:
    """body(transaction, snapshots by document path) in one transaction that began with reading `refs`
    (every document, existing or not, has its snapshot). `queue`: a key whose transactions in this
    process run one at a time (`one_at_a_time`), e.g. a user's, whose events share documents."""
    if queue:
        with one_at_a_time(queue):
            return _run(refs, body, max_attempts)
    return _run(refs, body, max_attempts)


def _run(refs: Sequence[Any], body: Callable[[Any, dict[str, Any]], T], max_attempts: int) -> T:
    from google.api_core.exceptions import Aborted

    db = clients.firestore()
    tx = db.transaction(max_attempts=max_attempts)
    retry_id: bytes | None = None
    last: Exception | None = None
    for attempt in range(max_attempts):
        if attempt:
            time.sleep(backoff(attempt))
        tx._clean_up()
        try:
            snaps = _begin_with_reads(db, tx, refs, retry_id)
            retry_id = retry_id or tx._id
            result = body(tx, snaps)
            if tx._write_pbs:
                tx._commit()
            else:
                tx._rollback()
            return result
        except Aborted as exc:  # contention: the whole transaction again (Firestore ended this one)
            last = exc
        except BaseException:
            if tx.in_progress:
                tx._rollback()
            raise
    raise ValueError(f"the transaction was aborted {max_attempts} times") from last


def backoff(attempt: int) -> float:
    """The pause before retry `attempt` (1, 2, ...): uniform up to a ceiling that doubles from
    FIRST_PAUSE to LONGEST_PAUSE ("full jitter": racers spread out instead of colliding again)."""
    return random.uniform(0, min(LONGEST_PAUSE, FIRST_PAUSE * 2 ** (attempt - 1)))


def _begin_with_reads(db: Any, tx: Any, refs: Sequence[Any], retry_id: bytes | None) -> dict[str, Any]:
    from google.cloud.firestore_v1 import base_client

    paths, by_path = base_client._reference_info(list(refs))
    read_write = {"retry_transaction": retry_id} if retry_id else {}
    responses = db._firestore_api.batch_get_documents(
        request={"database": db._database_string, "documents": paths, "new_transaction": {"read_write": read_write}},
        metadata=db._rpc_metadata,
    )
    snaps: dict[str, Any] = {}
    for response in responses:
        if response.transaction:
            tx._id = response.transaction  # the first response carries it
        if response._pb.WhichOneof("result"):
            snap = base_client._parse_batch_get(response, by_path, db)
            snaps[snap.reference.path] = snap
    if not tx.in_progress or len(snaps) != len(by_path):
        raise RuntimeError("Firestore answered the transaction's reads incompletely")
    return snaps


@contextlib.contextmanager
def one_at_a_time(key: str) -> Iterator[None]:
    """Run the block while no other thread of this process runs one with the same key. Waits at most
    one call deadline; then raises TimeoutError (a transient failure: the caller's work is retried)."""
    with _guard:
        entry = _held.setdefault(key, [threading.Lock(), 0])
        entry[1] += 1
    try:
        if not entry[0].acquire(timeout=clients.deadline()):
            raise TimeoutError("another transaction on the same documents did not finish in time")
        try:
            yield
        finally:
            entry[0].release()
    finally:
        with _guard:
            entry[1] -= 1
            if not entry[1]:
                del _held[key]
