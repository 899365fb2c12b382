"""The bounds on what is stored, below the HTTP layer: JSON depth and size, the plans' published
limits, and the problem members a refusal carries."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from mllab.billing import schemas as billing_schemas
from mllab.files import schemas as file_schemas
from mllab.platform import config, jsonvalues
from mllab.platform.problems import Problem

LIMITS = config.LIMITS


def nested(depth: int, pad: int = 0) -> dict:
    value: dict = {"p": "x" * pad}
    for _ in range(depth - 1):
        value = {"a": value}
    return value


@pytest.mark.parametrize(
    "value,depth", [(1, 0), ("s", 0), ({}, 1), ([], 1), ({"a": [1, {"b": []}]}, 4), ([[[[]]]], 4), (nested(500), 500)]
)
def test_json_depth_counts_levels_without_recursing(value, depth: int) -> None:
    assert jsonvalues.json_depth(value) == depth


def test_json_depth_handles_a_value_deeper_than_the_recursion_limit() -> None:
    value: list = []
    for _ in range(50_000):
        value = [value]
    assert jsonvalues.json_depth(value) == 50_001


def _model(config_json: dict) -> file_schemas.CreateModel:
    return file_schemas.CreateModel(project_id="a" * 32, name="m", config_json=config_json)


def test_a_json_field_at_its_depth_and_size_is_accepted_and_just_over_is_refused() -> None:
    assert _model(nested(LIMITS.json_depth)).config_json == nested(LIMITS.json_depth)
    with pytest.raises(ValidationError, match=f"nested {LIMITS.json_depth + 1} levels deep"):
        _model(nested(LIMITS.json_depth + 1))
    frame = len(jsonvalues.compact_json(nested(1)).encode())
    at = nested(1, LIMITS.json_field_bytes - frame)
    assert len(jsonvalues.compact_json(at).encode()) == LIMITS.json_field_bytes
    assert _model(at).config_json == at
    with pytest.raises(ValidationError, match=f"at most {LIMITS.json_field_bytes} bytes"):
        _model(nested(1, LIMITS.json_field_bytes - frame + 1))


def test_size_is_counted_in_utf8_bytes_not_characters() -> None:
    frame = len(jsonvalues.compact_json(nested(1)).encode())
    n = (LIMITS.json_field_bytes - frame) // 2 + 1  # "é" is two bytes
    with pytest.raises(ValidationError):
        file_schemas.CreateDataset(project_id="a" * 32, name="d", schema_json={"p": "é" * n})


def test_every_stored_json_field_declares_its_bounds_in_the_schema() -> None:
    for model in (file_schemas.CreateModel, file_schemas.CreateDataset):
        props = model.model_json_schema()["properties"]
        bounded = [name for name, p in props.items() if p.get("type") == "object"]
        assert bounded and all(
            props[n]["x-max-bytes"] == LIMITS.json_field_bytes and props[n]["x-max-depth"] == LIMITS.json_depth
            for n in bounded
        )


def test_metrics_nested_too_deep_are_refused() -> None:
    doc = {
        "schema": 1,
        "model_id": "a" * 32,
        "version": None,
        "dataset_id": None,
        "task": "binary",
        "params": nested(LIMITS.json_depth + 1),
        "epochs": [{"epoch": 1}],
        "final": {},
        "backend": "cpu",
        "started_at": "x",
        "finished_at": "y",
    }
    with pytest.raises(ValidationError, match="params is nested"):
        file_schemas.Metrics.model_validate_json(json.dumps(doc))
    doc["params"] = nested(LIMITS.json_depth)
    assert file_schemas.Metrics.model_validate_json(json.dumps(doc)).params == nested(LIMITS.json_depth)


def test_the_plans_limits_come_from_the_plans_table() -> None:
    for plan in config.PLANS.values():
        limits = billing_schemas.PlanLimits.of(plan)
        assert (limits.projects, limits.models, limits.versions_per_model, limits.datasets, limits.jobs) == (
            plan.projects,
            plan.models,
            plan.versions_per_model,
            plan.datasets,
            plan.jobs,
        )
        assert limits.file_bytes["metrics"] == LIMITS.metrics_json_bytes
    assert all(
        getattr(config.PLANS["pro"], f) >= getattr(config.PLANS["free"], f)
        for f in ("projects", "models", "versions_per_model", "datasets", "jobs")
    )


def test_a_metrics_file_at_its_cap_fits_a_firestore_document_with_room() -> None:
    from mllab.files import recorder

    assert LIMITS.metrics_json_bytes < recorder.METRICS_STORED_BYTES < 1024 * 1024 - 64 * 1024


def test_a_problem_carries_its_extension_members_but_never_over_the_standard_ones() -> None:
    body = Problem(
        409,
        "Your plan allows 3 projects.",
        slug="limit-reached",
        extensions={"limit": 3, "resource": "projects", "status": 200},
    ).body("rid")
    assert body["limit"] == 3 and body["resource"] == "projects"
    assert body["status"] == 409 and body["type"].endswith(":limit-reached")


# Fields that are never stored, with what bounds them instead.
UNSTORED = {
    ("SignUpload", "size"): "compared with the kind's file cap (413 over it), never stored",
    ("PredictRequest", "instances"): "each feature checked against the model (422), never stored; 1 MiB a body",
}


def _bounded(o: dict) -> bool:
    t = o.get("type")
    if "enum" in o or "const" in o or t == "boolean":
        return True
    if t == "string":
        pattern = o.get("pattern", "")
        anchored = pattern.startswith("^") and pattern.endswith("$") and not any(c in pattern for c in "*+")
        return "maxLength" in o or anchored
    if t == "integer":
        return "maximum" in o
    if t == "object":
        return "x-max-bytes" in o and "x-max-depth" in o
    if t == "array":
        return "maxItems" in o and _bounded(o.get("items", {}))
    return False


def test_every_request_field_of_the_api_declares_a_bound() -> None:
    """Table-driven from the route table: a new field of any request body must say how large it may be
    (and the OpenAPI document then says it too)."""
    from mllab.api import routes

    unbounded = []
    for model in {r.request for r in routes.ROUTES if r.request is not None}:
        for field, prop in model.model_json_schema().get("properties", {}).items():
            options = [o for o in prop.get("anyOf", [prop]) if o.get("type") != "null"]
            if (model.__name__, field) not in UNSTORED and not all(_bounded(o) for o in options):
                unbounded.append(f"{model.__name__}.{field}: {prop}")
    assert unbounded == []
