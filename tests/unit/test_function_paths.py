"""Paths Flask cannot route still reach the router (found by tests/stack/test_fuzz.py).

functions-framework mounts each function at Flask's `/<path:path>`, and no path with a newline in
it (`%0A`) matches that rule: Flask answered them with its own HTML 404, no problem+json, no
X-Request-Id. The router now takes them, so they are answered like any other path."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from mllab.api import routes


def _first_route(function: str) -> routes.Route:
    return routes.for_function(function)[0]


@pytest.mark.parametrize("name", [fn.name for fn in routes.http_functions()])
def test_a_path_with_a_newline_is_answered_as_a_problem(name: str, load_function: Callable[[str], Any]) -> None:
    client = load_function(name).test_client()
    route = _first_route(name)
    path = route.path.replace("{id}", "a%0Ab") if "{id}" in route.path else route.path + "%0A"
    r = client.open(path, method=route.method)
    assert r.content_type == "application/problem+json", r.data[:200]
    assert 400 <= r.status_code < 500
    assert r.headers.get("X-Request-Id")
    body = r.get_json()
    assert body["status"] == r.status_code and body["detail"]


def test_the_newline_reaches_the_handlers_route(load_function: Callable[[str], Any]) -> None:
    """Not a blanket 404: /projects/<id with a newline> is the GET /projects/{id} route, which first
    asks for a token (and then answers 404 for an id that is not one of yours)."""
    client = load_function("catalog").test_client()
    r = client.get("/projects/a%0Ab")
    assert r.status_code == 401 and r.content_type == "application/problem+json"
    assert r.headers["WWW-Authenticate"].startswith("Bearer")
