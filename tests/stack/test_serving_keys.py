"""API keys on the Firestore emulator, abuse cases first: a guessed, altered or malformed key, a key of
another user, a revoked or expired key, a key without the scope; then the key shown once, stored
only as a hash, listed without its secret, and revoked at once."""

from __future__ import annotations

import hashlib
from datetime import timedelta

import pytest

from mllab.platform import clients, clock
from mllab.platform.problems import Problem
from mllab.serving import apikeys


def status_of(call) -> tuple[int, str]:
    with pytest.raises(Problem) as caught:
        call()
    return caught.value.status, caught.value.detail


def stored(key_id: str) -> dict:
    return clients.firestore().collection(apikeys.COLLECTION).document(key_id).get().to_dict()


def test_guessed_altered_and_malformed_keys_are_not_valid_alike(unique: str) -> None:
    made = apikeys.create(f"u-{unique}", "ci", ["predict"])
    key = made["key"]
    guessed_id = "mlk_" + "a" * 16 + "_" + key.split("_", 2)[2]
    altered_secret = key[:-1] + ("A" if key[-1] != "A" else "B")
    for wrong in (guessed_id, altered_secret, key + "x", "mlk_", "Bearer " + key, key.upper(), ""):
        assert status_of(lambda w=wrong: apikeys.authenticate(w, scope="predict")) == (401, apikeys.NOT_VALID)
    assert apikeys.authenticate(key, scope="predict")["uid"] == f"u-{unique}"


def test_a_revoked_key_stops_at_once_and_only_its_owner_can_revoke_it(unique: str) -> None:
    alice, mallory = f"alice-{unique}", f"mallory-{unique}"
    made = apikeys.create(alice, "ci", ["predict"])
    assert status_of(lambda: apikeys.revoke(mallory, made["id"]))[0] == 404
    assert status_of(lambda: apikeys.revoke(alice, "no-such-key"))[0] == 404
    apikeys.authenticate(made["key"], scope="predict")
    apikeys.revoke(alice, made["id"])
    status, detail = status_of(lambda: apikeys.authenticate(made["key"], scope="predict"))
    assert status == 401 and "revoked" in detail
    assert status_of(lambda: apikeys.revoke(alice, made["id"]))[0] == 404  # a second revoke: nothing to revoke
    assert apikeys.list_keys(alice) == []


def test_an_expired_key_says_so(unique: str) -> None:
    made = apikeys.create(f"u-{unique}", "short", ["predict"], expires_in_days=1)
    apikeys.authenticate(made["key"], scope="predict")
    with clock.travel(by=timedelta(days=1, seconds=1)):
        status, detail = status_of(lambda: apikeys.authenticate(made["key"], scope="predict"))
    assert status == 401 and "expired" in detail


def test_a_key_works_only_within_its_scopes_and_deployments(unique: str) -> None:
    made = apikeys.create(f"u-{unique}", "one", ["predict"], deployment_ids=["dep-1"])
    assert status_of(lambda: apikeys.authenticate(made["key"], scope="admin"))[0] == 403
    doc = apikeys.authenticate(made["key"], scope="predict")
    assert apikeys.allows(doc, "dep-1") and not apikeys.allows(doc, "dep-2")
    unrestricted = apikeys.authenticate(apikeys.create(f"u-{unique}", "all", ["predict"])["key"], scope="predict")
    assert apikeys.allows(unrestricted, "dep-2")


def test_the_key_is_shown_once_and_stored_only_as_a_hash(unique: str) -> None:
    uid = f"u-{unique}"
    made = apikeys.create(uid, "  laptop  ", ["predict"], expires_in_days=30)
    key = made["key"]
    assert key.startswith("mlk_") and len(key) == 4 + 16 + 1 + 43
    doc = stored(made["id"])
    assert doc["hash"] == hashlib.sha256(key.encode()).hexdigest()
    assert key not in str(doc) and key.split("_", 2)[2] not in str(doc)
    [listed] = apikeys.list_keys(uid)
    assert listed == {k: v for k, v in made.items() if k != "key"}
    assert listed["name"] == "laptop" and listed["prefix"] == key[:20] and listed["scopes"] == ["predict"]
    assert listed["expires_at"] is not None and listed["last_used_at"] is None
    assert key not in str(apikeys.list_keys(uid))


def test_use_is_recorded_without_a_write_per_request(unique: str) -> None:
    made = apikeys.create(f"u-{unique}", "busy", ["predict"])
    apikeys.touch(made["id"])
    first = stored(made["id"])["last_used_at"]
    assert first is not None
    with clock.travel(by=timedelta(seconds=5)):
        apikeys.touch(made["id"])  # within the minute: no write
    assert stored(made["id"])["last_used_at"] == first


def test_a_new_instance_does_not_write_again_a_use_written_within_the_minute(unique: str) -> None:
    made = apikeys.create(f"u-{unique}", "busy", ["predict"])
    apikeys.touch(made["id"])
    first = stored(made["id"])["last_used_at"]
    apikeys.reset()  # a new instance, which has written nothing yet, reads the key document
    apikeys.touch(made["id"], first)
    assert stored(made["id"])["last_used_at"] == first
    apikeys.reset()
    with clock.travel(by=timedelta(seconds=61)):
        apikeys.touch(made["id"], first)  # written a minute ago: recorded again
    assert stored(made["id"])["last_used_at"] > first


@pytest.mark.parametrize(
    ("kw", "field"),
    [
        ({"name": ""}, "name"),
        ({"name": "x" * 101}, "name"),
        ({"scopes": []}, "scopes"),
        ({"scopes": ["predict", "admin"]}, "scopes"),
        ({"deployment_ids": ["d"] * 51}, "deployment_ids"),
        ({"deployment_ids": [""]}, "deployment_ids"),
        ({"expires_in_days": 0}, "expires_in_days"),
        ({"expires_in_days": 3651}, "expires_in_days"),
        ({"expires_in_days": True}, "expires_in_days"),
    ],
)
def test_bad_key_requests_are_422_and_store_nothing(unique: str, kw: dict, field: str) -> None:
    uid = f"u-{unique}"
    args = {"name": "ok", "scopes": ["predict"], **kw}
    with pytest.raises(Problem) as caught:
        apikeys.create(uid, args.pop("name"), args.pop("scopes"), **args)
    assert caught.value.status == 422 and caught.value.errors[0]["field"] == field
    assert apikeys.list_keys(uid) == []


def test_a_user_holds_a_bounded_number_of_live_keys_and_a_deleted_user_none(unique: str) -> None:
    uid = f"u-{unique}"
    made = [apikeys.create(uid, f"k{i}", ["predict"]) for i in range(apikeys.MAX_KEYS)]
    assert status_of(lambda: apikeys.create(uid, "one more", ["predict"]))[0] == 409
    apikeys.revoke(uid, made[0]["id"])
    apikeys.create(uid, "one more", ["predict"])
    assert apikeys.revoke_all(uid) == apikeys.MAX_KEYS
    assert all(status_of(lambda k=m["key"]: apikeys.authenticate(k, scope="predict"))[0] == 401 for m in made)
