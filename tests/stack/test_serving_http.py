"""Deployments, API keys, predictions and share views through the gateway, as a client calls them:
the route table's rows for the deployments and predict functions. Abuse cases first: another user's
ids, a free user, a version not ready, a key shown once and revoked, a key without the scope or for
another deployment, no key at all; then predictions for the three tasks, the quota, a lapsed PRO and
the public view."""

from __future__ import annotations

import time

import httpx
import pytest

from mllab.files import catalog
from mllab.serving import deployments
from mllab.serving.predictor import Model

from .serving_support import golden_files, not_pro, pro, saved_version, synthetic_files, used_up, user_doc


@pytest.fixture
def owner(member):
    """A PRO member with a saved, ready version of the lab's churn model."""
    b = member()
    pro(b.uid)
    model, n = saved_version(b.uid, *golden_files()[:2])
    b.model, b.version = model, n
    return b


def deploy(b, model_id: str, version: int) -> httpx.Response:
    return b.request("POST", "/deployments", json_body={"model_id": model_id, "version": version})


def new_key(b, **fields) -> dict:
    r = b.request("POST", "/api-keys", json_body={"name": "ci", "scopes": ["predict"], **fields})
    assert r.status_code == 201, r.text
    return r.json()


def predict(gateway: httpx.Client, dep_id: str, key: str | None, instances: list, **headers) -> httpx.Response:
    h = {"Authorization": f"Bearer {key}"} if key else {}
    return gateway.post(f"/predict/{dep_id}", json={"instances": instances}, headers={**h, **headers})


def problem(r: httpx.Response, status: int) -> dict:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    return r.json()


# --- abuse cases -------------------------------------------------------------------------------------


def test_another_users_deployment_and_key_ids_answer_404(owner, member) -> None:
    dep = deploy(owner, owner.model["id"], owner.version).json()
    key = new_key(owner)
    mallory = member()
    pro(mallory.uid)
    assert deploy(mallory, owner.model["id"], owner.version).status_code == 404
    for method, path, body in (
        ("GET", f"/deployments/{dep['id']}", None),
        ("PATCH", f"/deployments/{dep['id']}", {"public": True}),
        ("DELETE", f"/deployments/{dep['id']}", None),
        ("DELETE", f"/api-keys/{key['id']}", None),
    ):
        problem(mallory.request(method, path, json_body=body), 404)
    assert mallory.request("GET", "/deployments").json() == {"items": []}
    assert owner.request("GET", f"/deployments/{dep['id']}").json()["public"] is False
    assert [k["id"] for k in owner.request("GET", "/api-keys").json()["items"]] == [key["id"]]


def test_a_free_user_cannot_deploy(member) -> None:
    b = member()
    pro(b.uid)
    model, n = saved_version(b.uid, *golden_files()[:2])
    not_pro(b.uid)
    assert problem(deploy(b, model["id"], n), 403)["type"].endswith("plan-required")
    assert b.request("GET", "/deployments").json() == {"items": []}


def test_a_version_not_ready_answers_409(owner) -> None:
    pending = catalog.allocate_version(owner.uid, owner.model["id"])["version"]  # no files: pending
    assert "pending" in problem(deploy(owner, owner.model["id"], pending), 409)["detail"]
    assert owner.request("GET", "/deployments").json() == {"items": []}


def test_bad_bodies_are_422_and_change_nothing(owner) -> None:
    for body in (
        {"model_id": owner.model["id"]},
        {"model_id": "x", "version": 1},
        {"model_id": owner.model["id"], "version": 0},
    ):
        problem(owner.request("POST", "/deployments", json_body=body), 422)
    problem(owner.request("POST", "/api-keys", json_body={"name": "k", "scopes": ["admin"]}), 422)
    assert owner.request("GET", "/deployments").json() == {"items": []}
    assert owner.request("GET", "/api-keys").json() == {"items": []}


def test_a_key_is_shown_once_listed_without_its_secret_and_revoked_at_once(owner, gateway, stack) -> None:
    dep = deploy(owner, owner.model["id"], owner.version).json()
    created = new_key(owner)
    secret = created["key"]
    assert secret.startswith("mlk_") and created["prefix"] in secret
    listed = owner.request("GET", "/api-keys").json()["items"]
    assert [k["id"] for k in listed] == [created["id"]] and "key" not in listed[0]
    assert secret not in owner.request("GET", "/api-keys").text
    rows = golden_files()[2]["rows"][:1]
    assert predict(gateway, dep["id"], secret, rows).status_code == 200
    assert owner.request("DELETE", f"/api-keys/{created['id']}").status_code == 204
    assert problem(predict(gateway, dep["id"], secret, rows), 401)
    assert secret not in (stack.log_dir / "fn-predict.log").read_text()  # the key is never logged


def test_no_key_a_session_token_or_a_key_for_another_deployment_is_refused(owner, gateway) -> None:
    dep = deploy(owner, owner.model["id"], owner.version).json()
    other = deploy(owner, owner.model["id"], owner.version).json()
    rows = golden_files()[2]["rows"][:1]
    r = predict(gateway, dep["id"], None, rows)
    assert problem(r, 401) and "Bearer" in r.headers["WWW-Authenticate"]
    problem(predict(gateway, dep["id"], owner.access_token, rows), 401)  # a session token is not a key
    restricted = new_key(owner, deployment_ids=[other["id"]])["key"]
    assert problem(predict(gateway, dep["id"], restricted, rows), 403)["type"].endswith("insufficient-scope")
    assert predict(gateway, other["id"], restricted, rows).status_code == 200


def test_another_users_key_cannot_reach_a_deployment(owner, member, gateway) -> None:
    dep = deploy(owner, owner.model["id"], owner.version).json()
    mallory = member()
    pro(mallory.uid)
    problem(predict(gateway, dep["id"], new_key(mallory)["key"], golden_files()[2]["rows"][:1]), 404)


def test_predict_allows_any_origin_without_credentials(owner, gateway) -> None:
    dep = deploy(owner, owner.model["id"], owner.version).json()
    pre = gateway.options(
        f"/predict/{dep['id']}",
        headers={
            "Origin": "https://elsewhere.example",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type",
        },  # fmt: skip
    )
    assert pre.status_code == 204 and "Authorization" in pre.headers["Access-Control-Allow-Headers"]
    r = predict(
        gateway, dep["id"], new_key(owner)["key"], golden_files()[2]["rows"][:1], Origin="https://elsewhere.example"
    )
    assert r.status_code == 200 and r.headers["Access-Control-Allow-Origin"] == "*"
    assert "Access-Control-Allow-Credentials" not in r.headers
    listed = gateway.get("/deployments", headers={"Origin": "https://elsewhere.example"})
    assert "Access-Control-Allow-Origin" not in listed.headers  # only /predict is open to any origin


# --- deployments and predictions ---------------------------------------------------------------------


def test_create_list_get_switch_and_delete_a_deployment(owner, gateway) -> None:
    r = deploy(owner, owner.model["id"], owner.version)
    assert r.status_code == 201, r.text
    dep = r.json()
    assert {k: dep[k] for k in ("model_id", "version", "public")} == {
        "model_id": owner.model["id"], "version": owner.version, "public": False}  # fmt: skip
    assert dep["predict_url"].endswith(f"/predict/{dep['id']}")
    assert owner.request("GET", "/deployments").json()["items"] == [dep]
    assert owner.request("GET", f"/deployments/{dep['id']}").json() == dep
    _, v2 = saved_version(owner.uid, *golden_files()[:2], model=owner.model)
    switched = owner.request("PATCH", f"/deployments/{dep['id']}", json_body={"version": v2, "description": "churn"})
    assert (
        switched.status_code == 200 and switched.json()["version"] == v2 and switched.json()["description"] == "churn"
    )
    key = new_key(owner)["key"]
    answer = predict(gateway, dep["id"], key, golden_files()[2]["rows"][:1]).json()
    assert answer["version"] == v2 and answer["model_id"] == owner.model["id"]
    assert owner.request("DELETE", f"/deployments/{dep['id']}").status_code == 204
    problem(owner.request("GET", f"/deployments/{dep['id']}"), 404)
    problem(predict(gateway, dep["id"], key, golden_files()[2]["rows"][:1]), 404)


@pytest.mark.parametrize("task", ["binary", "multiclass", "regression"])
def test_predictions_for_each_task_match_the_engine(task, member, gateway) -> None:
    b = member()
    pro(b.uid)
    model_json, weights = synthetic_files(task)
    model, n = saved_version(b.uid, model_json, weights)
    dep = deploy(b, model["id"], n).json()
    instances = [{"age": 30, "income": 4.5, "plan": "pro"}, {"age": None, "income": 7.0, "plan": "gold"}]
    r = predict(gateway, dep["id"], new_key(b)["key"], instances)
    assert r.status_code == 200, r.text
    assert r.json() == {"predictions": Model.from_files(model_json, weights).predict(instances),
                        "deployment_id": dep["id"], "model_id": model["id"], "version": n}  # fmt: skip
    bad = problem(
        predict(gateway, dep["id"], new_key(b)["key"], [{"age": 1, "income": 2, "plan": "pro", "zip": 1}]), 422
    )
    assert any(e["field"] == "instances.0.zip" for e in bad["errors"])


def test_the_lab_models_predictions_equal_tfjs_through_the_gateway(owner, gateway) -> None:
    dep = deploy(owner, owner.model["id"], owner.version).json()
    recorded = golden_files()[2]
    r = predict(gateway, dep["id"], new_key(owner)["key"], recorded["rows"])
    assert r.status_code == 200, r.text
    for got, want in zip(r.json()["predictions"], recorded["predictions"], strict=True):
        assert got["label"] == want["label"]
        assert (
            max(abs(g["p"] - w["p"]) for g, w in zip(got["probabilities"], want["probabilities"], strict=True)) <= 1e-5
        )


def test_over_quota_answers_429_with_retry_after(owner, gateway) -> None:
    dep = deploy(owner, owner.model["id"], owner.version).json()
    used_up(owner.uid, 100_000)
    r = predict(gateway, dep["id"], new_key(owner)["key"], golden_files()[2]["rows"][:1])
    body = problem(r, 429)
    assert body["type"].endswith("quota-exceeded") and int(r.headers["Retry-After"]) > 0


def test_losing_pro_pauses_predictions_with_402_and_resuming_restores_them(owner, gateway) -> None:
    dep = deploy(owner, owner.model["id"], owner.version).json()
    key = new_key(owner)["key"]
    rows = golden_files()[2]["rows"][:1]
    assert predict(gateway, dep["id"], key, rows).status_code == 200
    not_pro(owner.uid)
    deadline = time.monotonic() + 20  # the predict function's view of an owner's plan is up to 10 s old
    while (r := predict(gateway, dep["id"], key, rows)).status_code == 200 and time.monotonic() < deadline:
        time.sleep(0.5)
    assert problem(r, 402)["type"].endswith("deployment-paused")
    assert owner.request("GET", f"/deployments/{dep['id']}").status_code == 200  # nothing deleted
    pro(owner.uid)
    deadline = time.monotonic() + 20
    while (r := predict(gateway, dep["id"], key, rows)).status_code == 402 and time.monotonic() < deadline:
        time.sleep(0.5)
    assert r.status_code == 200


# --- the public view ---------------------------------------------------------------------------------


def test_the_public_view_is_404_while_private_and_open_once_shared(owner, gateway) -> None:
    dep = deploy(owner, owner.model["id"], owner.version).json()
    problem(gateway.get(f"/public/deployments/{dep['id']}"), 404)
    problem(gateway.get("/public/deployments/nosuchmodel"), 404)
    assert owner.request("PATCH", f"/deployments/{dep['id']}", json_body={"public": True}).status_code == 200
    view = gateway.get(f"/public/deployments/{dep['id']}")
    assert view.status_code == 200, view.text
    body = view.json()
    assert body["id"] == dep["id"] and body["task"] == "binary" and body["model_json_url"].startswith("http")
    assert owner.uid not in {k: v for k, v in body.items() if not k.endswith("_url")}.__repr__()
    assert httpx.get(body["model_json_url"]).status_code == 200


# --- usage and plans ---------------------------------------------------------------------------------


def test_me_shows_this_months_predictions_and_the_plans_show_the_quota(owner, gateway) -> None:
    dep = deploy(owner, owner.model["id"], owner.version).json()
    key = new_key(owner)["key"]
    rows = golden_files()[2]["rows"]
    assert predict(gateway, dep["id"], key, rows[:3]).status_code == 200
    time.sleep(1.2)  # the predict function writes its counts at most once a second, with the next request
    assert predict(gateway, dep["id"], key, rows[:1]).status_code == 200
    shown = owner.request("GET", "/me").json()["predictions"]
    assert shown["predictions"] == 4 and shown["limit"] == 100_000 and len(shown["month"]) == 7
    limits = {p["id"]: p["limits"] for p in gateway.get("/billing/plans").json()["plans"]}
    assert (limits["free"]["deployments"], limits["free"]["predictions_per_month"]) == (0, 0)
    assert (limits["pro"]["deployments"], limits["pro"]["predictions_per_month"]) == (20, 100_000)


def test_predictions_stay_on_me_after_the_deployment_that_made_them_is_deleted(owner, gateway) -> None:
    assert owner.request("GET", "/me").json()["predictions"]["predictions"] == 0
    assert deployments.DEPLOYED_AT not in user_doc(owner.uid)
    dep = deploy(owner, owner.model["id"], owner.version).json()
    assert deployments.DEPLOYED_AT in user_doc(owner.uid)  # the mark /me reads the month's counts by
    key = new_key(owner)["key"]
    rows = golden_files()[2]["rows"]
    assert predict(gateway, dep["id"], key, rows[:2]).status_code == 200
    time.sleep(1.2)  # the predict function writes its counts at most once a second, with the next request
    assert predict(gateway, dep["id"], key, rows[:1]).status_code == 200
    assert owner.request("DELETE", f"/deployments/{dep['id']}").status_code == 204
    assert owner.request("GET", "/me").json()["predictions"]["predictions"] == 3
