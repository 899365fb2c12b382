"""The S3-compatible file store (mllab.files.s3) against moto's S3 server, as `make dev STORAGE=s3` runs it:
upload URLs make at most one object, what the store reports of an object, reads and deletes of one
generation, listing a prefix, and the bucket's CORS rules set through the S3 API; the completion route
and the sweep that report uploads to the recorder (an S3 store sends no events of its own)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import timedelta
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from mllab.files import completion, recorder, s3
from mllab.platform import config
from mllab_dev.stack import BUCKET, Stack

from .conftest import Browser, running_stack
from .limits_support import signed_in, wait
from .serving_support import golden_files, saved_version
from .storage_support import WEIGHTS, model_with_version, ok

pytestmark = pytest.mark.stack

BODY = b'{"format":"layers-model"}'


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running_stack(tmp_path_factory.mktemp("s3stack"), storage_backend="s3") as s:
        yield s


def put(signed, body: bytes = BODY, **headers: str) -> httpx.Response:
    return httpx.put(signed.url, content=body, headers={**signed.headers, **headers}, timeout=20)


def test_the_stack_selects_the_s3_store_and_uploads_go_to_moto(stack: Stack, unique: str) -> None:
    assert config.settings().storage == "s3"
    signed = s3.signed_upload_url(f"users/u-{unique}/x.json", "application/json", len(BODY))
    assert urlsplit(signed.url).netloc == urlsplit(stack.storage_url).netloc
    assert urlsplit(signed.url).path == f"/{BUCKET}/users/u-{unique}/x.json"


def test_an_upload_url_makes_one_object_and_its_replay_answers_412(stack: Stack, unique: str) -> None:
    name = f"users/u-{unique}/model.json"
    signed = s3.signed_upload_url(name, "application/json", len(BODY))
    assert signed.headers == {"Content-Type": "application/json", "If-None-Match": "*"}
    assert put(signed).status_code == 200
    replay = put(signed, b'{"format":"other"}   ')
    assert replay.status_code == 412, replay.text
    assert s3.read(name) == BODY


def test_the_store_reports_size_type_and_one_generation_for_head_and_list(stack: Stack, unique: str) -> None:
    name = f"users/u-{unique}/weights.bin"
    assert s3.stat(name) is None
    assert put(s3.signed_upload_url(name, "application/octet-stream", 10), b"0123456789").status_code == 200
    info = s3.stat(name)
    assert info is not None
    assert (info.size, info.content_type) == (10, "application/octet-stream")
    assert info.md5 == "eB5eJF1ptWaXm4bijSPyxw=="  # base64 MD5 of b"0123456789", as GCS's md5Hash
    listed = list(s3.list_prefix(f"users/u-{unique}/"))
    assert [(o.name, o.size, o.generation) for o in listed] == [(name, 10, info.generation)]
    assert s3.stat(name) == info


def test_a_read_or_delete_of_a_replaced_generation_leaves_the_object(stack: Stack, unique: str) -> None:
    name = f"users/u-{unique}/metrics.json"
    assert put(s3.signed_upload_url(name, "application/json", len(BODY))).status_code == 200
    info = s3.stat(name)
    assert info is not None
    with pytest.raises(FileNotFoundError):
        s3.read(name, generation=info.generation + 1)
    assert s3.delete(name, generation=info.generation + 1) is False
    assert s3.read(name, generation=info.generation) == BODY
    assert s3.delete(name, generation=info.generation) is True
    assert s3.stat(name) is None
    with pytest.raises(FileNotFoundError):
        s3.read(name)


def test_listing_a_prefix_names_only_objects_under_it(stack: Stack, unique: str) -> None:
    names = [f"users/a-{unique}/{i}.json" for i in range(3)]
    for name in [*names, f"users/b-{unique}/0.json"]:
        assert put(s3.signed_upload_url(name, "application/json", len(BODY))).status_code == 200
    assert [o.name for o in s3.list_prefix(f"users/a-{unique}/")] == names


def test_the_bucket_allows_the_lab_origin_the_signed_methods_and_the_pinned_headers(stack: Stack) -> None:
    cors = s3.client().get_bucket_cors(Bucket=BUCKET)["CORSRules"]
    assert [{k: v for k, v in rule.items() if k != "ID"} for rule in cors] == s3.bucket_cors(stack.gateway_url)[
        "CORSRules"
    ]
    preflight = httpx.options(
        f"{stack.storage_url}/{BUCKET}/users/nobody/new.json",
        headers={
            "Origin": stack.gateway_url,
            "Access-Control-Request-Method": "PUT",
            "Access-Control-Request-Headers": "content-type,if-none-match",
        },
    )
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == stack.gateway_url
    assert preflight.headers["access-control-allow-methods"] == "PUT, GET, HEAD"
    assert preflight.headers["access-control-allow-headers"] == "content-type, if-none-match"


def test_a_download_url_reads_exactly_its_object_for_ten_minutes(stack: Stack, unique: str) -> None:
    name = f"users/u-{unique}/data.csv"
    assert put(s3.signed_upload_url(name, "text/csv", 4), b"a,b\n").status_code == 200
    signed = s3.signed_download_url(name)
    query = parse_qs(urlsplit(signed.url).query)
    assert query["X-Amz-Expires"] == ["600"] and query["X-Amz-SignedHeaders"] == ["host"]
    got = httpx.get(signed.url, headers={"Origin": stack.gateway_url})
    assert (got.status_code, got.content) == (200, b"a,b\n")
    assert got.headers["access-control-allow-origin"] == stack.gateway_url


# --- completion and sweep: events without bucket notifications --------------------------------------


@pytest.fixture
def lab(stack: Stack, new_user) -> Browser:
    """A signed-in PRO user (an operator grant)."""
    return signed_in(stack, new_user(), pro=True)


def _signed_weights(lab: Browser) -> dict:
    _, model_id, n = model_with_version(lab)
    return ok(
        lab.request(
            "POST",
            "/signed/upload",
            json_body={"kind": "weights", "model_id": model_id, "version": n, "size": len(WEIGHTS)},
        )
    )


def test_the_sweep_records_an_upload_whose_completion_never_came(lab: Browser) -> None:
    signed = _signed_weights(lab)
    assert httpx.put(signed["url"], content=WEIGHTS, headers=signed["headers"], timeout=20).status_code == 200
    time.sleep(1.0)
    assert recorder.usage_of(lab.uid) == 0  # nothing reported it: the tab was closed
    assert signed["object"] not in completion.sweep()  # a minute's grace for its completion first
    assert signed["object"] in completion.sweep(min_age=timedelta(0))
    assert wait(lambda: recorder.usage_of(lab.uid) == len(WEIGHTS)), recorder.usage_of(lab.uid)
    assert signed["object"] not in completion.sweep(min_age=timedelta(0))  # recorded: not reported again


def test_a_completion_reported_twice_and_swept_counts_the_file_once(lab: Browser) -> None:
    signed = _signed_weights(lab)
    assert httpx.put(signed["url"], content=WEIGHTS, headers=signed["headers"], timeout=20).status_code == 200
    for _ in range(2):
        r = lab.request("POST", "/signed/complete", json_body={"object": signed["object"]})
        assert r.status_code == 202, r.text
    completion.sweep(min_age=timedelta(0))
    assert wait(lambda: recorder.usage_of(lab.uid) == len(WEIGHTS))
    time.sleep(1.0)  # the duplicates' deliveries
    assert recorder.usage_of(lab.uid) == len(WEIGHTS)
    assert recorder.uploads_today(lab.uid) == 1


def test_a_completion_for_another_users_missing_or_foreign_object_is_404_and_publishes_nothing(
    stack: Stack, lab: Browser, member
) -> None:
    signed = _signed_weights(lab)
    assert httpx.put(signed["url"], content=WEIGHTS, headers=signed["headers"], timeout=20).status_code == 200
    other = member()
    for browser, name in (
        (other, signed["object"]),  # another user's upload
        (lab, signed["object"].replace("weights.bin", "model.json")),  # not uploaded
        (lab, f"users/{lab.uid}/../{signed['object']}"),
        (lab, "users/" + lab.uid + "/notes/x.txt"),  # outside the grammar
    ):
        r = browser.request("POST", "/signed/complete", json_body={"object": name})
        assert r.status_code == 404, (name, r.text)
        assert r.headers["content-type"] == "application/problem+json"
    time.sleep(1.0)
    assert recorder.usage_of(lab.uid) == 0
    assert lab.request("POST", "/signed/complete", json_body={"object": "x" * 2000}).status_code == 422
    assert lab.request("POST", "/signed/complete", json_body={"object": signed["object"], "size": 1}).status_code == 422


# --- serving: a saved version's files read from the S3 store ------------------------------------------


def test_a_version_saved_to_the_s3_store_deploys_predicts_and_is_shared_from_it(stack: Stack, lab: Browser) -> None:
    model_json, weights, recorded = golden_files()
    model, n = saved_version(lab.uid, model_json, weights)
    dep = ok(lab.request("POST", "/deployments", json_body={"model_id": model["id"], "version": n}), 201)
    key = ok(lab.request("POST", "/api-keys", json_body={"name": "s3", "scopes": ["predict"]}), 201)["key"]
    r = httpx.post(
        f"{stack.gateway_url}/predict/{dep['id']}",
        json={"instances": recorded["rows"][:2]},
        headers={"Authorization": f"Bearer {key}"},
        timeout=20,
    )
    assert r.status_code == 200, r.text
    assert [p["label"] for p in r.json()["predictions"]] == [p["label"] for p in recorded["predictions"][:2]]
    ok(lab.request("PATCH", f"/deployments/{dep['id']}", json_body={"public": True}))
    view = ok(httpx.get(f"{stack.gateway_url}/public/deployments/{dep['id']}", timeout=20))
    for url, data in ((view["model_json_url"], model_json), (view["weights_url"], weights)):
        assert urlsplit(url).netloc == urlsplit(stack.storage_url).netloc  # signed by the S3 store
        assert httpx.get(url, timeout=20).content == data
