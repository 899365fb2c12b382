"""Metering on the Firestore emulator: predictions are counted per user, month and deployment; a
burst at 200 predictions a second writes no document more than about once a second; a quota check
overshoots by no more than the stated bound; a new month starts from zero."""

from __future__ import annotations

import threading
import time
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest

from mllab.platform import clients, clock
from mllab.serving import metering


@pytest.fixture(autouse=True)
def fresh_meter():
    metering.reset()
    yield
    metering.reset()


def test_predictions_are_counted_per_month_and_deployment(unique: str) -> None:
    uid = f"u-{unique}"
    metering.record(uid, "dep-a", 3)
    metering.record(uid, "dep-b", 1000)
    metering.record(uid, "dep-a", 2)
    metering.flush()
    assert metering.usage(uid) == {
        "month": metering.month_of(),
        "predictions": 1005,
        "by_deployment": {"dep-a": 5, "dep-b": 1000},
    }
    assert metering.usage(f"other-{unique}")["predictions"] == 0


def test_a_quota_check_sees_this_process_unwritten_counts(unique: str) -> None:
    uid = f"u-{unique}"
    metering.record(uid, "d", 1)  # the first record writes at once
    metering.record(uid, "d", 4)  # within the second: buffered
    assert metering.used(uid) == 5
    assert metering.usage(uid)["predictions"] == 1  # what Firestore holds until the next flush


def test_a_failed_write_fails_no_prediction_and_the_next_write_carries_its_counts(unique: str, monkeypatch) -> None:
    import io
    import json

    from google.api_core.exceptions import ServiceUnavailable

    from mllab.platform import log

    uid = f"u-{unique}"
    real_batch = clients.firestore().batch

    def unavailable_batch():
        batch = real_batch()

        def commit(*args, **kwargs):
            raise ServiceUnavailable("firestore is down")

        batch.commit = commit
        return batch

    lines = io.StringIO()
    monkeypatch.setattr(log, "stream", lines)
    monkeypatch.setattr(clients.firestore(), "batch", unavailable_batch)
    metering.record(uid, "dep-a", 3)  # due at once: the write fails, the call does not
    (line,) = [json.loads(x) for x in lines.getvalue().splitlines()]
    assert (line["severity"], line["message"]) == ("WARNING", metering.FLUSH_FAILED)
    assert line["error_type"] == "ServiceUnavailable" and line["unwritten"] == 3
    assert metering.used(uid) == 3  # still counted by this process's quota checks
    assert metering.usage(uid)["predictions"] == 0  # nothing reached Firestore

    monkeypatch.setattr(clients.firestore(), "batch", real_batch)  # Firestore is back
    time.sleep(metering.FLUSH_S)
    metering.record(uid, "dep-a", 2)
    assert metering.usage(uid) == {"month": metering.month_of(), "predictions": 5, "by_deployment": {"dep-a": 5}}
    assert len(lines.getvalue().splitlines()) == 1  # no further warning


def test_a_burst_of_200_a_second_writes_no_document_more_than_once_a_second(unique: str, monkeypatch) -> None:
    uid = f"u-{unique}"
    writes: Counter[str] = Counter()
    seconds: dict[str, set[int]] = {}
    real_flush_batch = clients.firestore().batch

    def counting_batch():
        batch = real_flush_batch()
        real_set = batch.set

        def set_(ref, data, merge=False):
            writes[ref.id] += 1
            seconds.setdefault(ref.id, set()).add(int(time.monotonic()))
            return real_set(ref, data, merge=merge)

        batch.set = set_
        return batch

    monkeypatch.setattr(clients.firestore(), "batch", counting_batch)
    started = time.monotonic()
    sent = 600
    for _ in range(sent):  # paced at up to 200 predictions/s, one request at a time
        metering.record(uid, "d", 1)
        time.sleep(0.005)
    metering.flush()
    elapsed = time.monotonic() - started
    assert metering.usage(uid)["predictions"] == sent
    for doc_id, n in writes.items():
        assert n <= elapsed / metering.FLUSH_S + 2, f"{doc_id} written {n} times in {elapsed:.1f} s"
    print(
        f"\n{sent} predictions in {elapsed:.1f} s ({sent / elapsed:.0f}/s): "
        f"{sum(writes.values())} writes to {len(writes)} document(s)"
    )


def other_process(uid: str, shard: int, rate: float, stop: threading.Event, served: Counter) -> None:
    """Another instance of the predict function: serves `rate` predictions a second without
    checking anything, and writes its own shard once a second, as metering does."""
    from google.cloud import firestore

    ref = clients.firestore().collection(metering.COLLECTION).document(f"{uid}_{metering.month_of()}_{shard}")
    while not stop.is_set():
        n = int(rate * metering.FLUSH_S)
        time.sleep(metering.FLUSH_S)
        served["other"] += n
        ref.set({"uid": uid, "month": metering.month_of(), "count": firestore.Increment(n)}, merge=True)


def test_quota_overshoot_under_load_stays_within_the_bound(unique: str) -> None:
    """This process serves 50 predictions a second checking the quota first (as predict does),
    while another process serves 150 a second: together 200 a second against a quota of 3,000.
    The overshoot comes from the other process's unseen counts, at most 150 x (FLUSH_S + REFRESH_S)."""
    uid = f"u-{unique}"
    quota, mine, theirs = 3000, 50.0, 150.0
    served: Counter[str] = Counter()
    stop = threading.Event()
    other = threading.Thread(
        target=other_process, args=(uid, (metering._shard + 1) % metering.SHARDS, theirs, stop, served)
    )
    other.start()
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and metering.used(uid) + 1 <= quota:
            metering.record(uid, "d", 1)
            served["mine"] += 1
            time.sleep(1 / mine)
        total_at_refusal = served["mine"] + served["other"]  # served by both when this process refused
    finally:
        stop.set()
        other.join(timeout=10)
    metering.flush()
    bound = theirs * (metering.FLUSH_S + metering.REFRESH_S)
    overshoot = max(0, total_at_refusal - quota)
    print(f"\nquota {quota} at 200/s: refused after {total_at_refusal} (overshoot {overshoot}, bound {bound:.0f};"
          f" on a 100,000 quota that is {100 * bound / 100_000:.2f}% at most)")  # fmt: skip
    assert quota <= total_at_refusal + theirs * metering.FLUSH_S  # refused only once the quota was (about) used
    assert overshoot <= bound
    assert metering.usage(uid)["predictions"] == served["mine"] + served["other"]


def test_a_new_month_starts_from_zero_and_retry_after_points_at_it(unique: str) -> None:
    uid = f"u-{unique}"
    end_of_january = datetime(2027, 1, 31, 23, 59, 30, tzinfo=UTC)
    with clock.travel(to=end_of_january, freeze=True):
        metering.record(uid, "d", 7)
        metering.flush()
        assert metering.seconds_to_next_month() == 31
        assert metering.next_month_start() == datetime(2027, 2, 1, tzinfo=UTC)
    with clock.travel(to=end_of_january + timedelta(minutes=1), freeze=True):
        metering.reset()
        assert metering.used(uid) == 0
        assert metering.usage(uid, "2027-01")["predictions"] == 7
    with clock.travel(to=datetime(2027, 12, 31, 12, tzinfo=UTC), freeze=True):
        assert metering.next_month_start() == datetime(2028, 1, 1, tzinfo=UTC)


def test_deleting_a_user_deletes_their_usage(unique: str) -> None:
    uid = f"u-{unique}"
    metering.record(uid, "d", 2)
    metering.flush()
    metering.record(f"other-{unique}", "d", 1)
    metering.flush()
    assert metering.delete_user(uid) == 1
    assert metering.usage(uid)["predictions"] == 0
    assert metering.usage(f"other-{unique}")["predictions"] == 1
