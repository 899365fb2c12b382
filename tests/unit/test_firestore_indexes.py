"""Firestore as infra/firestore/ deploys it. The emulator enforces no composite index, so these checks
stand in for production: every query the code makes is declared (`QUERIES`), every declared query that
needs a composite index has one, no index is dead, TTL policies name real collections, the rules deny
every client, and the rules release is idempotent."""

from __future__ import annotations

import ast
import importlib
import json
import re
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from mllab.platform.queries import Query
from tests.unit.helpers import REPO

sys.path.insert(0, str(REPO / "infra"))

from deployment import indexes  # noqa: E402

LIBRARY = REPO / "shared" / "mllab"
FIRESTORE = REPO / "infra" / "firestore"
QUERY_METHODS = {"where", "order_by", "collection_group"}
Index = dict[str, Any]


def _load_rules_module() -> Any:
    spec = importlib.util.spec_from_file_location("firestore_rules", FIRESTORE / "rules.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


rules = _load_rules_module()


def _dotted(path: Path) -> str:
    """shared/mllab/identity/users.py -> identity.users (the module's path inside mllab)."""
    return ".".join(path.relative_to(LIBRARY).with_suffix("").parts)


def _modules() -> dict[str, ast.Module]:
    return {_dotted(p): ast.parse(p.read_text()) for p in sorted(LIBRARY.rglob("*.py")) if p.stem != "__init__"}


def _query_calls(tree: ast.AST) -> list[ast.Call]:
    """Calls that build a Firestore query: .where(...), .order_by(...), .collection_group(...), FieldFilter(...)."""
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
        if name in QUERY_METHODS or name == "FieldFilter":
            found.append(node)
    return found


def _declares_queries(tree: ast.Module) -> bool:
    for node in tree.body:
        targets = (
            node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, ast.AnnAssign) else []
        )
        if any(isinstance(t, ast.Name) and t.id == "QUERIES" for t in targets):
            return True
    return False


def _literal_fields(tree: ast.AST) -> set[str]:
    """Field names written as literals in query calls: FieldFilter("f", ...), .where("f", ...), .order_by("f")."""
    fields = set()
    for call in _query_calls(tree):
        name = call.func.attr if isinstance(call.func, ast.Attribute) else getattr(call.func, "id", "")
        if name == "collection_group":
            continue
        if call.args and isinstance(call.args[0], ast.Constant) and isinstance(call.args[0].value, str):
            fields.add(call.args[0].value)
    return fields


def declared() -> dict[str, tuple[Query, ...]]:
    """module -> its QUERIES, for every mllab module that declares some."""
    found = {}
    for name, tree in _modules().items():
        if _declares_queries(tree):
            found[name] = tuple(importlib.import_module(f"mllab.{name}").QUERIES)
    return found


def load_index_file() -> list[Index]:
    return indexes.load_indexes(FIRESTORE / "firestore.indexes.json")


def needs_composite(query: Query) -> bool:
    """Firestore serves single-field queries and equality-only queries (merging single-field indexes)
    without a composite index; a sort or range on one field with any other field needs one."""
    fields = set(query.filters) | {f for f, _ in query.order if f != "__name__"}
    return bool(query.order) and len(fields) >= 2


def covers(index: Index, query: Query) -> bool:
    if index["collectionGroup"] != query.collection or index.get("queryScope", "COLLECTION") != "COLLECTION":
        return False
    fields = [(f["fieldPath"], f["order"]) for f in index["fields"]]
    equal, rest = fields[: len(query.filters)], fields[len(query.filters) :]
    if {path for path, _ in equal} != set(query.filters):
        return False
    wanted = list(query.order)
    if len(rest) == len(wanted) + 1 and rest[-1][0] == "__name__" and rest[-1][1] == rest[-2][1]:
        rest = rest[:-1]  # the implicit trailing __name__, written out
    return rest == wanted


# --- every query is declared ---------------------------------------------------------------------


def test_every_module_that_queries_declares_its_queries() -> None:
    undeclared = [name for name, tree in _modules().items() if _query_calls(tree) and not _declares_queries(tree)]
    assert not undeclared, f"add a QUERIES tuple (mllab.platform.queries.Query) to: {undeclared}"


def test_the_check_catches_a_new_query_without_a_declaration() -> None:
    source = (
        "def newest(db):\n    from google.cloud.firestore_v1.base_query import FieldFilter\n"
        "    return db.collection('things').where(filter=FieldFilter('uid', '==', 1)).order_by('at')\n"
    )
    tree = ast.parse(source)
    assert _query_calls(tree) and not _declares_queries(tree)
    assert _literal_fields(tree) == {"uid", "at"}
    assert _declares_queries(ast.parse("QUERIES: tuple = ()\n" + source))


def test_literal_query_fields_are_declared_by_their_module() -> None:
    queries = declared()
    for name, tree in _modules().items():
        fields = {f for q in queries.get(name, ()) for f in (*q.filters, *(o for o, _ in q.order))}
        missing = _literal_fields(tree) - fields
        assert not missing, f"mllab.{name} queries {sorted(missing)} without declaring it in QUERIES"


def test_declarations_name_collections_the_code_uses() -> None:
    strings = {
        node.value
        for tree in _modules().values()
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str)
    }
    for name, queries in declared().items():
        for query in queries:
            assert query.collection in strings, (name, query)
            assert all(direction in ("ASCENDING", "DESCENDING") for _, direction in query.order), (name, query)


# --- every declared query is covered -------------------------------------------------------------


def test_every_declared_query_that_needs_a_composite_index_has_one() -> None:
    index_file = load_index_file()
    uncovered = [
        (module, q)
        for module, queries in declared().items()
        for q in queries
        if needs_composite(q) and not any(covers(i, q) for i in index_file)
    ]
    assert not uncovered, f"add to infra/firestore/firestore.indexes.json: {uncovered}"


def test_the_coverage_check_can_fail() -> None:
    query = Query("models", ("uid", "project_id"), (("created_at", "DESCENDING"), ("__name__", "DESCENDING")))
    assert needs_composite(query) and any(covers(i, query) for i in load_index_file())
    assert not any(covers(i, Query("models", ("uid",), (("name", "ASCENDING"),))) for i in load_index_file())
    assert not any(covers(i, query._replace(order=(("created_at", "ASCENDING"),))) for i in load_index_file())
    assert not needs_composite(Query("users", ("email",))) and not needs_composite(Query("a", ("x", "y")))
    assert not needs_composite(Query("users", (), (("deleted_at", "ASCENDING"),)))


def test_no_index_is_dead() -> None:
    queries = [q for qs in declared().values() for q in qs]
    dead = [indexes.describe(i) for i in load_index_file() if not any(covers(i, q) for q in queries)]
    assert not dead, f"no declared query uses: {dead}"


def test_the_index_file_is_in_firebase_format() -> None:
    document = json.loads((FIRESTORE / "firestore.indexes.json").read_text())
    assert set(document) == {"indexes", "fieldOverrides"}
    for index in document["indexes"]:
        assert set(index) == {"collectionGroup", "queryScope", "fields"} and len(index["fields"]) >= 2
        assert all(
            set(f) == {"fieldPath", "order"} and f["order"] in ("ASCENDING", "DESCENDING") for f in index["fields"]
        )


def test_the_plan_probe_recognises_an_existing_index() -> None:
    first, second = load_index_file()[:2]
    listed = indexes.listed_example(first, "p")
    assert indexes.key(first) in indexes.listed(listed) and indexes.key(second) not in indexes.listed(listed)
    billing = next(i for i in load_index_file() if i["collectionGroup"] == "entitlements")
    # Firestore lists it with the implicit trailing __name__; it is still the same index
    assert json.loads(indexes.listed_example(billing, "p"))[0]["fields"][-1]["fieldPath"] == "__name__"
    assert indexes.key(billing) in indexes.listed(indexes.listed_example(billing, "p"))


# --- TTL -----------------------------------------------------------------------------------------


def test_ttl_policies_name_collections_whose_documents_expire() -> None:
    sources = {_dotted(p): p.read_text() for p in LIBRARY.rglob("*.py")}
    ttl = json.loads((FIRESTORE / "ttl.json").read_text())
    for entry in [*ttl["ttl"], *ttl["not_ttl"]]:
        assert [m for m, text in sources.items() if f'"{entry["collectionGroup"]}"' in text], entry
        writer = sources[entry["writer"].removeprefix("mllab.")]
        assert f'"{entry["field"]}": ' in writer, f"{entry['writer']} never writes {entry['field']}"
        assert entry["why"]
    ttl_groups = {e["collectionGroup"] for e in ttl["ttl"]}
    kept = {e["collectionGroup"] for e in ttl["not_ttl"]}
    assert "promo_codes" in kept and not ttl_groups & kept  # an expired code is kept, never cleaned up
    assert {"oauth_tx", "sessions", "email_tokens", "rate_limits"} <= ttl_groups


# --- rules ---------------------------------------------------------------------------------------


def test_the_rules_deny_every_client() -> None:
    text = (FIRESTORE / "firestore.rules").read_text()
    code = "\n".join(line for line in text.splitlines() if not line.strip().startswith("//"))
    assert re.findall(r"\ballow\b[^;]*;", code) == ["allow read, write: if false;"]
    assert "match /{document=**}" in code and "rules_version = '2'" in code


class FakeRulesApi:
    """The Firebase Rules API as far as rules.release uses it."""

    def __init__(self, released: str | None) -> None:
        self.calls: list[tuple[str, str, Any]] = []
        self.released = released

    def __call__(self, method: str, url: str, body: dict[str, Any] | None) -> tuple[int, dict[str, Any]]:
        self.calls.append((method, url, body))
        if method == "GET" and url.endswith("/releases/cloud.firestore"):
            if self.released is None:
                return 404, {"error": {"message": "not found"}}
            return 200, {"name": "projects/p/releases/cloud.firestore", "rulesetName": "projects/p/rulesets/old"}
        if method == "GET":
            return 200, {"source": {"files": [{"name": "firestore.rules", "content": self.released}]}}
        if method == "POST" and url.endswith("/rulesets"):
            return 200, {"name": "projects/p/rulesets/new"}
        return 200, {}


def test_rules_are_created_on_an_empty_project() -> None:
    api = FakeRulesApi(released=None)
    assert rules.release("p", "deny", api) == "created"
    methods = [(m, u.rsplit("/v1/", 1)[1]) for m, u, _ in api.calls]
    assert methods == [
        ("GET", "projects/p/releases/cloud.firestore"),
        ("POST", "projects/p/rulesets"),
        ("POST", "projects/p/releases"),
    ]
    assert api.calls[1][2] == {"source": {"files": [{"name": "firestore.rules", "content": "deny"}]}}
    assert api.calls[2][2] == {"name": "projects/p/releases/cloud.firestore", "rulesetName": "projects/p/rulesets/new"}


def test_unchanged_rules_change_nothing_and_changed_rules_are_released() -> None:
    same = FakeRulesApi(released="deny")
    assert rules.release("p", "deny", same) == "unchanged"
    assert [m for m, _, _ in same.calls] == ["GET", "GET"]
    changed = FakeRulesApi(released="allow")
    assert rules.release("p", "deny", changed) == "updated"
    method, url, body = changed.calls[-1]
    assert method == "PATCH" and url.endswith("/projects/p/releases/cloud.firestore")
    assert body == {
        "release": {"name": "projects/p/releases/cloud.firestore", "rulesetName": "projects/p/rulesets/new"}
    }


def test_a_refused_call_stops_with_the_apis_message() -> None:
    def forbidden(method: str, url: str, body: Any) -> tuple[int, dict[str, Any]]:
        return 403, {"error": {"message": "The caller does not have permission"}}

    with pytest.raises(SystemExit, match="403 The caller does not have permission"):
        rules.release("p", "deny", forbidden)


@pytest.fixture
def rules_server() -> Iterator[tuple[str, list[Any]]]:
    seen: list[Any] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            seen.append(self.headers)
            body = json.dumps({"error": {"message": "not found"}}).encode()
            self.send_response(404)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", seen
    server.shutdown()
    server.server_close()


def test_the_http_client_sends_the_token_and_quota_project(rules_server: tuple[str, list[Any]]) -> None:
    url, seen = rules_server
    status, body = rules.http_fetch("real-proj-1", "ya29.test-token")("GET", f"{url}/v1/x", None)
    assert (status, body) == (404, {"error": {"message": "not found"}})
    assert seen[0].get("Authorization") == "Bearer ya29.test-token"
    assert seen[0].get("x-goog-user-project") == "real-proj-1"
