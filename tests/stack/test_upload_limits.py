"""Uploads as a hostile PRO user would try them, through the gateway, the signed URLs, the bucket
events and the recorder: every kind at and just over its size limit, one upload URL used many times,
and content that is valid but cannot be stored (a huge metrics.json, a CSV header of thousands of
columns). Each is settled in one delivery: recorded, or deleted, audited and its record marked failed.
On both file stores."""

from __future__ import annotations

import json

import httpx
import pytest

from mllab.files import events, recorder
from mllab.platform import audit, clients, config
from mllab_dev.stack import Stack

from .backend_support import BACKENDS, is_s3, on_backend
from .conftest import function_log
from .limits_support import (
    artifact,
    generation_of,
    gone,
    metrics,
    metrics_of_size,
    never_recorded,
    ok,
    problem,
    signed_in,
    upload,
    wait,
)

LIMITS = config.LIMITS
MiB = config.MiB


@pytest.fixture(scope="module", params=BACKENDS)
def stack(request: pytest.FixtureRequest, stack: Stack, tmp_path_factory: pytest.TempPathFactory):
    yield from on_backend(request.param, stack, tmp_path_factory)


@pytest.fixture
def lab(stack: Stack, new_user):
    b = signed_in(stack, new_user(), pro=True)
    yield b
    b.client.close()


@pytest.fixture
def made(lab) -> dict:
    """A project with a model (version 1 allocated), a dataset and a training run."""
    project = ok(lab.request("POST", "/projects", json_body={"name": "p"}), 201)["id"]
    model = ok(lab.request("POST", "/models", json_body={"project_id": project, "name": "m"}), 201)["id"]
    ok(lab.request("POST", f"/models/{model}/versions"), 201)
    dataset = ok(lab.request("POST", "/datasets", json_body={"project_id": project, "name": "d"}), 201)["id"]
    job = ok(lab.request("POST", "/jobs", json_body={"project_id": project, "model_id": model}), 201)["id"]
    return {"project": project, "model": model, "dataset": dataset, "job": job}


def _sign(lab, kind: str, made: dict, size: int, **extra) -> httpx.Response:
    target = {
        "model": {"model_id": made["model"], "version": 1},
        "weights": {"model_id": made["model"], "version": 1},
        "dataset": {"dataset_id": made["dataset"], "filename": "data.csv"},
        "metrics": {"job_id": made["job"]},
    }[kind]
    return lab.request("POST", "/signed/upload", json_body={"kind": kind, "size": size, **target, **extra})


def _put(signed: dict, data: bytes) -> httpx.Response:
    """The PUT, and on S3 its report (what the completion route does for the object's owner)."""
    r = httpx.put(signed["url"], content=data, headers=signed["headers"], timeout=120)
    if config.settings().storage == "s3" and r.status_code == 200:
        from mllab.files import completion

        completion.complete(signed["object"].split("/")[1], signed["object"])
    return r


def _rejections(uid: str, name: str) -> list[dict]:
    return [e for e in audit.for_actor(uid) if e["action"] == "object.rejected" and e["target"] == name]


def _settled_newcomers(uid: str, name: str, first: int) -> dict[int, str]:
    """The generations of `name` after `first`, each with how it was settled: "refused" (audited) or
    "tombstone" (its overwrite's delete event came before its finalize); a recorded one fails the test."""
    settled = {int(e["details"]["generation"]): "refused" for e in _rejections(uid, name)}
    from google.cloud.firestore_v1.base_query import FieldFilter

    artifacts = clients.firestore().collection(recorder.ARTIFACTS)
    for snap in artifacts.where(filter=FieldFilter("object", "==", name)).stream():
        art = snap.to_dict()
        if int(art["generation"]) == first:
            continue
        assert art.get("tombstone"), f"generation {art['generation']} was recorded"
        settled.setdefault(int(art["generation"]), "tombstone")
    return settled


def _record_of(lab, kind: str, made: dict) -> dict:
    if kind in ("model", "weights"):
        return ok(lab.request("GET", f"/models/{made['model']}"))["versions"][0]
    if kind == "dataset":
        return ok(lab.request("GET", f"/datasets/{made['dataset']}"))
    return ok(lab.request("GET", f"/jobs/{made['job']}"))


def _content(kind: str, made: dict, size: int) -> bytes:
    if kind == "metrics":
        return metrics_of_size(made["model"], size)
    if kind == "dataset":
        body = b"x,label\n" + b"1,a\n" * ((size - 8) // 4)
        return body + b"\n" * (size - len(body))  # blank lines are no rows
    if kind == "model":
        return b'{"pad":"' + b"x" * (size - 10) + b'"}'
    return b"\x00" * size


KINDS = {
    "model": LIMITS.model_json_bytes,
    "weights": LIMITS.weights_bytes,
    "dataset": LIMITS.dataset_csv_bytes,
    "metrics": LIMITS.metrics_json_bytes,
}


@pytest.mark.parametrize("kind", list(KINDS))
def test_every_upload_kind_is_recorded_at_its_limit_and_refused_just_over(lab, made, kind: str, stack: Stack) -> None:
    limit = KINDS[kind]
    problem(_sign(lab, kind, made, limit + 1), 413)

    data = _content(kind, made, limit)
    assert len(data) == limit
    signed = ok(_sign(lab, kind, made, limit))
    if is_s3(stack):
        assert signed["headers"]["If-None-Match"] == "*"
    else:
        assert signed["headers"]["x-goog-if-generation-match"] == "0"
    assert _put(signed, data).status_code == 200
    recorded = wait(
        lambda: (g := generation_of(signed["object"])) and artifact(signed["object"], g), timeout=180
    )  # the recorder reads all of a 100 MiB CSV
    assert recorded and recorded["size"] == limit
    assert recorder.usage_of(lab.uid) == limit
    record = _record_of(lab, kind, made)
    assert record["status"] in ("pending", "ready", "recorded") and record["failure"] is None
    ok(lab.request("GET", "/account/export"))

    # just over, put straight into the bucket (a forged or replayed PUT): deleted, audited, marked failed
    over = _content(kind, made, limit + 1) if kind != "metrics" else metrics_of_size(made["model"], limit + 1)
    name = signed["object"].replace("/versions/1/", "/versions/2/")
    if kind in ("model", "weights"):
        ok(lab.request("POST", f"/models/{made['model']}/versions"), 201)
    elif kind == "dataset":
        made["dataset"] = ok(
            lab.request("POST", "/datasets", json_body={"project_id": made["project"], "name": "d2"}), 201
        )["id"]
        name = signed["object"].rsplit("/", 2)[0] + f"/{made['dataset']}/data.csv"
    else:
        made["job"] = ok(
            lab.request("POST", "/jobs", json_body={"project_id": made["project"], "model_id": made["model"]}), 201
        )["id"]
        name = signed["object"].rsplit("/", 2)[0] + f"/{made['job']}/metrics.json"
    generation = upload(
        name,
        over,
        {
            "model": "application/json",
            "weights": "application/octet-stream",
            "dataset": "text/csv",
            "metrics": "application/json",
        }[kind],
    )
    assert wait(lambda: _rejections(lab.uid, name)), "the oversized file was not refused"
    assert gone(name) and never_recorded(name, generation)
    assert recorder.usage_of(lab.uid) == limit
    # The refusal is audited before the record is marked failed (the recorder's last step): wait for the mark.
    failed = wait(lambda: (r := _refused_record(lab, kind, made)) and r["status"] == "failed" and r)
    assert failed and "at most" in failed["failure"]


def _refused_record(lab, kind: str, made: dict) -> dict:
    if kind in ("model", "weights"):
        version = ok(lab.request("GET", f"/models/{made['model']}"))["versions"][0]
        assert version["version"] == 2
        return version
    return _record_of(lab, kind, made)


def test_one_upload_url_makes_at_most_one_recorded_file(lab, made, stack: Stack) -> None:
    model_json = b'{"format":"layers-model"}'
    weights = b"\x01" * 64
    w = ok(_sign(lab, "weights", made, len(weights)))
    m = ok(_sign(lab, "model", made, len(model_json)))
    assert ok(lab.request("GET", "/me"))["usage"]["uploads_today"] == 0  # URLs are not uploads
    assert _put(w, weights).status_code == 200
    assert _put(m, model_json).status_code == 200
    ready = wait(lambda: (v := _record_of(lab, "model", made)) and v["status"] == "ready" and v)
    assert ready, "the version never became ready"
    first = generation_of(m["object"])
    if is_s3(stack):
        # S3, R2 and moto refuse a second create under the name (the signed If-None-Match: *)
        for i in range(5):
            assert _put(m, b'{"format":"evil-%d"}' % i).status_code == 412
        assert generation_of(m["object"]) == first and _record_of(lab, "model", made)["status"] == "ready"
        me = ok(lab.request("GET", "/me"))["usage"]
        assert (me["uploads_today"], me["storage_bytes"]) == (2, len(weights) + len(model_json))
        problem(_sign(lab, "model", made, 10), 409)
        return

    # GCS answers these with 412 (the signed if-generation-match: 0); fake-gcs-server takes them, so
    # the recorder's own refusal is what this sees: none of them is ever recorded on the version.
    for i in range(5):
        assert _put(m, b'{"format":"evil-%d"}' % i).status_code == 200
    # Each newcomer is settled once and never recorded: refused (deleted and audited) when its event
    # comes first, or, when the next PUT's delete event for it comes first (events arrive in any order,
    # several at once), left a tombstone that its late finalize event finds. This waits as long as the
    # other event checks here: on a loaded machine deliveries are retried.
    assert wait(lambda: len(_settled_newcomers(lab.uid, m["object"], first)) == 5, timeout=180), _settled_newcomers(
        lab.uid, m["object"], first
    )
    reasons = {e["details"]["reason"] for e in _rejections(lab.uid, m["object"])}
    assert _rejections(lab.uid, m["object"]) and reasons == {
        "it already has this file recorded; a recorded file is never replaced"
    }
    version = _record_of(lab, "model", made)
    doc = (
        clients.firestore()
        .collection("models")
        .document(made["model"])
        .collection("versions")
        .document("000000001")
        .get()
        .to_dict()
    )
    assert doc["files"].get("model.json", {}).get("generation", first) == first  # never a newcomer
    assert wait(lambda: gone(m["object"]))  # the last newcomer deleted as well
    assert version["status"] == "failed" and "overwritten" in version["failure"]
    me = ok(lab.request("GET", "/me"))["usage"]
    assert me["uploads_today"] == 2  # the two recorded files, not the six PUTs or the two URLs
    assert me["storage_bytes"] == len(weights)  # model.json's bytes went with the overwrite
    # signing again for the version's files is refused: its files were recorded once
    problem(_sign(lab, "model", made, 10), 409)
    log = function_log(stack, "on_object_finalized").read_text()
    assert "Traceback" not in log


def test_the_daily_count_is_of_recorded_uploads_and_the_recorder_enforces_it(lab, made) -> None:
    for _ in range(3):
        ok(_sign(lab, "metrics", made, 100))
    assert recorder.uploads_today(lab.uid) == 0
    day = recorder.day_ref(lab.uid)
    day.set({"uploads": LIMITS.uploads_per_day})
    problem(_sign(lab, "metrics", made, 100), 429)
    name = f"users/{lab.uid}/projects/{made['project']}/jobs/{made['job']}/metrics.json"
    upload(name, json.dumps(metrics(made["model"])).encode(), "application/json")  # a URL signed earlier
    assert wait(lambda: _rejections(lab.uid, name))
    # the refusal is audited before the run is marked failed (the recorder's last step): wait for the mark
    job = wait(lambda: (j := _record_of(lab, "metrics", made)) and j["status"] == "failed" and j)
    assert job and "uploads are used up" in job["failure"]
    assert recorder.uploads_today(lab.uid) == LIMITS.uploads_per_day


def test_a_metrics_file_too_large_to_store_is_settled_in_one_delivery(lab, made, stack: Stack) -> None:
    """The 1.57 MB metrics.json that once failed every delivery (a Firestore document is 1 MiB)."""
    data = metrics_of_size(made["model"], 1_570_000)
    problem(_sign(lab, "metrics", made, len(data)), 413)
    name = f"users/{lab.uid}/projects/{made['project']}/jobs/{made['job']}/metrics.json"
    generation = upload(name, data, "application/json")
    job = wait(lambda: (j := _record_of(lab, "metrics", made)) and j["status"] == "failed" and j)
    assert job, "the job was never marked failed"
    assert "at most" in job["failure"]
    assert gone(name) and never_recorded(name, generation)
    assert len(_rejections(lab.uid, name)) == 1  # one delivery settled it: no retry audited it again
    assert ok(lab.request("GET", "/jobs"))["items"][0]["status"] == "failed"
    ok(lab.request("GET", "/account/export"))


@pytest.mark.parametrize(
    "header,reason",
    [
        (",".join(f"c{i}" for i in range(LIMITS.csv_columns + 1)), "columns; at most"),
        (",".join("h" * 99 + f"{i:03d}" for i in range(700)), "header is"),  # 700 columns of 102 bytes
        ("x" * 200_000 + ",y", "not readable"),  # one field over the CSV reader's limit
    ],
)
def test_a_csv_header_too_large_to_store_is_refused_and_the_dataset_failed(lab, made, header: str, reason: str) -> None:
    name = f"users/{lab.uid}/projects/{made['project']}/datasets/{made['dataset']}/wide.csv"
    upload(name, (header + "\n" + ",".join("1" for _ in header.split(",")) + "\n").encode(), "text/csv")
    dataset = wait(lambda: (d := _record_of(lab, "dataset", made)) and d["status"] == "failed" and d)
    assert dataset and reason in dataset["failure"], dataset
    assert gone(name)
    assert len(_rejections(lab.uid, name)) == 1


def test_a_csv_header_at_its_limits_is_recorded_and_served(lab, made) -> None:
    columns = [f"{i:04d}" + "c" * 60 for i in range(LIMITS.csv_columns)]  # 1,000 columns, 64,000 bytes
    assert sum(len(c) for c in columns) <= LIMITS.csv_header_bytes
    name = f"users/{lab.uid}/projects/{made['project']}/datasets/{made['dataset']}/wide.csv"
    upload(name, (",".join(columns) + "\n" + ",".join("1" for _ in columns) + "\n").encode(), "text/csv")
    dataset = wait(lambda: (d := _record_of(lab, "dataset", made)) and d["status"] == "ready" and d)
    assert dataset and dataset["columns"] == columns and dataset["row_count"] == 1
    assert ok(lab.request("GET", "/datasets"))["items"][0]["columns"] == columns
    assert ok(lab.request("GET", "/account/export"))["datasets"][0]["columns"] == columns


def test_a_replayed_finalize_event_changes_nothing(lab, made) -> None:
    name = f"users/{lab.uid}/projects/{made['project']}/jobs/{made['job']}/metrics.json"
    data = json.dumps(metrics(made["model"])).encode()
    generation = upload(name, data, "application/json")
    assert wait(lambda: artifact(name, generation))
    again = events.ObjectEvent(
        "OBJECT_FINALIZE",
        config.settings().bucket,
        name,
        generation,
        "replay",
        size=len(data),
        content_type="application/json",
    )
    assert recorder.finalize(again) is False
    assert recorder.uploads_today(lab.uid) == 1 and recorder.usage_of(lab.uid) == len(data)


def test_a_dataset_file_name_at_its_longest_is_recorded_and_served_and_one_longer_is_refused(lab, made) -> None:
    longest = "d" * 100 + ".csv"  # the grammar's maximum: 100 characters and the extension
    problem(_sign(lab, "dataset", made, 20, filename="d" * 101 + ".csv"), 422)
    data = b"x,label\n1,a\n"
    signed = ok(_sign(lab, "dataset", made, len(data), filename=longest))
    assert signed["object"].endswith("/" + longest)
    assert _put(signed, data).status_code == 200
    dataset = wait(lambda: (d := _record_of(lab, "dataset", made)) and d["status"] == "ready" and d)
    assert dataset and dataset["object"] == signed["object"]
    assert ok(lab.request("GET", "/datasets"))["items"][0]["object"] == signed["object"]
    exported = ok(lab.request("GET", "/account/export"))
    assert [f["object"] for f in exported["files"]] == [signed["object"]]
