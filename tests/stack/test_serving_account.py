"""The account's serving data through the gateway: the export lists a user's API keys (never a key
or its hash), deployments and prediction counts per month and deployment; deleting the account
stops its keys at once and the purge leaves nothing of it in the serving collections. Abuse cases
first: a secret in the export, another user's data in it, a deleted user's key still answering."""

from __future__ import annotations

import json
from datetime import timedelta

import httpx
import pytest
from google.cloud.firestore_v1.base_query import FieldFilter

from mllab import account
from mllab.platform import clients, clock, config
from mllab.serving import apikeys, deployments, metering, predict, store

from .conftest import PASSWORD
from .serving_support import counted, golden_files, pro, saved_version


@pytest.fixture(autouse=True)
def fresh_caches():
    for module in (metering, predict, store):
        module.reset()
    yield


@pytest.fixture
def serving_member(member, gateway):
    """member() -> a PRO member with a deployment of the lab's churn model, two keys (one revoked)
    and a prediction made through the gateway with the live one."""

    def make():
        b = member()
        pro(b.uid)
        model, n = saved_version(b.uid, *golden_files()[:2])
        r = b.request("POST", "/deployments", json_body={"model_id": model["id"], "version": n})
        assert r.status_code == 201, r.text
        b.deployment = r.json()
        b.keys = [
            b.request("POST", "/api-keys", json_body={"name": name, "scopes": ["predict"]}).json()
            for name in ("ci", "old laptop")
        ]
        assert b.request("DELETE", f"/api-keys/{b.keys[1]['id']}").status_code == 204
        assert call(gateway, b.deployment["id"], b.keys[0]["key"]).status_code == 200
        return b

    return make


def call(gateway: httpx.Client, dep_id: str, key: str) -> httpx.Response:
    rows = golden_files()[2]["rows"][:1]
    return gateway.post(f"/predict/{dep_id}", json={"instances": rows}, headers={"Authorization": f"Bearer {key}"})


def export(b) -> httpx.Response:
    r = b.request("GET", "/account/export")
    assert r.status_code == 200, r.text
    return r


def owned(collection: str, uid: str) -> list[str]:
    query = clients.firestore().collection(collection).where(filter=FieldFilter("uid", "==", uid))
    return [d.id for d in query.stream()]


# --- abuse cases -------------------------------------------------------------------------------------


def test_the_export_holds_no_key_and_no_hash(serving_member) -> None:
    b = serving_member()
    text = export(b).text
    for key in b.keys:
        assert key["key"] not in text and key["key"].split("_")[-1] not in text  # nor the secret part
        assert apikeys.digest(key["key"]) not in text
    assert "hash" not in text


def test_the_export_says_when_the_user_last_made_a_deployment(serving_member) -> None:
    b = serving_member()
    assert export(b).json()["user"]["deployed_at"] == b.deployment["created_at"]


def test_another_users_keys_deployments_and_usage_never_appear(serving_member) -> None:
    b, stranger = serving_member(), serving_member()
    counted(stranger.uid, "2026-01", 3, {stranger.deployment["id"]: 41})
    data = export(b).json()
    text = json.dumps(data)
    assert stranger.uid not in text and stranger.deployment["id"] not in text
    for key in stranger.keys:
        assert key["id"] not in text and key["prefix"] not in text
    assert {k["id"] for k in data["api_keys"]} == {k["id"] for k in b.keys}
    assert [d["id"] for d in data["deployments"]] == [b.deployment["id"]]
    assert "2026-01" not in [m["month"] for m in data["prediction_usage"]]


def test_a_deleted_users_key_answers_401_at_once_and_the_purge_leaves_nothing(serving_member, gateway) -> None:
    b, stranger = serving_member(), serving_member()
    counted(b.uid, "2026-01", 5, {b.deployment["id"]: 7})
    r = b.request("DELETE", "/account", json_body={"password": PASSWORD})
    assert r.status_code == 204, r.text
    refused = call(gateway, b.deployment["id"], b.keys[0]["key"])
    assert refused.status_code == 401 and refused.headers["content-type"].startswith("application/problem+json")
    assert owned(deployments.COLLECTION, b.uid) == []  # gone at deletion: nothing answers or is shared
    assert all(d.get("revoked_at") for d in (apikeys.lookup(k["id"]) for k in b.keys))

    account.purge(clock.now() + timedelta(days=config.ACCOUNT_PURGE_AFTER_DAYS + 1))
    for collection in (apikeys.COLLECTION, deployments.COLLECTION, metering.COLLECTION):
        assert owned(collection, b.uid) == [], collection
    assert call(gateway, b.deployment["id"], b.keys[0]["key"]).status_code == 401
    # the stranger is untouched: their key still predicts, their data is still exported
    assert call(gateway, stranger.deployment["id"], stranger.keys[0]["key"]).status_code == 200
    assert [d["id"] for d in export(stranger).json()["deployments"]] == [stranger.deployment["id"]]


# --- the export --------------------------------------------------------------------------------------


def test_the_export_lists_keys_deployments_and_usage_per_month_and_deployment(serving_member) -> None:
    b = serving_member()
    dep_id, model_id, version = b.deployment["id"], b.deployment["model_id"], b.deployment["version"]
    other_id = b.request("POST", "/deployments", json_body={"model_id": model_id, "version": version}).json()["id"]
    b.request("PATCH", f"/deployments/{dep_id}", json_body={"public": True, "description": "Churn, weekly"})
    counted(b.uid, "2026-01", 2, {dep_id: 10, other_id: 5})
    counted(b.uid, "2026-01", 9, {dep_id: 1})
    counted(b.uid, "2026-02", 0, {other_id: 4})
    data = export(b).json()

    live, revoked = data["api_keys"]  # oldest first, revoked ones too
    assert {k: live[k] for k in ("id", "name", "prefix", "scopes", "deployment_ids", "revoked_at")} == {
        "id": b.keys[0]["id"],
        "name": "ci",
        "prefix": b.keys[0]["prefix"],
        "scopes": ["predict"],
        "deployment_ids": None,
        "revoked_at": None,
    }
    assert live["created_at"].endswith("Z") and live["last_used_at"].endswith("Z") and live["expires_at"] is None
    assert revoked["name"] == "old laptop" and revoked["revoked_at"].endswith("Z") and revoked["last_used_at"] is None

    first, other = data["deployments"]
    assert (first["id"], other["id"]) == (dep_id, other_id)
    assert {k: first[k] for k in ("model_id", "version", "public", "description")} == {
        "model_id": model_id,
        "version": version,
        "public": True,
        "description": "Churn, weekly",
    }
    assert first["created_at"].endswith("Z") and first["updated_at"] >= first["created_at"]

    usage = {m["month"]: m for m in data["prediction_usage"]}
    assert usage["2026-01"] == {"month": "2026-01", "predictions": 16, "by_deployment": {dep_id: 11, other_id: 5}}
    assert usage["2026-02"] == {"month": "2026-02", "predictions": 4, "by_deployment": {other_id: 4}}
    months = [m["month"] for m in data["prediction_usage"]]
    assert months == sorted(months)
