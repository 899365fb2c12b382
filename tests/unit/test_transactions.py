"""mllab.platform.transactions: a user's transactions in one process wait for each other (one_at_a_time)
instead of for Firestore's lock timeouts, other users' do not wait at all; aborted attempts retry after
a jittered pause (backoff)."""

from __future__ import annotations

import threading
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mllab.platform import clients, transactions


def _overlaps(keys: list[str], hold_s: float = 0.05) -> int:
    """Most blocks running at once when each key's block runs on its own thread."""
    running, most, lock = 0, 0, threading.Lock()
    start = threading.Barrier(len(keys))

    def block(key: str) -> None:
        nonlocal running, most
        start.wait()
        with transactions.one_at_a_time(key):
            with lock:
                running += 1
                most = max(most, running)
            time.sleep(hold_s)
            with lock:
                running -= 1

    threads = [threading.Thread(target=block, args=(k,)) for k in keys]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return most


def test_blocks_of_one_key_run_one_at_a_time() -> None:
    assert _overlaps(["uid-a"] * 4) == 1
    assert transactions._held == {}  # nothing kept for a key nobody holds


def test_blocks_of_different_keys_run_together() -> None:
    assert _overlaps(["uid-a", "uid-b", "uid-c"]) == 3


def test_a_block_that_cannot_start_within_the_deadline_fails_as_transient(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(clients, "deadline", lambda: 0.1)
    held, release = threading.Event(), threading.Event()

    def holder() -> None:
        with transactions.one_at_a_time("uid-a"):
            held.set()
            release.wait(5)

    t = threading.Thread(target=holder)
    t.start()
    held.wait(5)
    try:
        with pytest.raises(TimeoutError), transactions.one_at_a_time("uid-a"):
            pytest.fail("ran while another block held the key")
    finally:
        release.set()
        t.join()
    assert transactions._held == {}
    with transactions.one_at_a_time("uid-a"):  # free again
        pass


@given(st.integers(min_value=1, max_value=60))
def test_a_retry_pauses_a_random_while_under_a_ceiling_that_doubles_up_to_the_longest(attempt: int) -> None:
    ceiling = min(transactions.LONGEST_PAUSE, transactions.FIRST_PAUSE * 2 ** (attempt - 1))
    assert 0 <= transactions.backoff(attempt) <= ceiling


def test_racers_retrying_together_draw_different_pauses() -> None:
    pauses = {transactions.backoff(3) for _ in range(20)}
    assert len(pauses) > 1  # jitter: the same attempt number does not mean the same moment
