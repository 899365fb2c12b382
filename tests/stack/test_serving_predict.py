"""Deployments and predictions on the emulators (Firestore, fake-gcs-server and the event pipeline
that marks a saved version ready), called at the domain level (mllab.serving); the HTTP routes come
with the route table. Abuse cases first: another user's model, deployment and key; a free user; a
restricted, revoked or guessed key; a deleted owner; a version not ready or not servable; quota
exhaustion; then the predictions themselves, a version switch, pause and resume."""

from __future__ import annotations

import json

import pytest

from mllab.files import catalog
from mllab.identity import users
from mllab.platform import clock
from mllab.platform.problems import Problem
from mllab.serving import apikeys, deployments, metering, predict, store
from mllab.serving.predictor import Model

from .identity_support import firestore_rpcs
from .serving_support import golden_files, not_pro, pro, saved_version


@pytest.fixture(autouse=True)
def fresh_caches():
    for module in (metering, predict, store):
        module.reset()
    yield
    for module in (metering, predict, store):
        module.reset()


def refused(call) -> Problem:
    with pytest.raises(Problem) as caught:
        call()
    return caught.value


@pytest.fixture
def deployed(new_user):
    """A PRO user with a deployment of the lab's churn model and a predict key."""
    user = new_user()
    uid = user["uid"]
    pro(uid)
    model_json, weights, _ = golden_files()
    model, n = saved_version(uid, model_json, weights)
    dep = deployments.create(uid, model["id"], n)
    key = apikeys.create(uid, "ci", ["predict"])["key"]
    return {"uid": uid, "model": model, "version": n, "deployment": dep, "key": key}


# --- abuse cases -------------------------------------------------------------------------------------


def test_another_users_model_deployment_and_key_answer_404(deployed, new_user) -> None:
    mallory = new_user()["uid"]
    pro(mallory)
    dep_id = deployed["deployment"]["id"]
    assert refused(lambda: deployments.create(mallory, deployed["model"]["id"], 1)).status == 404
    for call in (
        lambda: deployments.get(mallory, dep_id),
        lambda: deployments.update(mallory, dep_id, {"public": True}),
        lambda: deployments.delete(mallory, dep_id),
    ):
        assert refused(call).status == 404
    mallorys_key = apikeys.create(mallory, "mine", ["predict"])["key"]
    assert refused(lambda: predict.predict(mallorys_key, dep_id, {"instances": [{}]})).status == 404
    assert deployments.get(deployed["uid"], dep_id)["public"] is False  # nothing changed


def test_a_free_user_cannot_deploy(new_user) -> None:
    uid = new_user()["uid"]
    pro(uid)
    model, n = saved_version(uid, *golden_files()[:2])
    not_pro(uid)
    problem = refused(lambda: deployments.create(uid, model["id"], n))
    assert problem.status == 403 and problem.slug == "plan-required"
    assert deployments.list_deployments(uid) == []


def test_a_version_not_ready_or_not_servable_answers_409(deployed) -> None:
    uid, model = deployed["uid"], deployed["model"]
    pending = catalog.allocate_version(uid, model["id"])["version"]
    assert refused(lambda: deployments.create(uid, model["id"], pending)).status == 409
    model_json, weights, _ = golden_files()
    broken = model_json.replace(b'"activation": "tanh"', b'"activation": "gelu"').replace(
        b'"activation":"tanh"', b'"activation":"gelu"'
    )
    _, bad = saved_version(uid, broken, weights, model)
    problem = refused(lambda: deployments.create(uid, model["id"], bad))
    assert problem.status == 409 and "gelu" in problem.detail
    problem = refused(lambda: deployments.update(uid, deployed["deployment"]["id"], {"version": bad}))
    assert problem.status == 409
    assert deployments.get(uid, deployed["deployment"]["id"])["version"] == deployed["version"]


def test_a_ready_version_whose_file_is_gone_answers_409(deployed) -> None:
    uid, model, n = deployed["uid"], deployed["model"], deployed["version"]
    ref = catalog.version_ref(model["id"], n)
    recorded = ref.get().to_dict()["files"]["weights.bin"]["generation"]
    ref.update({"files.`weights.bin`.generation": recorded + 1})  # a generation the bucket does not hold
    store.reset()  # the model is read again, as by a new instance
    body = {"instances": golden_files()[2]["rows"][:1]}
    problem = refused(lambda: predict.predict(deployed["key"], deployed["deployment"]["id"], body))
    assert problem.status == 409 and "weights.bin is no longer in the bucket" in problem.detail
    problem = refused(lambda: deployments.create(uid, model["id"], n))
    assert problem.status == 409 and "weights.bin" in problem.detail
    assert metering.used(uid) == 0


def test_keys_that_must_not_predict(deployed, new_user) -> None:
    uid, dep_id, key = deployed["uid"], deployed["deployment"]["id"], deployed["key"]
    body = {"instances": golden_files()[2]["rows"][:1]}
    restricted = apikeys.create(uid, "other", ["predict"], deployment_ids=["someotherdeployment"])
    assert refused(lambda: predict.predict(restricted["key"], dep_id, body)).status == 403
    for guessed in ("mlk_" + "a" * 16 + "_" + "b" * 43, key[:-1] + ("x" if key[-1] != "x" else "y"), "", "Bearer"):
        assert refused(lambda g=guessed: predict.predict(g, dep_id, body)).status == 401
    revoked = apikeys.create(uid, "old", ["predict"])
    apikeys.revoke(uid, revoked["id"])
    assert refused(lambda: predict.predict(revoked["key"], dep_id, body)).status == 401
    assert refused(lambda: predict.predict(key, "no-such-deployment", body)).status == 404
    assert refused(lambda: predict.predict(key, "../" + dep_id, body)).status == 404
    users.update(uid, deleted_at=clock.now(), disabled=True)
    predict.reset()
    problem = refused(lambda: predict.predict(key, dep_id, body))
    assert problem.status == 401 and "deleted account" in problem.detail


@pytest.mark.parametrize(
    "body",
    [None, [], {"instances": []}, {"instances": [{}] * 1001}, {"instances": "x"}, {"instances": [{}], "extra": 1}],
)
def test_malformed_bodies_are_422(deployed, body) -> None:
    problem = refused(lambda: predict.predict(deployed["key"], deployed["deployment"]["id"], body))
    assert problem.status == 422
    assert metering.used(deployed["uid"]) == 0


def test_losing_pro_pauses_and_resuming_resumes(deployed) -> None:
    uid, dep_id, key = deployed["uid"], deployed["deployment"]["id"], deployed["key"]
    body = {"instances": golden_files()[2]["rows"][:2]}
    assert len(predict.predict(key, dep_id, body)["predictions"]) == 2
    not_pro(uid)
    problem = refused(lambda: predict.predict(key, dep_id, body))
    assert problem.status == 402 and "paused" in problem.detail and "nothing was deleted" in problem.detail
    assert deployments.get(uid, dep_id)["id"] == dep_id
    pro(uid)
    assert len(predict.predict(key, dep_id, body)["predictions"]) == 2


def test_over_quota_answers_429_until_the_month_starts(deployed, monkeypatch) -> None:
    uid, dep_id, key = deployed["uid"], deployed["deployment"]["id"], deployed["key"]
    monkeypatch.setitem(predict.PREDICTIONS_PER_MONTH, "pro", 5)
    rows = golden_files()[2]["rows"]
    predict.predict(key, dep_id, {"instances": rows[:4]})
    problem = refused(lambda: predict.predict(key, dep_id, {"instances": rows[:2]}))
    assert problem.status == 429 and int(problem.headers["Retry-After"]) == metering.seconds_to_next_month()
    predict.predict(key, dep_id, {"instances": rows[:1]})  # exactly the quota
    assert refused(lambda: predict.predict(key, dep_id, {"instances": rows[:1]})).status == 429
    metering.flush()
    assert metering.usage(uid) == {"month": metering.month_of(), "predictions": 5, "by_deployment": {dep_id: 5}}


# --- predictions -----------------------------------------------------------------------------------


def test_predictions_are_the_labs_and_are_metered(deployed) -> None:
    uid, dep_id, key = deployed["uid"], deployed["deployment"]["id"], deployed["key"]
    _, _, recorded = golden_files()
    answer = predict.predict(key, dep_id, {"instances": recorded["rows"]})
    assert answer["deployment_id"] == dep_id and answer["model_id"] == deployed["model"]["id"]
    assert answer["version"] == deployed["version"]
    for mine, theirs in zip(answer["predictions"], recorded["predictions"], strict=True):
        assert mine["label"] == theirs["label"]
        assert all(
            abs(a["p"] - b["p"]) <= 1e-5 for a, b in zip(mine["probabilities"], theirs["probabilities"], strict=True)
        )
    bad = refused(lambda: predict.predict(key, dep_id, {"instances": [{"tenure": "soon"}]}))
    assert bad.status == 422 and bad.errors and bad.errors[0]["field"] == "instances.0.tenure"
    metering.flush()
    assert metering.usage(uid)["by_deployment"] == {dep_id: len(recorded["rows"])}  # the 422 counts nothing
    assert apikeys.list_keys(uid)[0]["last_used_at"] is not None


def test_a_new_instances_first_call_reads_owner_usage_and_version_in_one_round_trip(deployed) -> None:
    apikeys.reset()
    row = golden_files()[2]["rows"][0]
    call = lambda: predict.predict(deployed["key"], deployed["deployment"]["id"], {"instances": [row]})  # noqa: E731
    with firestore_rpcs() as first:
        assert len(call()["predictions"]) == 1
    with firestore_rpcs() as warm:
        assert len(call()["predictions"]) == 1
    # the key and the deployment; then the owner's two documents, the 16 usage shards and the version
    assert [r for r in first if r == "batch_get_documents"] == ["batch_get_documents"] * 2, first
    assert [r for r in warm if r == "batch_get_documents"] == ["batch_get_documents"], warm  # the key's


def test_switching_versions_changes_the_next_prediction(deployed) -> None:
    uid, dep_id, key, model = deployed["uid"], deployed["deployment"]["id"], deployed["key"], deployed["model"]
    model_json, weights, recorded = golden_files()
    doc = json.loads(model_json)
    labels = doc["userDefinedMetadata"]["preprocessor"]["target_encoding"]["labels"]
    doc["userDefinedMetadata"]["preprocessor"]["target_encoding"]["labels"] = [f"v2-{label}" for label in labels]
    _, v2 = saved_version(uid, json.dumps(doc).encode(), weights, model)
    body = {"instances": recorded["rows"][:1]}
    assert predict.predict(key, dep_id, body)["predictions"][0]["label"] in labels
    assert deployments.update(uid, dep_id, {"version": v2})["version"] == v2
    answer = predict.predict(key, dep_id, body)
    assert answer["version"] == v2 and answer["predictions"][0]["label"].startswith("v2-")
    assert Model.from_files(json.dumps(doc).encode(), weights).task == "binary"


def test_deployments_are_listed_updated_and_deleted(deployed) -> None:
    uid, dep_id = deployed["uid"], deployed["deployment"]["id"]
    assert deployed["deployment"]["predict_url"].endswith(f"/predict/{dep_id}")
    assert [d["id"] for d in deployments.list_deployments(uid)] == [dep_id]
    changed = deployments.update(uid, dep_id, {"public": True, "description": "  churn risk  "})
    assert changed["public"] is True and changed["description"] == "churn risk"
    assert refused(lambda: deployments.update(uid, dep_id, {"public": "yes"})).status == 422
    deployments.delete(uid, dep_id)
    assert deployments.list_deployments(uid) == []
    assert refused(lambda: predict.predict(deployed["key"], dep_id, {"instances": [{}]})).status == 404


def test_failed_keys_are_rate_limited_per_prefix_and_address(deployed) -> None:
    from mllab.platform import config

    dep_id, key = deployed["deployment"]["id"], deployed["key"]
    body = {"instances": golden_files()[2]["rows"][:1]}
    guessed = key[:21] + ("A" if key[21] != "A" else "B") + key[22:]  # the owner's prefix, a wrong secret
    for _ in range(config.RATE_LIMITS.api_key_pair):
        assert refused(lambda: predict.predict(guessed, dep_id, body, ip="203.0.113.5")).status == 401
    problem = refused(lambda: predict.predict(guessed, dep_id, body, ip="203.0.113.5"))
    assert problem.status == 429 and int(problem.headers["Retry-After"]) > 0
    assert refused(lambda: predict.predict(guessed, dep_id, body, ip="198.51.100.7")).status == 401  # elsewhere
    assert len(predict.predict(key, dep_id, body, ip="198.51.100.7")["predictions"]) == 1


# --- share pages -----------------------------------------------------------------------------------


def test_a_share_page_gets_what_it_needs_only_while_public(deployed) -> None:
    import httpx

    uid, dep_id = deployed["uid"], deployed["deployment"]["id"]
    assert refused(lambda: deployments.public_view(dep_id)).status == 404  # private by default
    deployments.update(uid, dep_id, {"public": True, "description": "Will they churn?"})
    view = deployments.public_view(dep_id)
    assert view["name"] == "churn" and view["description"] == "Will they churn?" and view["task"] == "binary"
    assert view["labels"] == ["no", "yes"] and view["target"] == "churned"
    assert [f["name"] for f in view["features"]] == ["tenure", "monthly", "plan", "code"]
    model_json, weights, _ = golden_files()
    assert httpx.get(view["model_json_url"]).content == model_json  # the visitor's browser reads the files
    assert httpx.get(view["weights_url"]).content == weights
    # The owner's id shows only inside the signed URLs' object names (the bucket's layout), nowhere else
    listed = {k: v for k, v in view.items() if not k.endswith("_url")}
    assert "uid" not in view and uid not in json.dumps(listed)
    not_pro(uid)
    assert refused(lambda: deployments.public_view(dep_id)).status == 404  # paused: not shared
    pro(uid)
    deployments.update(uid, dep_id, {"public": False})
    for unknown in (dep_id, "nosuchdeployment", "../etc", ""):
        problem = refused(lambda u=unknown: deployments.public_view(u))
        assert problem.status == 404 and problem.detail == deployments.NOT_SHARED


# --- account deletion ------------------------------------------------------------------------------


def test_deleting_the_account_stops_keys_and_deployments_and_the_purge_removes_the_rest(new_user) -> None:
    from datetime import timedelta

    from google.cloud.firestore_v1.base_query import FieldFilter

    from mllab import account
    from mllab.identity import sessions
    from mllab.platform import clients, config

    user = new_user()
    uid = user["uid"]
    pro(uid)
    model, n = saved_version(uid, *golden_files()[:2])
    dep = deployments.create(uid, model["id"], n)
    deployments.update(uid, dep["id"], {"public": True})
    key = apikeys.create(uid, "ci", ["predict"])["key"]
    predict.predict(key, dep["id"], {"instances": golden_files()[2]["rows"][:1]})
    metering.flush()
    session, _ = sessions.create(uid, "password", user_agent="test", ip="127.0.0.1")
    account.delete_account(users.get(uid), session.id, password=user["password"])
    assert refused(lambda: predict.predict(key, dep["id"], {"instances": [{}]})).status == 401
    assert refused(lambda: deployments.public_view(dep["id"])).status == 404
    assert deployments.list_deployments(uid) == []
    db = clients.firestore()

    def owned(collection: str) -> list[str]:
        return [d.id for d in db.collection(collection).where(filter=FieldFilter("uid", "==", uid)).stream()]

    assert owned(apikeys.COLLECTION) and owned(metering.COLLECTION)  # kept until the purge
    account.purge(clock.now() + timedelta(days=config.ACCOUNT_PURGE_AFTER_DAYS + 1))
    assert owned(apikeys.COLLECTION) == [] and owned(metering.COLLECTION) == [] and owned(deployments.COLLECTION) == []
