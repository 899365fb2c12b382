"""A hung dependency costs a request one deadline, not one per call and never a library's default
(google-cloud-firestore sends a transaction's begin, commit and rollback with 60 s and retries).
The stack-level counterpart is tests/stack/test_faults.py."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import pytest

from mllab.api import http
from mllab.billing.paypal import PayPal, PayPalUnavailable
from mllab.platform import clients, config


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port whose connections the kernel accepts and nobody ever answers (a paused process)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    try:
        yield listener.getsockname()[1]
    finally:
        listener.close()


@pytest.fixture
def hung_firestore(silent_port: int, monkeypatch: pytest.MonkeyPatch) -> float:
    monkeypatch.setenv("FIRESTORE_EMULATOR_HOST", f"127.0.0.1:{silent_port}")
    monkeypatch.setenv("MLLAB_RPC_TIMEOUT_S", "1")
    config.reload()
    clients.reset()
    return 1.0


def _transaction() -> None:
    """What sessions.rotate and the recorder do: a read-write transaction."""
    from google.cloud import firestore

    db = clients.firestore()
    ref = db.collection("sessions").document("x")

    @firestore.transactional
    def run(tx):
        snap = ref.get(transaction=tx, **clients.opts())
        tx.set(ref, {"n": (snap.get("n") if snap.exists else 0) + 1})

    run(db.transaction(max_attempts=10))


@pytest.mark.parametrize("scoped", [True, False], ids=["in-a-request", "outside-a-request"])
def test_a_transaction_against_a_hung_firestore_fails_within_the_deadline(hung_firestore: float, scoped: bool) -> None:
    clients.firestore()  # imported and built: what is timed is the calls
    started = time.monotonic()
    with pytest.raises(Exception) as info:
        if scoped:
            with clients.call_scope():
                _transaction()
        else:
            _transaction()
    elapsed = time.monotonic() - started
    assert http.dependency_outage(info.value), repr(info.value)  # the router answers 503
    # begin_transaction is bounded by our deadline (it was 60 s, retried), and the rollback is not waited for
    assert elapsed < hung_firestore + 0.6, elapsed


def test_every_firestore_rpc_defaults_to_our_deadline(hung_firestore: float) -> None:
    transport = clients.firestore()._firestore_api._transport
    assert transport._wrapped_methods
    assert all(getattr(w, "__wrapped__", None) is not None for w in transport._wrapped_methods.values())


def test_firestore_reads_stream_on_the_calling_thread(hung_firestore: float) -> None:
    """batchGet and runQuery run without a thread of gRPC's own per call (clients._single_threaded_streams)."""
    import grpc

    transport = clients.firestore()._firestore_api._transport
    for rpc in (transport.batch_get_documents, transport.run_query):
        assert isinstance(rpc, grpc.UnaryStreamMultiCallable)
        assert type(rpc).__name__ == "_SingleThreadedUnaryStreamMultiCallable", type(rpc)


@pytest.mark.parametrize("read", ["batch", "query"])
def test_a_read_against_a_hung_firestore_fails_within_the_deadline(hung_firestore: float, read: str) -> None:
    """Read on the calling thread, a stream still ends at its deadline with the error the router turns into 503."""
    db = clients.firestore()
    started = time.monotonic()
    with pytest.raises(Exception) as info, clients.call_scope():
        if read == "batch":
            list(db.get_all([db.collection("sessions").document("x"), db.collection("users").document("y")]))
        else:
            list(db.collection("sessions").limit(5).stream(**clients.opts()))
    elapsed = time.monotonic() - started
    assert http.dependency_outage(info.value), repr(info.value)
    assert elapsed < hung_firestore + 0.6, elapsed


def test_a_rollback_is_sent_in_the_background_with_a_long_deadline(hung_firestore: float) -> None:
    """It only releases locks: the failing request does not wait for it, and it outlives a short outage."""
    import threading

    transport = clients.firestore()._firestore_api._transport
    installed = transport._wrapped_methods[transport.rollback]
    assert installed.__code__ is clients._in_background(print).__code__
    release, seen = threading.Event(), []

    def hung_rollback(*args, **kwargs):
        seen.append(kwargs)
        release.wait(5)

    started = time.monotonic()
    clients._in_background(hung_rollback)("request", timeout=0.5, metadata=())
    assert time.monotonic() - started < 0.2
    deadline = time.monotonic() + 5
    while not seen and time.monotonic() < deadline:
        time.sleep(0.01)
    release.set()
    assert seen and seen[0]["timeout"] == clients.ROLLBACK_TIMEOUT_S and seen[0]["metadata"] == ()
    assert seen[0]["retry"].timeout == clients.ROLLBACK_TIMEOUT_S


def test_a_bounded_rpc_gets_our_timeout_and_retry_unless_the_caller_chose() -> None:
    from google.api_core.gapic_v1.method import DEFAULT
    from google.api_core.retry import Retry

    seen: list[dict] = []
    call = clients._bounded(lambda *a, **kw: seen.append(kw))
    call("request")
    call("request", timeout=3.0)
    mine = Retry(timeout=1.0)
    call("request", timeout=2.0, retry=mine)
    call("request", retry=None)
    assert seen[0]["timeout"] == clients.deadline() and seen[0]["retry"].timeout == clients.deadline()
    assert seen[1]["timeout"] == 3.0 and seen[1]["retry"].timeout == 3.0  # not the library's 60 s retry
    assert seen[2]["timeout"] == 2.0 and seen[2]["retry"] is mine
    assert seen[3]["retry"] is None and seen[3]["timeout"] is not DEFAULT


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def fake_time(monkeypatch: pytest.MonkeyPatch) -> _Clock:
    clock = _Clock()
    monkeypatch.setattr(clients.time, "monotonic", clock)
    return clock


def test_outside_a_request_every_call_gets_the_whole_deadline(fake_time: _Clock) -> None:
    assert clients.opts()["timeout"] == clients.deadline()
    fake_time.now += 100
    assert clients.opts()["timeout"] == clients.deadline()


def test_in_a_request_a_hung_dependency_is_waited_for_once(fake_time: _Clock) -> None:
    full = clients.deadline()
    with clients.call_scope():
        fake_time.now += 2.0  # a cold start's imports: the first call has what is left
        assert clients.opts()["timeout"] == full - 2.0
        fake_time.now += 0.01  # answered: the next call gets a whole deadline
        assert clients.opts()["timeout"] == full
        fake_time.now += full  # that one ran out its deadline (a hang) ...
        t = clients.opts()["timeout"]
        assert t == clients.STALLED_TIMEOUT_S  # ... so the rollback after it is cut short
        fake_time.now += t  # and so is everything after a second timeout
        assert clients.opts()["timeout"] == clients.STALLED_TIMEOUT_S
        fake_time.now += 0.01  # until a call is answered again
        assert clients.opts()["timeout"] == full
    assert clients.opts()["timeout"] == full  # the next request starts afresh


def test_a_request_that_waits_on_a_silent_paypal_gives_up_within_its_timeout(silent_port: int) -> None:
    pp = PayPal(f"http://127.0.0.1:{silent_port}", "AcLientIdForTests0001", "EsEcretValue-never-9f8e7d", timeout=0.5)
    started = time.monotonic()
    with pytest.raises(PayPalUnavailable):
        pp.create_subscription("P-1", "uid", "https://lab/r", "https://lab/c", request_id="mllab-uid-1")
    elapsed = time.monotonic() - started
    pp.close()
    assert elapsed < 0.5 + 0.3, elapsed  # was up to twice the timeout: past a request's 10 s
