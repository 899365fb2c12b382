"""Firestore semantics the library relies on, checked on the emulator (not a mock)."""

from __future__ import annotations

import threading

import pytest

from mllab.platform import clients, transactions


def _doc(path: str):
    return clients.firestore().document(path)


def test_transaction_reads_and_writes_atomically(unique: str) -> None:
    from google.cloud import firestore

    ref = _doc(f"counters/{unique}")
    ref.set({"n": 1}, timeout=clients.deadline())

    @firestore.transactional
    def bump(tx, ref):
        snap = ref.get(transaction=tx)
        tx.update(ref, {"n": snap.get("n") + 1, "seen": snap.get("n")})

    bump(clients.firestore().transaction(), ref)
    bump(clients.firestore().transaction(), ref)
    assert ref.get(timeout=clients.deadline()).to_dict() == {"n": 3, "seen": 2}


def test_failed_transaction_writes_nothing(unique: str) -> None:
    from google.cloud import firestore

    a, b = _doc(f"accounts/{unique}-a"), _doc(f"accounts/{unique}-b")
    a.set({"balance": 10}, timeout=clients.deadline())
    b.set({"balance": 0}, timeout=clients.deadline())

    @firestore.transactional
    def transfer(tx, amount):
        bal = a.get(transaction=tx).get("balance")
        tx.update(b, {"balance": amount})
        if bal < amount:
            raise ValueError("insufficient")
        tx.update(a, {"balance": bal - amount})

    with pytest.raises(ValueError):
        transfer(clients.firestore().transaction(), 50)
    assert a.get().to_dict() == {"balance": 10}
    assert b.get().to_dict() == {"balance": 0}
    transfer(clients.firestore().transaction(), 4)
    assert (a.get().to_dict(), b.get().to_dict()) == ({"balance": 6}, {"balance": 4})


def test_concurrent_transactions_serialise(unique: str) -> None:
    """Two racing read-modify-write transactions: both land, neither update is lost."""
    from google.cloud import firestore

    ref = _doc(f"counters/{unique}")
    ref.set({"n": 0}, timeout=clients.deadline())
    barrier = threading.Barrier(2)
    errors: list[BaseException] = []

    @firestore.transactional
    def bump(tx):
        n = ref.get(transaction=tx).get("n")
        tx.update(ref, {"n": n + 1})

    def worker() -> None:
        try:
            barrier.wait(5)
            bump(clients.firestore().transaction(max_attempts=10))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    assert ref.get().get("n") == 2


def test_create_refuses_duplicates(unique: str) -> None:
    """The event recorder's idempotency rests on create() failing when the document exists."""
    from google.api_core.exceptions import AlreadyExists

    ref = _doc(f"artifacts/{unique}")
    ref.create({"v": 1}, timeout=clients.deadline())
    with pytest.raises(AlreadyExists):
        ref.create({"v": 2}, timeout=clients.deadline())
    assert ref.get().to_dict() == {"v": 1}


# --- transactions.run: the read begins the transaction --------------------------------------------


def _bump_in(tx, snaps: dict, ref) -> int:
    n = snaps[ref.path].get("n")
    tx.update(ref, {"n": n + 1})
    return n


def test_a_transaction_begun_by_its_read_writes_what_it_read_plus_one(unique: str) -> None:
    ref = _doc(f"counters/{unique}")
    ref.set({"n": 1}, timeout=clients.deadline())
    assert transactions.run([ref], lambda tx, snaps: _bump_in(tx, snaps, ref)) == 1
    assert transactions.run([ref], lambda tx, snaps: _bump_in(tx, snaps, ref)) == 2
    assert ref.get().to_dict() == {"n": 3}


def test_a_transaction_begun_by_its_read_that_raises_writes_nothing_and_releases_its_documents(unique: str) -> None:
    a, b = _doc(f"accounts/{unique}-a"), _doc(f"accounts/{unique}-b")
    a.set({"balance": 10}, timeout=clients.deadline())

    def transfer(tx, snaps: dict) -> None:
        tx.update(a, {"balance": 0})
        if not snaps[b.path].exists:
            raise ValueError("no such account")

    with pytest.raises(ValueError):
        transactions.run([a, b], transfer)
    assert a.get().to_dict() == {"balance": 10}
    # its locks are gone: the next transaction on the same document commits at once
    assert transactions.run([a], lambda tx, snaps: tx.update(a, {"balance": 9})) is None
    assert a.get().to_dict() == {"balance": 9}


def test_racing_transactions_begun_by_their_reads_all_land(unique: str) -> None:
    """Contention aborts some commits; each runs again on a fresh read, and no update is lost."""
    ref = _doc(f"counters/{unique}")
    ref.set({"n": 0}, timeout=clients.deadline())
    racers = 6
    barrier = threading.Barrier(racers)
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            barrier.wait(5)
            transactions.run([ref], lambda tx, snaps: _bump_in(tx, snaps, ref))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(racers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    assert ref.get().get("n") == racers
