"""The catalog (projects, models + versions, datasets, jobs) through the gateway, as the lab calls it:
a signed-in browser with the session's CSRF token. Records are checked in Firestore and objects in
fake-gcs-server, so "nothing changed" and "it is gone" are observed, not assumed."""

from __future__ import annotations

import json
import re
import threading
import time
from datetime import timedelta

import httpx
import pytest

from mllab import account
from mllab.files import catalog, events
from mllab.identity import users
from mllab.platform import audit, clients, clock, config
from mllab_dev.stack import Stack

from . import limits_support
from .conftest import Browser

RFC3339 = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,9})?Z")
MODEL_KEYS = {"id", "project_id", "name", "config_json", "latest_version", "versions", "created_at", "updated_at"}
# A functional model's config: arrays directly inside arrays (which a Firestore map cannot hold).
CONFIG = {
    "class_name": "Sequential",
    "config": {
        "layers": [
            {"class_name": "Dense", "config": {"units": 4, "batch_input_shape": [None, 2], "activation": "relu"}}
        ]
    },
    "inbound_nodes": [[["input_1", 0, 0, {}]]],
    "weights": [0.5, -1.25],
}
SCHEMA = {
    "columns": [{"name": "x", "role": "feature", "type": "number"}, {"name": "y", "role": "label", "type": "category"}]
}


# --- helpers -------------------------------------------------------------------------------------


def signed_in(stack: Stack, user: dict) -> Browser:
    b = Browser(stack.gateway_url)
    r = b.login(user["email"], user["password"])
    assert r.status_code == 200, r.text
    assert b.csrf, "login did not fetch the CSRF token from /me"
    return b


@pytest.fixture
def alice(stack: Stack, new_user) -> Browser:
    b = signed_in(stack, new_user())
    b.uid = b.request("GET", "/me").json()["uid"]
    yield b
    b.client.close()


@pytest.fixture
def bob(stack: Stack, new_user) -> Browser:
    b = signed_in(stack, new_user())
    b.uid = b.request("GET", "/me").json()["uid"]
    yield b
    b.client.close()


def ok(r: httpx.Response, status: int = 200) -> dict:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    return r.json()


def assert_problem(r: httpx.Response, status: int) -> dict:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json"), r.headers
    body = r.json()
    assert body["status"] == status and body["detail"] and body["request_id"] and body["type"]
    return body


def new_project(b: Browser, name: str = "Iris") -> dict:
    return ok(b.request("POST", "/projects", json_body={"name": name}), 201)


def new_model(b: Browser, project_id: str, name: str = "mlp", config_json: dict | None = None) -> dict:
    body = {"project_id": project_id, "name": name, "config_json": CONFIG if config_json is None else config_json}
    return ok(b.request("POST", "/models", json_body=body), 201)


def new_version(b: Browser, model_id: str) -> dict:
    return ok(b.request("POST", f"/models/{model_id}/versions"), 201)


def new_dataset(b: Browser, project_id: str, name: str = "iris.csv") -> dict:
    return ok(
        b.request("POST", "/datasets", json_body={"project_id": project_id, "name": name, "schema_json": SCHEMA}), 201
    )


def new_job(b: Browser, project_id: str, model_id: str, **extra) -> dict:
    return ok(b.request("POST", "/jobs", json_body={"project_id": project_id, "model_id": model_id, **extra}), 201)


def records(collection: str, uid: str) -> list[dict]:
    from google.cloud.firestore_v1.base_query import FieldFilter

    query = clients.firestore().collection(collection).where(filter=FieldFilter("uid", "==", uid))
    return [{**s.to_dict(), "id": s.id} for s in query.stream()]


def versions_in_db(model_id: str) -> list[dict]:
    snaps = clients.firestore().collection("models").document(model_id).collection("versions").stream()
    return [{**s.to_dict(), "doc_id": s.id} for s in snaps]


def catalog_snapshot(uid: str) -> dict:
    """Everything of a user's catalog in Firestore, timestamps included (to prove nothing changed)."""
    snap = {c: sorted(records(c, uid), key=lambda d: d["id"]) for c in catalog.COLLECTIONS}
    snap["versions"] = {m["id"]: sorted(versions_in_db(m["id"]), key=lambda v: v["doc_id"]) for m in snap["models"]}
    return snap


def bucket():
    return clients.storage().bucket(config.settings().bucket)


CONTENT = {  # a valid file of each kind, as the recorder accepts it
    "model.json": (b'{"modelTopology": {}}', "application/json"),
    "weights.bin": (b"\x00\x01\x02\x03", "application/octet-stream"),
    ".csv": (b"x,y\n1,a\n2,b\n", "text/csv"),
}


def metrics_file(model_id: str) -> tuple[bytes, str]:
    return json.dumps(limits_support.metrics(model_id)).encode(), "application/json"


def put_object(name: str, content: tuple[bytes, str] | None = None) -> int:
    """Upload straight to the bucket (as a signed PUT lands) and wait until the recorder has recorded
    it, so its event cannot race what the test does next. Returns the stored size."""
    data, content_type = content or next(v for k, v in CONTENT.items() if name.endswith(k))
    blob = bucket().blob(name)
    blob.upload_from_string(data, content_type=content_type)
    art = clients.firestore().collection("artifacts").document(events.object_key(bucket().name, name, blob.generation))
    deadline = time.monotonic() + 20
    while not (art.get().exists and not art.get().get("deleted_at")):
        assert time.monotonic() < deadline, f"the recorder did not record {name} (still stored: {blob.exists()})"
        time.sleep(0.05)
    return len(data)


def usage(uid: str) -> int:
    snap = clients.firestore().collection("usage").document(uid).get()
    return int((snap.to_dict() or {}).get("storage_bytes", 0)) if snap.exists else 0


def eventually(predicate, timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def object_names(prefix: str) -> set[str]:
    return {b.name for b in bucket().list_blobs(prefix=prefix)}


def page_all(b: Browser, path: str, limit: int, **params) -> tuple[list[dict], int]:
    """Every item of a list by following next_cursor; and how many pages it took."""
    items, cursor, pages = [], None, 0
    while True:
        q = {"limit": limit, **params, **({"cursor": cursor} if cursor else {})}
        body = ok(b.request("GET", path, params=q))
        assert set(body) == {"items", "next_cursor"}
        assert len(body["items"]) <= limit
        items += body["items"]
        pages += 1
        cursor = body["next_cursor"]
        if cursor is None:
            return items, pages
        assert pages < 50, "pagination does not end"


# --- projects ------------------------------------------------------------------------------------


def test_project_create_get_list_rename_delete(alice: Browser) -> None:
    created = new_project(alice, "  Iris flowers  ")
    assert set(created) == {"id", "name", "created_at", "updated_at"}
    assert re.fullmatch(r"[0-9a-f]{32}", created["id"]) and created["name"] == "Iris flowers"
    assert RFC3339.fullmatch(created["created_at"]) and RFC3339.fullmatch(created["updated_at"])
    [doc] = records("projects", alice.uid)
    assert (doc["id"], doc["name"], doc["uid"]) == (created["id"], "Iris flowers", alice.uid)

    assert ok(alice.request("GET", f"/projects/{created['id']}")) == created
    assert ok(alice.request("GET", "/projects")) == {"items": [created], "next_cursor": None}

    renamed = ok(alice.request("PATCH", f"/projects/{created['id']}", json_body={"name": "Irises"}))
    assert renamed["name"] == "Irises" and renamed["created_at"] == created["created_at"]
    assert renamed["updated_at"] > created["updated_at"]
    assert ok(alice.request("GET", f"/projects/{created['id']}"))["name"] == "Irises"

    r = alice.request("DELETE", f"/projects/{created['id']}")
    assert r.status_code == 204 and r.content == b""
    assert_problem(alice.request("GET", f"/projects/{created['id']}"), 404)
    assert_problem(alice.request("DELETE", f"/projects/{created['id']}"), 404)
    assert records("projects", alice.uid) == []
    assert ok(alice.request("GET", "/projects"))["items"] == []
    assert "project.delete" in [e["action"] for e in audit.for_actor(alice.uid)]


# --- models and versions -------------------------------------------------------------------------


def test_model_create_and_get_shape_with_versions(alice: Browser) -> None:
    project = new_project(alice)
    model = new_model(alice, project["id"])
    assert set(model) == MODEL_KEYS
    assert (model["project_id"], model["name"], model["config_json"], model["latest_version"], model["versions"]) == (
        project["id"],
        "mlp",
        CONFIG,
        None,
        [],
    )
    [doc] = records("models", alice.uid)
    assert (doc["framework"], doc["next_version"], doc["latest_version"]) == ("tfjs", 1, None)

    got = ok(alice.request("GET", f"/models/{model['id']}"))
    assert set(got) == MODEL_KEYS and got["config_json"] == CONFIG and got["versions"] == []

    allocated = [new_version(alice, model["id"]) for _ in range(3)]
    assert [v["version"] for v in allocated] == [1, 2, 3]
    for v in allocated:
        assert set(v) == {"version", "status", "created_at", "size_bytes", "failure"}
        assert v["status"] == "pending" and v["failure"] is None and v["size_bytes"] == 0
        assert RFC3339.fullmatch(v["created_at"])

    got = ok(alice.request("GET", f"/models/{model['id']}"))
    assert got["versions"] == list(reversed(allocated))  # newest first
    assert got["latest_version"] is None  # only the recorder moves it, when a version is ready

    stored = sorted(versions_in_db(model["id"]), key=lambda v: v["version"])
    assert [v["doc_id"] for v in stored] == ["000000001", "000000002", "000000003"]
    for v in stored:
        assert (v["uid"], v["model_id"], v["project_id"], v["status"], v["files"], v["size_bytes"]) == (
            alice.uid,
            model["id"],
            project["id"],
            "pending",
            {},
            0,
        )
    assert records("models", alice.uid)[0]["next_version"] == 4
    assert catalog.version_ref(model["id"], 2).get().get("version") == 2


def test_model_rename_and_delete_removes_versions_and_its_objects_only(alice: Browser) -> None:
    project = new_project(alice)
    model = new_model(alice, project["id"])
    keep = new_model(alice, project["id"], "keep")
    new_version(alice, model["id"])
    new_version(alice, keep["id"])
    renamed = ok(alice.request("PATCH", f"/models/{model['id']}", json_body={"name": "mlp v2"}))
    assert set(renamed) == MODEL_KEYS and renamed["name"] == "mlp v2" and len(renamed["versions"]) == 1

    base = f"users/{alice.uid}/projects/{project['id']}/models"
    mine = f"{base}/{model['id']}/versions/1/model.json"
    other = f"{base}/{keep['id']}/versions/1/model.json"
    put_object(mine)
    put_object(other)
    assert object_names(f"{base}/") == {mine, other}

    assert alice.request("DELETE", f"/models/{model['id']}").status_code == 204
    assert_problem(alice.request("GET", f"/models/{model['id']}"), 404)
    assert_problem(alice.request("POST", f"/models/{model['id']}/versions"), 404)
    assert [m["id"] for m in records("models", alice.uid)] == [keep["id"]]
    assert versions_in_db(model["id"]) == []
    assert len(versions_in_db(keep["id"])) == 1
    assert object_names(f"{base}/") == {other}
    assert ok(alice.request("GET", f"/projects/{project['id']}"))["id"] == project["id"]


def test_concurrent_version_allocations_get_distinct_numbers(alice: Browser) -> None:
    model = new_model(alice, new_project(alice)["id"])
    results: list[httpx.Response] = []
    lock = threading.Lock()
    start = threading.Barrier(10)

    def allocate() -> None:
        start.wait()
        r = alice.request("POST", f"/models/{model['id']}/versions")
        with lock:
            results.append(r)

    threads = [threading.Thread(target=allocate) for _ in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert [r.status_code for r in results] == [201] * 10, [r.text for r in results if r.status_code != 201]
    assert sorted(r.json()["version"] for r in results) == list(range(1, 11))
    assert sorted(v["version"] for v in versions_in_db(model["id"])) == list(range(1, 11))
    assert records("models", alice.uid)[0]["next_version"] == 11
    assert [v["version"] for v in ok(alice.request("GET", f"/models/{model['id']}"))["versions"]] == list(
        range(10, 0, -1)
    )


# --- datasets and jobs ---------------------------------------------------------------------------


def test_dataset_create_get_rename_delete(alice: Browser) -> None:
    project = new_project(alice)
    ds = new_dataset(alice, project["id"])
    assert ds == {
        **ds,
        "project_id": project["id"],
        "name": "iris.csv",
        "schema_json": SCHEMA,
        "status": "pending",
        "object": None,
        "size_bytes": 0,
        "columns": [],
        "row_count": None,
    }
    assert ok(alice.request("GET", f"/datasets/{ds['id']}")) == ds
    assert ok(alice.request("GET", "/datasets"))["items"] == [ds]
    renamed = ok(alice.request("PATCH", f"/datasets/{ds['id']}", json_body={"name": "iris-2.csv"}))
    assert renamed["name"] == "iris-2.csv" and renamed["schema_json"] == SCHEMA

    name = f"users/{alice.uid}/projects/{project['id']}/datasets/{ds['id']}/iris.csv"
    put_object(name)
    assert ok(alice.request("GET", f"/datasets/{ds['id']}"))["row_count"] == 2  # recorded on its dataset
    assert object_names(name) == {name}
    assert alice.request("DELETE", f"/datasets/{ds['id']}").status_code == 204
    assert_problem(alice.request("GET", f"/datasets/{ds['id']}"), 404)
    assert records("datasets", alice.uid) == []
    assert object_names(name) == set()


def test_job_create_get_rename_delete(alice: Browser) -> None:
    project = new_project(alice)
    model = new_model(alice, project["id"])
    version = new_version(alice, model["id"])["version"]
    ds = new_dataset(alice, project["id"])
    job = new_job(alice, project["id"], model["id"], version=version, dataset_id=ds["id"], name="run 1")
    assert {k: job[k] for k in ("project_id", "model_id", "version", "dataset_id", "name", "status")} == {
        "project_id": project["id"],
        "model_id": model["id"],
        "version": 1,
        "dataset_id": ds["id"],
        "name": "run 1",
        "status": "created",
    }
    assert "uid" not in job and RFC3339.fullmatch(job["created_at"])
    bare = new_job(alice, project["id"], model["id"])
    assert (bare["version"], bare["dataset_id"], bare["name"], bare["status"]) == (None, None, "", "created")
    assert ok(alice.request("GET", f"/jobs/{job['id']}")) == job

    renamed = ok(alice.request("PATCH", f"/jobs/{job['id']}", json_body={"name": "run one"}))
    assert renamed["name"] == "run one" and renamed["model_id"] == model["id"]

    metrics = f"users/{alice.uid}/projects/{project['id']}/jobs/{job['id']}/metrics.json"
    put_object(metrics, metrics_file(model["id"]))
    assert ok(alice.request("GET", f"/jobs/{job['id']}"))["status"] == "recorded"  # recorded on its job
    assert alice.request("DELETE", f"/jobs/{job['id']}").status_code == 204
    assert_problem(alice.request("GET", f"/jobs/{job['id']}"), 404)
    assert [j["id"] for j in records("jobs", alice.uid)] == [bare["id"]]
    assert object_names(metrics) == set()


def test_job_references_must_exist_and_share_the_project(alice: Browser) -> None:
    p1, p2 = new_project(alice, "one"), new_project(alice, "two")
    m1, m2 = new_model(alice, p1["id"]), new_model(alice, p2["id"])
    d2 = new_dataset(alice, p2["id"])
    new_version(alice, m1["id"])
    before = catalog_snapshot(alice.uid)
    attempts = [
        {"project_id": p1["id"], "model_id": m2["id"]},  # model of another project
        {"project_id": p1["id"], "model_id": m1["id"], "version": 2},  # version never allocated
        {"project_id": p1["id"], "model_id": m1["id"], "dataset_id": d2["id"]},  # dataset of another project
        {"project_id": p1["id"], "model_id": "0" * 32},  # no such model
        {"project_id": "f" * 32, "model_id": m1["id"]},  # no such project
    ]
    for body in attempts:
        assert_problem(alice.request("POST", "/jobs", json_body=body), 404)
    assert catalog_snapshot(alice.uid) == before


# --- lists ---------------------------------------------------------------------------------------


def test_pagination_returns_every_item_exactly_once_newest_first(alice: Browser) -> None:
    made = [new_project(alice, f"p{i}") for i in range(7)]
    items, pages = page_all(alice, "/projects", 3)
    assert pages == 3
    assert [p["id"] for p in items] == [p["id"] for p in reversed(made)]
    first = ok(alice.request("GET", "/projects", params={"limit": 3}))
    assert [p["name"] for p in first["items"]] == ["p6", "p5", "p4"] and first["next_cursor"]
    assert len(ok(alice.request("GET", "/projects"))["items"]) == 7  # default limit 50
    exact = ok(alice.request("GET", "/projects", params={"limit": 7}))
    assert len(exact["items"]) == 7 and exact["next_cursor"] is None

    # the same over a filtered list
    project = made[0]
    models = [new_model(alice, project["id"], f"m{i}") for i in range(7)]
    new_model(alice, made[1]["id"], "elsewhere")
    items, pages = page_all(alice, "/models", 3, project_id=project["id"])
    assert pages == 3 and sorted(m["id"] for m in items) == sorted(m["id"] for m in models)
    assert len({m["id"] for m in items}) == 7


def test_list_filters(alice: Browser) -> None:
    p1, p2 = new_project(alice, "one"), new_project(alice, "two")
    m1, m2 = new_model(alice, p1["id"], "a"), new_model(alice, p2["id"], "b")
    m1b = new_model(alice, p1["id"], "c")
    d1, d2 = new_dataset(alice, p1["id"]), new_dataset(alice, p2["id"])
    j1, j2 = new_job(alice, p1["id"], m1["id"]), new_job(alice, p2["id"], m2["id"])
    j3 = new_job(alice, p1["id"], m1b["id"])

    def ids(path: str, **params) -> set[str]:
        return {i["id"] for i in ok(alice.request("GET", path, params=params))["items"]}

    assert ids("/models") == {m1["id"], m2["id"], m1b["id"]}
    assert ids("/models", project_id=p1["id"]) == {m1["id"], m1b["id"]}
    assert ids("/models", project_id=p2["id"]) == {m2["id"]}
    assert ids("/datasets", project_id=p1["id"]) == {d1["id"]}
    assert ids("/datasets", project_id=p2["id"]) == {d2["id"]}
    assert ids("/jobs") == {j1["id"], j2["id"], j3["id"]}
    assert ids("/jobs", project_id=p1["id"]) == {j1["id"], j3["id"]}
    assert ids("/jobs", model_id=m1["id"]) == {j1["id"]}
    assert ids("/jobs", project_id=p1["id"], model_id=m1b["id"]) == {j3["id"]}
    assert ids("/jobs", project_id=p2["id"], model_id=m1["id"]) == set()
    assert ids("/models", project_id="0" * 32) == set()
    listed = ok(alice.request("GET", "/models", params={"project_id": p2["id"]}))["items"]
    assert listed == [{k: v for k, v in m2.items() if k != "versions"}]


def test_a_models_list_with_versions_answers_what_each_model_get_answers(alice: Browser, bob: Browser) -> None:
    """GET /models?versions=true: the lab's library shows every model with its versions from one
    request (it made one GET per model before)."""
    project = new_project(alice)
    m1, m2, m3 = (new_model(alice, project["id"], name) for name in ("a", "b", "c"))
    for _ in range(3):
        new_version(alice, m1["id"])
    new_version(alice, m2["id"])
    catalog.version_ref(m1["id"], 2).delete()  # a number whose version is gone reads as missing
    theirs = new_model(bob, new_project(bob)["id"])
    new_version(bob, theirs["id"])

    listed = ok(alice.request("GET", "/models", params={"versions": "true"}))["items"]
    assert [m["id"] for m in listed] == [m3["id"], m2["id"], m1["id"]]
    for m in listed:
        assert set(m) == MODEL_KEYS
        assert m == ok(alice.request("GET", f"/models/{m['id']}")), m["name"]
    assert [[v["version"] for v in m["versions"]] for m in listed] == [[], [1], [3, 1]]

    paged = ok(alice.request("GET", "/models", params={"versions": "true", "limit": 1, "project_id": project["id"]}))
    assert [m["id"] for m in paged["items"]] == [m3["id"]] and paged["next_cursor"]
    assert "versions" not in ok(alice.request("GET", "/models", params={"versions": "false"}))["items"][0]
    assert "versions" not in ok(alice.request("GET", "/models"))["items"][0]
    for wrong in ("yes", "1", ""):
        body = assert_problem(alice.request("GET", "/models", params={"versions": wrong}), 422)
        assert body["errors"] == [{"field": "query.versions", "message": "true or false"}]
    body = assert_problem(alice.request("GET", "/projects", params={"versions": "true"}), 422)
    assert body["errors"][0]["field"] == "query.versions"  # only the models list takes it


# --- isolation -----------------------------------------------------------------------------------


def test_another_users_ids_answer_404_and_change_nothing(alice: Browser, bob: Browser) -> None:
    project = new_project(alice)
    model = new_model(alice, project["id"])
    new_version(alice, model["id"])
    ds = new_dataset(alice, project["id"])
    job = new_job(alice, project["id"], model["id"], version=1, dataset_id=ds["id"])
    obj = f"users/{alice.uid}/projects/{project['id']}/models/{model['id']}/versions/1/model.json"
    put_object(obj)
    before = catalog_snapshot(alice.uid)
    targets = {"projects": project["id"], "models": model["id"], "datasets": ds["id"], "jobs": job["id"]}

    for collection, record_id in targets.items():
        path = f"/{collection}/{record_id}"
        assert_problem(bob.request("GET", path), 404)
        assert_problem(bob.request("PATCH", path, json_body={"name": "mine now"}), 404)
        assert_problem(bob.request("DELETE", path), 404)
        assert ok(bob.request("GET", f"/{collection}"))["items"] == []
    assert_problem(bob.request("POST", f"/models/{model['id']}/versions"), 404)
    assert_problem(bob.request("POST", "/models", json_body={"project_id": project["id"], "name": "x"}), 404)
    assert_problem(bob.request("POST", "/datasets", json_body={"project_id": project["id"], "name": "x"}), 404)
    assert_problem(bob.request("POST", "/jobs", json_body={"project_id": project["id"], "model_id": model["id"]}), 404)
    # his own project cannot reach her model or dataset either
    own = new_project(bob)
    assert_problem(bob.request("POST", "/jobs", json_body={"project_id": own["id"], "model_id": model["id"]}), 404)
    own_model = new_model(bob, own["id"])
    assert_problem(
        bob.request(
            "POST", "/jobs", json_body={"project_id": own["id"], "model_id": own_model["id"], "dataset_id": ds["id"]}
        ),
        404,
    )
    for collection in ("models", "datasets", "jobs"):
        assert ok(bob.request("GET", f"/{collection}", params={"project_id": project["id"]}))["items"] == []
    assert ok(bob.request("GET", "/jobs", params={"model_id": model["id"]}))["items"] == []

    assert catalog_snapshot(alice.uid) == before
    assert object_names(obj) == {obj}
    assert [m["id"] for m in records("models", bob.uid)] == [own_model["id"]]
    assert records("jobs", bob.uid) == [] and records("datasets", bob.uid) == []
    assert ok(alice.request("GET", f"/models/{model['id']}"))["versions"][0]["version"] == 1


# --- bad input -----------------------------------------------------------------------------------


def test_bad_input_is_a_problem_and_writes_nothing(alice: Browser) -> None:
    project = new_project(alice)
    model = new_model(alice, project["id"])
    before = catalog_snapshot(alice.uid)
    p, m = project["id"], model["id"]
    cases = [
        ("POST", "/projects", {"name": "x", "owner": "someone"}, 422),  # unknown field
        ("POST", "/projects", {"name": ""}, 422),
        ("POST", "/projects", {"name": "   "}, 422),
        ("POST", "/projects", {"name": "x" * 101}, 422),
        ("POST", "/projects", {}, 422),
        ("POST", "/projects", ["name"], 422),
        ("POST", "/models", {"project_id": p, "name": "x", "config_json": [1, 2]}, 422),
        ("POST", "/models", {"project_id": p, "name": "x", "uid": alice.uid}, 422),
        ("POST", "/models", {"project_id": p.upper(), "name": "x"}, 422),
        ("POST", "/models", {"project_id": "../" + p, "name": "x"}, 422),
        ("POST", "/models", {"project_id": p, "name": "x", "config_json": {"k": "v" * (600 * 1024)}}, 422),
        ("POST", "/datasets", {"project_id": p, "name": "x", "schema_json": "cols"}, 422),
        ("POST", "/jobs", {"project_id": p, "model_id": m, "version": 0}, 422),
        ("POST", "/jobs", {"project_id": p, "model_id": m, "dataset_id": "nope"}, 422),
        ("POST", "/jobs", {"project_id": p, "model_id": m, "status": "recorded"}, 422),
        ("PATCH", f"/models/{m}", {"name": ""}, 422),
        ("PATCH", f"/models/{m}", {"name": "y", "latest_version": 9}, 422),
        ("PATCH", f"/projects/{p}", {"name": "y", "uid": "x"}, 422),
    ]
    for method, path, body, status in cases:
        problem = assert_problem(alice.request(method, path, json_body=body), status)
        if status == 422:
            assert problem["errors"], (method, path, body)
    for path in ("/projects/not-an-id", f"/models/{m}x", f"/datasets/{m.upper()}", "/jobs/..%2F..%2Fx"):
        assert_problem(alice.request("GET", path), 404)
        assert_problem(alice.request("PATCH", path, json_body={"name": "y"}), 404)
        assert_problem(alice.request("DELETE", path), 404)
    assert_problem(alice.request("POST", "/models/not-an-id/versions"), 404)
    for params in (
        {"limit": 0},
        {"limit": 1000},
        {"limit": 101},
        {"limit": "ten"},
        {"limit": -1},
        {"project_id": "x"},
        {"owner": alice.uid},
    ):
        assert_problem(alice.request("GET", "/models", params=params), 422)
    assert_problem(alice.request("GET", "/projects", params={"project_id": p}), 422)  # projects take no filter
    assert_problem(alice.request("GET", "/models", params={"model_id": m}), 422)
    for cursor in ("garbage!", "Zm9v", "W10", "WzEsIjEyMyJd", "A" * 300):  # not base64 / foo / [] / [1,"123"]
        assert_problem(alice.request("GET", "/projects", params={"cursor": cursor}), 400)
    assert_problem(
        alice.request(
            "POST", "/projects", content=b"name=x", headers={"Content-Type": "application/x-www-form-urlencoded"}
        ),
        415,
    )
    assert_problem(alice.request("POST", "/projects", content=b"{", headers={"Content-Type": "application/json"}), 400)
    assert_problem(alice.request("POST", "/projects", json_body={"name": "x"}, headers={"X-CSRF-Token": "stale"}), 403)
    assert_problem(alice.request("POST", "/projects", json_body={"name": "x"}, auth=False), 401)
    assert_problem(alice.request("GET", "/projects", auth=False), 401)
    assert catalog_snapshot(alice.uid) == before


# --- deletion ------------------------------------------------------------------------------------


def test_deleting_a_project_removes_its_records_and_objects(alice: Browser) -> None:
    project, other = new_project(alice, "doomed"), new_project(alice, "kept")
    model = new_model(alice, project["id"])
    new_version(alice, model["id"])
    new_version(alice, model["id"])
    ds = new_dataset(alice, project["id"])
    job = new_job(alice, project["id"], model["id"], version=2, dataset_id=ds["id"])
    kept_model = new_model(alice, other["id"])
    kept_job = new_job(alice, other["id"], kept_model["id"])

    base = f"users/{alice.uid}/projects/{project['id']}"
    doomed = {
        f"{base}/models/{model['id']}/versions/1/model.json",
        f"{base}/models/{model['id']}/versions/1/weights.bin",
        f"{base}/datasets/{ds['id']}/iris.csv",
        f"{base}/jobs/{job['id']}/metrics.json",
    }
    survivor = f"users/{alice.uid}/projects/{other['id']}/jobs/{kept_job['id']}/metrics.json"
    stored = sum(
        put_object(name, metrics_file(model["id"]) if name.endswith("metrics.json") else None)
        for name in sorted(doomed)
    )
    kept = put_object(survivor, metrics_file(kept_model["id"]))
    assert object_names(f"{base}/") == doomed
    assert usage(alice.uid) == stored + kept

    assert alice.request("DELETE", f"/projects/{project['id']}").status_code == 204
    assert object_names(f"{base}/") == set()
    assert object_names(survivor) == {survivor}
    assert eventually(lambda: usage(alice.uid) == kept), usage(alice.uid)  # the recorder freed the quota
    assert [p["id"] for p in records("projects", alice.uid)] == [other["id"]]
    assert [m["id"] for m in records("models", alice.uid)] == [kept_model["id"]]
    assert records("datasets", alice.uid) == []
    assert [j["id"] for j in records("jobs", alice.uid)] == [kept_job["id"]]
    assert versions_in_db(model["id"]) == []
    for path in (f"/models/{model['id']}", f"/datasets/{ds['id']}", f"/jobs/{job['id']}"):
        assert_problem(alice.request("GET", path), 404)
    assert ok(alice.request("GET", "/models"))["items"][0]["id"] == kept_model["id"]


def test_an_interrupted_delete_hides_the_record_and_a_retry_finishes_it(alice: Browser) -> None:
    project = new_project(alice)
    model = new_model(alice, project["id"])
    # the state a delete leaves if it fails after its first step
    catalog.ref("projects", project["id"]).update({"deleting": clock.now()})
    catalog.ref("models", model["id"]).update({"deleting": clock.now()})
    assert_problem(alice.request("GET", f"/projects/{project['id']}"), 404)
    assert_problem(alice.request("GET", f"/models/{model['id']}"), 404)
    assert ok(alice.request("GET", "/projects"))["items"] == []
    assert ok(alice.request("GET", "/models"))["items"] == []
    assert_problem(alice.request("POST", f"/models/{model['id']}/versions"), 404)
    assert_problem(alice.request("POST", "/datasets", json_body={"project_id": project["id"], "name": "x"}), 404)
    assert_problem(alice.request("PATCH", f"/projects/{project['id']}", json_body={"name": "y"}), 404)
    assert versions_in_db(model["id"]) == [] and records("datasets", alice.uid) == []

    assert alice.request("DELETE", f"/projects/{project['id']}").status_code == 204
    assert records("projects", alice.uid) == [] and records("models", alice.uid) == []


# --- account export and purge --------------------------------------------------------------------


def test_export_includes_the_users_catalog_records(alice: Browser, bob: Browser) -> None:
    project = new_project(alice)
    model = new_model(alice, project["id"])
    new_version(alice, model["id"])
    ds = new_dataset(alice, project["id"])
    job = new_job(alice, project["id"], model["id"], version=1)
    new_project(bob, "bob's")

    data = ok(alice.request("GET", "/account/export"))
    assert data["projects"] == [project]
    [exported] = data["models"]
    assert {k: exported[k] for k in ("id", "project_id", "name", "config_json", "latest_version", "framework")} == {
        "id": model["id"],
        "project_id": project["id"],
        "name": "mlp",
        "config_json": CONFIG,
        "latest_version": None,
        "framework": "tfjs",
    }
    [version] = exported["versions"]
    assert (version["version"], version["status"], version["model_id"], version["files"]) == (
        1,
        "pending",
        model["id"],
        {},
    )
    assert data["datasets"] == [ds]
    assert data["jobs"] == [job]
    assert alice.uid not in json.dumps([data[k] for k in ("projects", "models", "datasets", "jobs")])
    assert ok(bob.request("GET", "/account/export"))["projects"][0]["name"] == "bob's"
    assert ok(bob.request("GET", "/account/export"))["models"] == []


def test_purge_removes_the_catalog_records(alice: Browser, bob: Browser) -> None:
    project = new_project(alice)
    model = new_model(alice, project["id"])
    new_version(alice, model["id"])
    new_dataset(alice, project["id"])
    new_job(alice, project["id"], model["id"])
    theirs = new_model(bob, new_project(bob)["id"])
    users.update(alice.uid, deleted_at=clock.now() - timedelta(days=config.ACCOUNT_PURGE_AFTER_DAYS + 1))

    assert account.purge(clock.now()) == 1
    for collection in catalog.COLLECTIONS:
        assert records(collection, alice.uid) == []
    assert versions_in_db(model["id"]) == []
    assert [m["id"] for m in records("models", bob.uid)] == [theirs["id"]]
