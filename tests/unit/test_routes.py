"""The route table is the single source of truth: it must agree with the functions on disk, with
each function's router, and with the pinned dependencies (docs/architecture.md, the route table)."""

from __future__ import annotations

import re
import tomllib
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest

from mllab.api import http, routes
from tests.pins import exact_pins
from tests.unit.helpers import FUNCTIONS_DIR, REPO

HTTP_FUNCTIONS = [fn.name for fn in routes.http_functions()]
ALL_FUNCTIONS = [fn.name for fn in routes.FUNCTIONS]


def _project_pins() -> dict[str, str]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    # the s3 extra: the S3 store's client, in the functions that use the store when a deployment selects it
    return exact_pins([*project["dependencies"], *project["optional-dependencies"]["s3"]])


# --- table and layout ----------------------------------------------------------------------------


def test_the_table_is_not_empty() -> None:
    assert routes.ROUTES and routes.FUNCTIONS and HTTP_FUNCTIONS


@pytest.mark.parametrize("route", routes.ROUTES, ids=lambda r: f"{r.method} {r.path}")
def test_every_route_names_a_function_directory(route: routes.Route) -> None:
    directory = FUNCTIONS_DIR / route.function
    assert (directory / "main.py").is_file()
    assert (directory / "requirements.txt").is_file()
    assert routes.function(route.function).trigger is routes.Trigger.HTTP


@pytest.mark.parametrize("name", ALL_FUNCTIONS)
def test_every_function_has_a_directory(name: str) -> None:
    assert (FUNCTIONS_DIR / name / "main.py").is_file()
    assert (FUNCTIONS_DIR / name / "requirements.txt").is_file()


def test_every_function_directory_is_in_the_table() -> None:
    on_disk = {p.parent.name for p in FUNCTIONS_DIR.glob("*/main.py")}
    assert on_disk == set(ALL_FUNCTIONS)


def test_function_names_are_unique() -> None:
    assert [n for n, c in Counter(ALL_FUNCTIONS).items() if c > 1] == []


def test_no_duplicate_method_and_path() -> None:
    pairs = Counter((r.method, r.path) for r in routes.ROUTES)
    assert [p for p, c in pairs.items() if c > 1] == []


def test_no_two_templates_answer_the_same_request() -> None:
    """Two rows with the same method whose templates match one concrete path would be ambiguous."""
    for route in routes.ROUTES:
        concrete = re.sub(r"\{[a-z_]+\}", "x1", route.path)
        same = [r for r, _ in routes.match_path(concrete) if r.method == route.method]
        assert same == [route], (route.method, route.path)


@pytest.mark.parametrize("route", routes.ROUTES, ids=lambda r: f"{r.method} {r.path}")
def test_route_rows_are_well_formed(route: routes.Route) -> None:
    assert route.method in {"GET", "POST", "PUT", "PATCH", "DELETE"}
    assert route.path.startswith("/")
    assert route.summary
    assert isinstance(route.auth, routes.Auth)
    if route.method == "GET":
        assert route.request is None


PUBSUB_FUNCTIONS = [fn.name for fn in routes.FUNCTIONS if fn.trigger is routes.Trigger.PUBSUB]


@pytest.mark.parametrize("name", PUBSUB_FUNCTIONS)
def test_pubsub_functions_name_their_topic_setting_and_own_no_routes(name: str) -> None:
    from mllab.platform import config

    fn = routes.function(name)
    assert fn.topic in config.field_names()
    assert routes.for_function(name) == ()


def test_function_lookup() -> None:
    assert routes.function("jwks").name == "jwks"
    with pytest.raises(KeyError):
        routes.function("no-such-function")


# --- templates -----------------------------------------------------------------------------------


def test_templates_capture_parameters() -> None:
    route = routes.Route("GET", "/models/{id}/versions", "catalog", "versions")
    assert route.match("/models/abc/versions") == {"id": "abc"}
    two = routes.Route("GET", "/models/{model_id}/versions/{version_id}", "catalog", "one version")
    assert two.match("/models/m1/versions/v-2") == {"model_id": "m1", "version_id": "v-2"}


@pytest.mark.parametrize(
    "path",
    [
        "/models/a/b/versions",
        "/models//versions",
        "/models/abc/versions/",
        "/models/abc/versionsX",
        "/models/abc",
        "/x/models/abc/versions",
        "/models/abc/versions/extra",
    ],
)
def test_templates_do_not_match_across_slashes_or_partially(path: str) -> None:
    route = routes.Route("GET", "/models/{id}/versions", "catalog", "versions")
    assert route.match(path) is None


def test_template_literals_are_escaped() -> None:
    pattern = routes.compile_template("/.well-known/jwks.json")
    assert pattern.fullmatch("/.well-known/jwks.json")
    assert pattern.fullmatch("/Xwell-known/jwksXjson") is None


def test_match_path_returns_every_method_of_a_path() -> None:
    table = (
        routes.Route("GET", "/things/{id}", "f", "get"),
        routes.Route("DELETE", "/things/{id}", "f", "delete"),
        routes.Route("GET", "/things", "f", "list"),
    )
    found = routes.match_path("/things/7", table)
    assert sorted(r.method for r, _ in found) == ["DELETE", "GET"]
    assert all(params == {"id": "7"} for _, params in found)
    assert routes.match_path("/nothing", table) == []


# --- functions load and bind every route ---------------------------------------------------------


@pytest.mark.parametrize("name", HTTP_FUNCTIONS)
def test_http_function_loads_and_binds_every_route(name: str, load_function: Callable[[str], Any]) -> None:
    app = load_function(name)
    router = app.config["mllab_module"].router
    assert isinstance(router, http.Router)
    assert router.function == name
    assert router.unbound() == []
    assert {(r.method, r.path) for r in router.routes} == {
        (r.method, r.path) for r in routes.ROUTES if r.function == name
    }


@pytest.mark.parametrize("name", PUBSUB_FUNCTIONS)
def test_event_function_loads(name: str, load_function: Callable[[str], Any]) -> None:
    app = load_function(name)
    # A CloudEvent function answers POST only.
    assert app.test_client().get("/").status_code == 405


# --- pinned requirements -------------------------------------------------------------------------


def test_project_dependencies_are_exact_pins() -> None:
    assert _project_pins()


@pytest.mark.parametrize("name", ALL_FUNCTIONS)
def test_function_requirements_pin_the_project_versions(name: str) -> None:
    lines = (FUNCTIONS_DIR / name / "requirements.txt").read_text().splitlines()
    pins = exact_pins(lines)
    assert "functions-framework" in pins
    project = _project_pins()
    for package, version in pins.items():
        assert package in project, f"{name} requires {package}, which pyproject.toml does not pin"
        assert version == project[package], f"{name}: {package}=={version}, pyproject has {project[package]}"


def test_pin_parser_rejects_loose_requirements() -> None:
    for loose in ("pydantic>=2", "pydantic", "pydantic==2.*", "pydantic~=2.14", "-e ."):
        with pytest.raises(AssertionError):
            exact_pins([loose])
    assert exact_pins(["# comment", "", "PyJWT==2.15.1  # why"]) == {"pyjwt": "2.15.1"}
    # one pin per Python: the functions' 3.12 runtime sees its own
    marked = ["numpy==2.5.5; python_version >= '3.12'", "numpy==2.4.6; python_version < '3.12'"]
    assert exact_pins(marked) == {"numpy": "2.5.5"}
