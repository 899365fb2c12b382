"""Saving a model to the cloud as the lab does it, through the gateway, the signed URLs, the bucket
events and the recorder; and what the recorder refuses. On both file stores (GCS and S3)."""

from __future__ import annotations

import uuid

import httpx
import pytest

from mllab.files import catalog, events, recorder
from mllab.platform import audit, clients, config
from mllab_dev.stack import BUCKET, Stack

from .backend_support import BACKENDS, on_backend, stored, upload, upload_headers, write_behind_the_api
from .conftest import Browser, docs_where
from .limits_support import signed_in, wait
from .storage_support import MODEL_JSON, WEIGHTS, at_once, model_with_version, ok, weights_event


@pytest.fixture(scope="module", params=BACKENDS)
def stack(request: pytest.FixtureRequest, stack: Stack, tmp_path_factory: pytest.TempPathFactory):
    yield from on_backend(request.param, stack, tmp_path_factory)


@pytest.fixture
def lab(stack: Stack, new_user) -> Browser:
    """A signed-in PRO user (an operator grant; the promo and PayPal paths have their own tests)."""
    return signed_in(stack, new_user(), pro=True)


def test_save_a_model_version_and_download_it(lab: Browser, stack: Stack) -> None:
    _, model_id, n = model_with_version(lab)
    # weights.bin first, then model.json: the lab's order (and the reverse of the manifest's)
    w, r = upload(lab, {"kind": "weights", "model_id": model_id, "version": n, "size": len(WEIGHTS)}, WEIGHTS)
    assert r.status_code == 200, r.text
    assert w["headers"] == upload_headers(stack, "application/octet-stream", len(WEIGHTS))
    assert (
        w["object"] == f"users/{lab.uid}/projects/{w['object'].split('/')[3]}/models/{model_id}/versions/1/weights.bin"
    )
    m, r = upload(lab, {"kind": "model", "model_id": model_id, "version": n, "size": len(MODEL_JSON)}, MODEL_JSON)
    assert r.status_code == 200

    def ready():
        # GET /models/{id} reads the model and its versions in two reads: a version can show ready in the
        # answer whose model was read just before the recording transaction set latest_version
        got = ok(lab.request("GET", f"/models/{model_id}"))
        return got if got["versions"] and got["versions"][0]["status"] == "ready" and got["latest_version"] else None

    model = wait(ready)
    assert model, "the version never became ready"
    assert model["latest_version"] == 1
    assert model["versions"][0]["size_bytes"] == len(WEIGHTS) + len(MODEL_JSON)
    assert recorder.usage_of(lab.uid) == len(WEIGHTS) + len(MODEL_JSON)

    for signed, data in ((w, WEIGHTS), (m, MODEL_JSON)):
        d = ok(lab.request("GET", "/signed/download", params={"object": signed["object"]}))
        assert d["method"] == "GET"
        assert httpx.get(d["url"], timeout=20).content == data

    exported = ok(lab.request("GET", "/account/export"))
    files = {f["object"]: f for f in exported["files"]}
    assert set(files) == {w["object"], m["object"]}
    assert files[w["object"]]["size"] == len(WEIGHTS) and files[m["object"]]["kind"] == "model"
    assert [mm["id"] for mm in exported["models"]] == [model_id]

    # a complete version is not overwritten; a new one is allocated instead
    again = lab.request(
        "POST", "/signed/upload", json_body={"kind": "weights", "model_id": model_id, "version": n, "size": 10}
    )
    assert again.status_code == 409

    # deleting the model deletes its files; the recorder frees the quota, exactly once
    assert lab.request("DELETE", f"/models/{model_id}").status_code == 204
    assert wait(lambda: recorder.usage_of(lab.uid) == 0), recorder.usage_of(lab.uid)
    art = [s.to_dict() for s in clients.firestore().collection("artifacts").stream() if s.get("uid") == lab.uid]
    for a in art:  # a redelivered delete changes nothing
        recorder.delete(events.ObjectEvent("OBJECT_DELETE", a["bucket"], a["object"], a["generation"], "again"))
    assert recorder.usage_of(lab.uid) == 0


def test_wrong_content_type_is_deleted_not_recorded(lab: Browser, stack: Stack) -> None:
    _, model_id, n = model_with_version(lab)
    headers = {**upload_headers(stack, "application/json", len(MODEL_JSON)), "Content-Type": "text/html"}
    signed, r = upload(
        lab, {"kind": "model", "model_id": model_id, "version": n, "size": len(MODEL_JSON)}, MODEL_JSON, headers
    )
    # fake-gcs-server and moto check no signatures (GCS, S3 and R2 answer 403): the recorder is the second line
    assert r.status_code == 200
    assert wait(lambda: not stored(stack, signed["object"])), "the object was not deleted"
    rejected = wait(lambda: [e for e in audit.for_actor(lab.uid) if e["action"] == "object.rejected"])
    assert rejected and rejected[0]["target"] == signed["object"]
    assert recorder.usage_of(lab.uid) == 0
    # the recorder deletes, audits, then marks the version: wait for the last step
    version = wait(
        lambda: (v := ok(lab.request("GET", f"/models/{model_id}"))["versions"][0])["status"] == "failed" and v
    )
    assert version and "must be application/json" in version["failure"]


def test_object_outside_the_grammar_is_deleted(lab: Browser, stack: Stack) -> None:
    name = f"users/{lab.uid}/notes/{uuid.uuid4().hex}.txt"
    write_behind_the_api(stack, name, b"hello", "text/plain")
    assert wait(lambda: not stored(stack, name)), "the object was not deleted"
    assert wait(lambda: [e for e in audit.for_actor(lab.uid) if e["target"] == name])


@pytest.mark.parametrize(
    "body,status",
    [
        ({"kind": "dataset", "dataset_id": "0" * 32, "filename": "../escape.csv", "size": 10}, 422),
        ({"kind": "dataset", "dataset_id": "0" * 32, "filename": "%2e%2e%2fescape.csv", "size": 10}, 422),
        ({"kind": "dataset", "dataset_id": "0" * 32, "filename": "/etc/passwd.csv", "size": 10}, 422),
        ({"kind": "weights", "model_id": "../../x", "version": 1, "size": 10}, 422),
        ({"kind": "weights", "model_id": "0" * 32, "version": 1, "size": 10}, 404),
        ({"kind": "weights", "model_id": "0" * 32, "size": 10}, 422),
        ({"kind": "weights", "model_id": "0" * 32, "version": 1, "size": 60 * 1024 * 1024}, 413),
        ({"kind": "metrics", "job_id": "0" * 32, "size": 10, "object": "users/x/y"}, 422),
        ({"kind": "script", "size": 10}, 422),
    ],
)
def test_bad_upload_requests_are_refused(lab: Browser, body: dict, status: int) -> None:
    r = lab.request("POST", "/signed/upload", json_body=body)
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/problem+json"


@pytest.mark.parametrize(
    "body",
    [
        {"kind": "metrics", "job_id": "0" * 32, "model_id": "0" * 32, "size": 10},  # an id it does not take
        {"kind": "weights", "model_id": "0" * 32, "version": 1, "size": 10},  # nobody's
        {"kind": "weights", "model_id": "0" * 32, "size": 60 * 1024 * 1024},  # no version, too big
    ],
)
def test_a_free_user_hears_of_the_plan_before_anything_wrong_with_the_file(stack: Stack, new_user, body: dict) -> None:
    free = signed_in(stack, new_user())
    r = free.request("POST", "/signed/upload", json_body=body)
    assert r.status_code == 403 and r.json()["type"].endswith("plan-required"), r.text


def test_a_file_too_big_is_refused_before_its_target_is_looked_at(lab: Browser) -> None:
    body = {"kind": "weights", "model_id": "0" * 32, "version": 1, "size": 60 * 1024 * 1024}  # nobody's
    assert lab.request("POST", "/signed/upload", json_body=body).status_code == 413


def test_another_users_ids_and_objects_are_404(stack: Stack, lab: Browser, new_user) -> None:
    _, model_id, n = model_with_version(lab)
    w, r = upload(lab, {"kind": "weights", "model_id": model_id, "version": n, "size": len(WEIGHTS)}, WEIGHTS)
    assert r.status_code == 200
    wait(lambda: recorder.usage_of(lab.uid) > 0)
    other_user = new_user()
    other = signed_in(stack, other_user, pro=True)  # PRO too
    assert (
        other.request(
            "POST", "/signed/upload", json_body={"kind": "weights", "model_id": model_id, "version": n, "size": 10}
        ).status_code
        == 404
    )
    for obj in (
        w["object"],
        w["object"].replace(lab.uid, other_user["uid"]),
        f"users/{other_user['uid']}/../{w['object']}",
        w["object"].replace("/", "%2F"),
    ):
        assert other.request("GET", "/signed/download", params={"object": obj}).status_code == 404, obj


def test_quota_and_daily_count(lab: Browser) -> None:
    _, model_id, n = model_with_version(lab)
    db = clients.firestore()
    db.collection("usage").document(lab.uid).set({"storage_bytes": 5 * 1024**3 - 100})
    r = lab.request(
        "POST", "/signed/upload", json_body={"kind": "weights", "model_id": model_id, "version": n, "size": 1000}
    )
    assert r.status_code == 403 and "free" in r.json()["detail"]
    db.collection("usage").document(lab.uid).set({"storage_bytes": 0})
    from mllab.platform import clock

    day = clock.now().strftime("%Y-%m-%d")
    db.collection("usage").document(lab.uid).collection("days").document(day).set({"uploads": 200})
    r = lab.request(
        "POST", "/signed/upload", json_body={"kind": "weights", "model_id": model_id, "version": n, "size": 1000}
    )
    assert r.status_code == 429 and int(r.headers["retry-after"]) > 0


def test_duplicate_and_out_of_order_generations(lab: Browser) -> None:
    """Events built in-process for one version's model.json: generation 2 before 1, and twice."""
    project_id, model_id, n = model_with_version(lab)
    name = f"users/{lab.uid}/projects/{project_id}/models/{model_id}/versions/{n}/model.json"

    def ev(gen: int, size: int) -> events.ObjectEvent:
        return events.ObjectEvent(
            "OBJECT_FINALIZE", BUCKET, name, gen, f"e{gen}", size=size, content_type="application/json"
        )

    assert recorder.finalize(ev(2, 200)) is True
    assert recorder.finalize(ev(2, 200)) is False  # redelivery
    assert recorder.finalize(ev(1, 100)) is False  # another generation of a recorded file: refused, never recorded
    version = (
        clients.firestore()
        .collection("models")
        .document(model_id)
        .collection("versions")
        .document(catalog.version_id(n))
        .get()
        .to_dict()
    )
    assert version["files"]["model.json"]["generation"] == 2
    assert recorder.usage_of(lab.uid) == 200
    refused = [e for e in audit.for_actor(lab.uid) if e["action"] == "object.rejected"]
    assert [(e["target"], e["details"]["generation"]) for e in refused] == [(name, 1)]
    recorder.delete(events.ObjectEvent("OBJECT_DELETE", BUCKET, name, 1, "d1"))
    assert recorder.usage_of(lab.uid) == 200  # it was never counted
    version = (
        clients.firestore()
        .collection("models")
        .document(model_id)
        .collection("versions")
        .document(catalog.version_id(n))
        .get()
        .to_dict()
    )
    assert version["files"]["model.json"]["generation"] == 2  # deleting the refused one keeps the recorded one


def test_delete_before_finalize_leaves_nothing_recorded(lab: Browser) -> None:
    project_id, model_id, n = model_with_version(lab)
    name = f"users/{lab.uid}/projects/{project_id}/models/{model_id}/versions/{n}/weights.bin"
    recorder.delete(events.ObjectEvent("OBJECT_DELETE", BUCKET, name, 7, "d"))
    assert (
        recorder.finalize(
            events.ObjectEvent(
                "OBJECT_FINALIZE", BUCKET, name, 7, "f", size=50, content_type="application/octet-stream"
            )
        )
        is False
    )
    assert recorder.usage_of(lab.uid) == 0


def _metrics(model_id: str, **overrides) -> bytes:
    import json

    doc = {
        "schema": 1,
        "model_id": model_id,
        "version": 1,
        "dataset_id": None,
        "task": "binary",
        "params": {
            "layers": [{"units": 4, "activation": "relu"}],
            "optimizer": "adam",
            "learning_rate": 0.01,
            "epochs": 2,
            "batch_size": 4,
            "seed": 1,
        },
        "epochs": [
            {"epoch": 1, "loss": 0.71, "val_loss": 0.70, "acc": 0.5, "val_acc": 0.5},
            {"epoch": 2, "loss": 0.52, "val_loss": 0.55, "acc": 0.75, "val_acc": 0.75},
        ],
        "final": {"loss": 0.52, "val_loss": 0.55, "acc": 0.75, "confusion_matrix": [[2, 0], [1, 1]]},
        "backend": "cpu",
        "started_at": "2026-11-22T03:00:00Z",
        "finished_at": "2026-11-22T03:00:02Z",
    }
    doc.update(overrides)
    return json.dumps(doc).encode()


def test_training_run_metrics_are_recorded_on_the_job(lab: Browser) -> None:
    import json

    project_id, model_id, n = model_with_version(lab)
    job = ok(
        lab.request("POST", "/jobs", json_body={"project_id": project_id, "model_id": model_id, "version": n}), 201
    )
    data = _metrics(model_id)
    signed, r = upload(lab, {"kind": "metrics", "job_id": job["id"], "size": len(data)}, data)
    assert r.status_code == 200 and signed["object"].endswith(f"/jobs/{job['id']}/metrics.json")
    snap = clients.firestore().collection("jobs").document(job["id"])
    recorded = wait(lambda: (d := snap.get().to_dict()) and d.get("status") == "recorded" and d)
    assert recorded, "metrics were not recorded"
    assert recorded["task"] == "binary" and recorded["backend"] == "cpu" and recorded["epoch_count"] == 2
    stored = json.loads(recorded["metrics_json"])
    assert stored["final"]["confusion_matrix"] == [[2, 0], [1, 1]] and stored["epochs"][1]["loss"] == 0.52


def test_invalid_metrics_are_deleted_and_the_job_is_marked_failed(lab: Browser, stack: Stack) -> None:
    project_id, model_id, _ = model_with_version(lab)
    job = ok(lab.request("POST", "/jobs", json_body={"project_id": project_id, "model_id": model_id}), 201)
    data = _metrics(model_id, task="astrology")
    signed, r = upload(lab, {"kind": "metrics", "job_id": job["id"], "size": len(data)}, data)
    assert r.status_code == 200
    assert wait(lambda: not stored(stack, signed["object"])), "invalid metrics were not deleted"
    job = wait(lambda: (j := ok(lab.request("GET", f"/jobs/{job['id']}"))) and j["status"] == "failed" and j)
    assert job and "does not match the schema" in job["failure"]
    assert recorder.usage_of(lab.uid) == 0


def test_dataset_csv_is_recorded_with_columns_and_rows(lab: Browser) -> None:
    project = ok(lab.request("POST", "/projects", json_body={"name": "Iris"}), 201)
    dataset = ok(
        lab.request(
            "POST",
            "/datasets",
            json_body={"project_id": project["id"], "name": "iris", "schema_json": {"target": "species"}},
        ),
        201,
    )
    data = b"sepal_length,sepal_width,species\n5.1,3.5,setosa\n4.9,3.0,setosa\n7.0,3.2,versicolor\n"
    signed, r = upload(
        lab, {"kind": "dataset", "dataset_id": dataset["id"], "filename": "iris.csv", "size": len(data)}, data
    )
    assert r.status_code == 200
    got = wait(lambda: (d := ok(lab.request("GET", f"/datasets/{dataset['id']}"))) and d["status"] == "ready" and d)
    assert got, "the dataset never became ready"
    assert got["columns"] == ["sepal_length", "sepal_width", "species"] and got["row_count"] == 3
    assert got["size_bytes"] == len(data) and got["object"] == signed["object"]
    d = ok(lab.request("GET", "/signed/download", params={"object": signed["object"]}))
    assert httpx.get(d["url"], timeout=20).content == data


# --- deliveries at once: the recorder's transactions under the stack's concurrent push -------------


def _refusals(uid: str) -> list[tuple[str, int, str]]:
    return [
        (e["target"], e["details"]["generation"], e["details"]["reason"])
        for e in audit.for_actor(uid)
        if e["action"] == "object.rejected"
    ]


def _version(model_id: str, n: int) -> dict:
    ref = clients.firestore().collection("models").document(model_id).collection("versions")
    return ref.document(catalog.version_id(n)).get().to_dict()


def test_two_deliveries_of_one_event_at_once_make_one_record(lab: Browser) -> None:
    project_id, model_id, n = model_with_version(lab)
    event = weights_event(lab, project_id, model_id, n, 5, 100)
    assert sorted(at_once([lambda: recorder.finalize(event)] * 2)) == [False, True]
    assert [a["generation"] for a in docs_where("artifacts", "object", event.name)] == [5]
    assert recorder.usage_of(lab.uid) == 100 and recorder.uploads_today(lab.uid) == 1
    assert _version(model_id, n)["files"]["weights.bin"]["generation"] == 5
    assert recorder.finalize(event) is False  # and a later one changes nothing either
    assert recorder.usage_of(lab.uid) == 100 and recorder.uploads_today(lab.uid) == 1


def test_a_refused_event_delivered_twice_at_once_is_audited_once(lab: Browser) -> None:
    project_id, model_id, n = model_with_version(lab)
    quota = config.LIMITS.pro_storage_bytes
    clients.firestore().collection(recorder.USAGE).document(lab.uid).set({"storage_bytes": quota - 50})
    event = weights_event(lab, project_id, model_id, n, 5, 100)
    assert at_once([lambda: recorder.finalize(event)] * 2) == [False, False]
    assert recorder.finalize(event) is False  # a third delivery, later
    assert _refusals(lab.uid) == [(event.name, 5, "the user's storage quota is full")]
    assert recorder.usage_of(lab.uid) == quota - 50 and recorder.uploads_today(lab.uid) == 0
    assert docs_where("artifacts", "object", event.name) == []
    assert _version(model_id, n)["status"] == "failed"


def test_events_of_several_versions_of_one_user_at_once_are_each_counted_once(lab: Browser) -> None:
    """They share the user's usage and daily count: contention is retried, nothing lost or doubled."""
    project_id, model_id, first = model_with_version(lab)
    versions = [first] + [ok(lab.request("POST", f"/models/{model_id}/versions"), 201)["version"] for _ in range(3)]
    batch = [weights_event(lab, project_id, model_id, v, 7, 100 + v) for v in versions]
    assert at_once([lambda e=e: recorder.finalize(e) for e in batch]) == [True] * 4
    assert recorder.usage_of(lab.uid) == sum(100 + v for v in versions) and recorder.uploads_today(lab.uid) == 4
    assert [_version(model_id, v)["files"]["weights.bin"]["size"] for v in versions] == [100 + v for v in versions]


def test_two_uploads_at_once_that_only_one_at_a_time_fits_in_the_quota_record_one(lab: Browser) -> None:
    project_id, model_id, first = model_with_version(lab)
    second = ok(lab.request("POST", f"/models/{model_id}/versions"), 201)["version"]
    quota = config.LIMITS.pro_storage_bytes
    clients.firestore().collection(recorder.USAGE).document(lab.uid).set({"storage_bytes": quota - 150})
    pair = [weights_event(lab, project_id, model_id, v, 9, 100) for v in (first, second)]
    assert sorted(at_once([lambda e=e: recorder.finalize(e) for e in pair])) == [False, True]
    assert recorder.usage_of(lab.uid) == quota - 50 and recorder.uploads_today(lab.uid) == 1
    assert [reason for _, _, reason in _refusals(lab.uid)] == ["the user's storage quota is full"]
