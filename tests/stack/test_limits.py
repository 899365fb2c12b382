"""What one user may store in the catalog, through the gateway: every stored field is bounded in
size and depth (at its limit it is stored and served back by every read; just over it is refused with
a 4xx), each plan bounds how many records a user keeps (a burst of parallel creates included), one
page of a list stays under its byte budget, and the plans document publishes all of it."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from mllab.api import routes
from mllab.files import catalog
from mllab.platform import config, jsonvalues
from mllab_dev.stack import Stack

from .conftest import docs_where
from .limits_support import nested, ok, problem, signed_in

LIMITS = config.LIMITS
ID_REFS = {"project_id": "project", "model_id": "model", "dataset_id": "dataset"}


@pytest.fixture
def alice(stack: Stack, new_user):
    b = signed_in(stack, new_user())
    yield b
    b.client.close()


@pytest.fixture
def pro(stack: Stack, new_user):
    b = signed_in(stack, new_user(), pro=True)
    yield b
    b.client.close()


def _parents(b) -> dict[str, str]:
    project = ok(b.request("POST", "/projects", json_body={"name": "parent"}), 201)
    model = ok(b.request("POST", "/models", json_body={"project_id": project["id"], "name": "parent"}), 201)
    dataset = ok(b.request("POST", "/datasets", json_body={"project_id": project["id"], "name": "parent"}), 201)
    return {"project": project["id"], "model": model["id"], "dataset": dataset["id"]}


# --- every stored field, at and just over its limits (derived from the route table's schemas) ----


def _stored_writes() -> list[tuple[routes.Route, str]]:
    """(route, collection) of every catalog route whose body is stored: creates and renames."""
    out = []
    for r in routes.ROUTES:
        # a record's own creates and renames (a version's notes are a sub-resource: test_catalog bounds them)
        top_level = r.path.count("/") <= 2
        if r.function == "catalog" and r.request is not None and r.method in ("POST", "PATCH") and top_level:
            out.append((r, r.path.strip("/").split("/")[0]))
    return out


def _cases(field: str, schema: dict) -> list[tuple[str, Any, bool]]:
    """(label, value, must_be_stored) at the field's limits and just over them. A field with no
    bound the API declares fails here: a new stored field has to say how big it may get."""
    options = schema.get("anyOf", [schema])
    bounded = [o for o in options if o.get("type") != "null"]
    assert len(bounded) == 1, f"{field}: {schema}"
    s = bounded[0]
    if "x-max-bytes" in s:
        size, depth = s["x-max-bytes"], s["x-max-depth"]
        return [
            ("at max bytes and depth", nested(depth, size), True),
            ("one byte over", nested(depth, size + 1), False),
            ("one level too deep", nested(depth + 1, 200), False),
            ("300 levels deep", nested(300, 3000), False),
        ]
    if s.get("type") == "string" and "maxLength" in s:
        n = s["maxLength"]
        return [
            ("at max length", "é" * n, True),
            ("at max length of emoji", "🧪" * n, True),
            ("one character over", "x" * (n + 1), False),
        ]
    if s.get("type") == "string" and s.get("pattern") == "^[0-9a-f]{32}$":
        return [("someone else's or unknown id", "f" * 32, False), ("33 characters", "a" * 33, False)]
    if s.get("type") == "integer" and "maximum" in s:
        return [
            ("at maximum", s["maximum"], False),  # no such version: refused (404), never stored
            ("one over", s["maximum"] + 1, False),
            ("below minimum", s.get("minimum", 0) - 1, False),
        ]
    raise AssertionError(f"{field} is stored but declares no limit: {s}")


def _body(route: routes.Route, parents: dict[str, str]) -> dict[str, Any]:
    body: dict[str, Any] = {"name": "n"}
    for field in route.request.model_fields:
        if field in ID_REFS:
            body[field] = parents[ID_REFS[field]]
    return body


def _served_everywhere(b, collection: str, record: dict, field: str, value: Any) -> None:
    """GET one, GET the list (and with versions, for models) and the account export all answer the
    stored value."""
    got = ok(b.request("GET", f"/{collection}/{record['id']}"))
    assert got[field] == value
    lists = [f"/{collection}?limit=100"]
    if collection == "models":
        lists.append(f"/{collection}?limit=100&versions=true")
    for path in lists:
        listed = {i["id"]: i for i in ok(b.request("GET", path))["items"]}
        assert listed[record["id"]][field] == value
    exported = {i["id"]: i for i in ok(b.request("GET", "/account/export"))[collection]}
    assert exported[record["id"]][field] == value


@pytest.mark.parametrize("route,collection", _stored_writes(), ids=lambda v: getattr(v, "path", v))
def test_every_stored_field_is_served_back_at_its_limits_and_refused_just_over(
    alice, route: routes.Route, collection: str
) -> None:
    parents = _parents(alice)
    schema = route.request.model_json_schema()
    for field, field_schema in schema["properties"].items():
        for label, value, stored in _cases(field, field_schema):
            before = len(docs_where(collection, "uid", alice.uid))
            body = {**_body(route, parents), field: value}
            if route.method == "POST":
                r = alice.request("POST", f"/{collection}", json_body=body)
            else:
                target = ok(
                    alice.request("POST", f"/{collection}", json_body=_body(_create_route(collection), parents)), 201
                )
                before += 1
                r = alice.request("PATCH", f"/{collection}/{target['id']}", json_body=body)
            if stored:
                record = ok(r, 201 if route.method == "POST" else 200)
                _served_everywhere(alice, collection, record, field, value)
                ok(alice.request("DELETE", f"/{collection}/{record['id']}"), 204)
            else:
                problem(r)
                assert len(docs_where(collection, "uid", alice.uid)) == before, f"{field} {label} was stored"
            assert r.status_code < 500, f"{route.method} {route.path} {field} {label}: {r.status_code}"


def _create_route(collection: str) -> routes.Route:
    return next(r for r in routes.ROUTES if r.method == "POST" and r.path == f"/{collection}")


def test_a_config_nested_300_deep_is_refused_and_the_lists_and_export_keep_working(alice) -> None:
    parents = _parents(alice)
    r = alice.request(
        "POST",
        "/models",
        json_body={"project_id": parents["project"], "name": "deep", "config_json": nested(300, 3000)},
    )
    body = problem(r, 422)
    assert body["errors"][0]["field"] == "config_json" and "300 levels" in body["errors"][0]["message"]
    assert ok(alice.request("GET", "/models"))["items"][0]["name"] == "parent"
    assert ok(alice.request("GET", "/account/export"))["models"][0]["name"] == "parent"


def test_a_record_stored_too_deep_before_the_limit_reads_as_an_empty_object(alice) -> None:
    from mllab.platform import clients

    parents = _parents(alice)
    deep = jsonvalues.compact_json(nested(300, 3000))  # as the old code stored it
    clients.firestore().collection("models").document(parents["model"]).update({"config_json": deep})
    assert ok(alice.request("GET", f"/models/{parents['model']}"))["config_json"] == {}
    assert ok(alice.request("GET", "/models?versions=true"))["items"][0]["config_json"] == {}
    assert ok(alice.request("GET", "/account/export"))["models"][0]["config_json"] == {}


# --- counts per plan -----------------------------------------------------------------------------


def _burst(n: int, call) -> list:
    results: list = [None] * n

    def run(i: int) -> None:
        results[i] = call(i)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def test_a_burst_of_parallel_creates_never_passes_the_plans_limit(alice) -> None:
    limit = config.PLANS["free"].projects
    answers = _burst(limit + 8, lambda i: alice.request("POST", "/projects", json_body={"name": f"p{i}"}))
    assert sorted(r.status_code for r in answers) == [201] * limit + [409] * 8
    refused = problem(next(r for r in answers if r.status_code == 409), 409)
    assert refused["type"].endswith(":limit-reached") and refused["limit"] == limit
    assert refused["resource"] == "projects" and f"{limit} projects" in refused["detail"]
    assert len(docs_where("projects", "uid", alice.uid)) == limit

    # deleting one frees its place, exactly one
    victim = next(r.json()["id"] for r in answers if r.status_code == 201)
    ok(alice.request("DELETE", f"/projects/{victim}"), 204)
    assert alice.request("POST", "/projects", json_body={"name": "again"}).status_code == 201
    problem(alice.request("POST", "/projects", json_body={"name": "one too many"}), 409)


def test_parallel_deletes_of_one_record_give_its_place_back_once(alice) -> None:
    limit = config.PLANS["free"].projects
    ids = [ok(alice.request("POST", "/projects", json_body={"name": f"p{i}"}), 201)["id"] for i in range(limit)]
    answers = _burst(8, lambda i: alice.request("DELETE", f"/projects/{ids[0]}"))
    assert {r.status_code for r in answers} <= {204, 404} and 204 in {r.status_code for r in answers}
    # one place came back, not eight: the plan still holds at its limit
    assert alice.request("POST", "/projects", json_body={"name": "its place"}).status_code == 201
    problem(alice.request("POST", "/projects", json_body={"name": "one too many"}), 409)


@pytest.mark.parametrize("collection", ["models", "datasets", "jobs"])
def test_each_collection_is_counted_against_the_plan(alice, collection: str) -> None:
    parents = _parents(alice)
    limit = getattr(config.PLANS["free"], collection)
    have = len(docs_where(collection, "uid", alice.uid))
    body = {"project_id": parents["project"], "name": "n"}
    if collection == "jobs":
        body["model_id"] = parents["model"]
    answers = _burst(limit - have + 3, lambda i: alice.request("POST", f"/{collection}", json_body=body))
    assert sorted(r.status_code for r in answers) == [201] * (limit - have) + [409] * 3
    assert problem(next(r for r in answers if r.status_code == 409), 409)["limit"] == limit
    assert len(docs_where(collection, "uid", alice.uid)) == limit

    # deleting the project gives every place of its children back
    ok(alice.request("DELETE", f"/projects/{parents['project']}"), 204)
    project = ok(alice.request("POST", "/projects", json_body={"name": "fresh"}), 201)
    fresh = _parents(alice) if collection == "jobs" else {"project": project["id"]}
    body["project_id"] = fresh["project"]
    if collection == "jobs":
        body["model_id"] = fresh["model"]
    assert alice.request("POST", f"/{collection}", json_body=body).status_code == 201


def test_versions_per_model_are_bounded_even_in_a_burst(alice) -> None:
    parents = _parents(alice)
    limit = config.PLANS["free"].versions_per_model
    answers = _burst(limit + 5, lambda i: alice.request("POST", f"/models/{parents['model']}/versions"))
    assert sorted(r.status_code for r in answers) == [201] * limit + [409] * 5
    body = problem(next(r for r in answers if r.status_code == 409), 409)
    assert body["limit"] == limit and body["resource"] == "versions_per_model"
    assert len(ok(alice.request("GET", f"/models/{parents['model']}"))["versions"]) == limit


def test_records_made_before_the_counters_existed_are_counted(alice) -> None:
    from mllab.platform import clients

    limit = config.PLANS["free"].projects
    for i in range(limit - 1):
        ok(alice.request("POST", "/projects", json_body={"name": f"p{i}"}), 201)
    clients.firestore().collection(catalog.COUNTS).document(alice.uid).delete()  # as before this change
    assert alice.request("POST", "/projects", json_body={"name": "last"}).status_code == 201
    problem(alice.request("POST", "/projects", json_body={"name": "over"}), 409)


def test_pro_gets_the_pro_limits(pro) -> None:
    parents = _parents(pro)
    for _ in range(config.PLANS["free"].versions_per_model + 1):
        ok(pro.request("POST", f"/models/{parents['model']}/versions"), 201)


# --- list pages in bytes --------------------------------------------------------------------------


def test_a_page_of_the_largest_records_stays_under_its_byte_budget_and_paging_loses_nothing(alice) -> None:
    parents = _parents(alice)
    big = nested(LIMITS.json_depth, LIMITS.json_field_bytes)
    made = {
        ok(
            alice.request(
                "POST", "/models", json_body={"project_id": parents["project"], "name": f"m{i}", "config_json": big}
            ),
            201,
        )["id"]
        for i in range(20)
    }
    seen, cursor, pages = [], None, 0
    while True:
        params = {"limit": 100, "versions": "true", **({"cursor": cursor} if cursor else {})}
        r = alice.request("GET", "/models", params=params)
        page = ok(r)
        assert len(r.content) <= 1024 * 1024, len(r.content)
        seen += [i["id"] for i in page["items"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
        assert page["items"], "a page with a cursor but no items"
    assert pages >= 2
    assert sorted(seen) == sorted(made | {parents["model"]}) and len(seen) == len(set(seen))


# --- the limits are published -----------------------------------------------------------------------


def test_the_plans_document_publishes_every_limit(gateway) -> None:
    plans = {p["id"]: p["limits"] for p in ok(gateway.get("/billing/plans"))["plans"]}
    for plan_id, plan in config.PLANS.items():
        limits = plans[plan_id]
        for name in (
            "projects",
            "models",
            "versions_per_model",
            "datasets",
            "jobs",
            "storage_bytes",
            "uploads_per_day",
        ):
            assert limits[name] == getattr(plan, name), name
        assert (limits["json_field_bytes"], limits["json_depth"]) == (LIMITS.json_field_bytes, LIMITS.json_depth)
        assert limits["file_bytes"] == {
            "model": LIMITS.model_json_bytes,
            "weights": LIMITS.weights_bytes,
            "dataset": LIMITS.dataset_csv_bytes,
            "metrics": LIMITS.metrics_json_bytes,
        }
    assert plans["pro"]["models"] > plans["free"]["models"]
