"""Composite indexes and TTL policies from infra/firestore/, as gcloud arguments and probe tests."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from deployment.files import INDEXES, TTL

Field = tuple[str, str]  # (field path, ASCENDING | DESCENDING)


def load_indexes(path: Path = INDEXES) -> list[dict[str, Any]]:
    return json.loads(path.read_text())["indexes"]


def load_ttl(path: Path = TTL) -> list[dict[str, str]]:
    return json.loads(path.read_text())["ttl"]


def fields_of(index: dict[str, Any]) -> tuple[Field, ...]:
    return tuple((f["fieldPath"], f["order"]) for f in index["fields"])


def field_configs(index: dict[str, Any]) -> list[str]:
    """`--field-config` values for `gcloud firestore indexes composite create`."""
    return [f"--field-config=field-path={path},order={order.lower()}" for path, order in fields_of(index)]


def _normal(fields: tuple[Field, ...]) -> tuple[Field, ...]:
    # Firestore lists an index with the implicit trailing __name__ (in the last field's direction):
    # an index written without it and one listed with it are the same index.
    if len(fields) > 1 and fields[-1][0] == "__name__" and fields[-1][1] == fields[-2][1]:
        return fields[:-1]
    return fields


def listed(output: str) -> set[tuple[str, str, tuple[Field, ...]]]:
    """(collection group, query scope, fields) of each index in `gcloud ... composite list --format=json`."""
    found = set()
    for index in json.loads(output or "[]"):
        group = index.get("name", "").split("/collectionGroups/")[-1].split("/")[0]
        fields = tuple((f["fieldPath"], f.get("order", "")) for f in index.get("fields", []))
        found.add((group, index.get("queryScope", "COLLECTION"), _normal(fields)))
    return found


def key(index: dict[str, Any]) -> tuple[str, str, tuple[Field, ...]]:
    return index["collectionGroup"], index.get("queryScope", "COLLECTION"), _normal(fields_of(index))


def in_listing(index: dict[str, Any]) -> Callable[[str], bool]:
    """The probe test for one index: does the list command's output hold it?"""
    wanted = key(index)

    def holds(output: str) -> bool:
        return wanted in listed(output)

    return holds


def listed_example(index: dict[str, Any], project: str) -> str:
    """What the list command prints when this index exists (with the implicit __name__ Firestore adds)."""
    fields = [{"fieldPath": p, "order": o} for p, o in fields_of(index)]
    if fields[-1]["fieldPath"] != "__name__":
        fields.append({"fieldPath": "__name__", "order": fields[-1]["order"]})
    name = f"projects/{project}/databases/(default)/collectionGroups/{index['collectionGroup']}/indexes/CICAgOjXh4EK"
    return json.dumps(
        [{"fields": fields, "name": name, "queryScope": index.get("queryScope", "COLLECTION"), "state": "READY"}]
    )


def describe(index: dict[str, Any]) -> str:
    short = {"ASCENDING": "asc", "DESCENDING": "desc"}
    return f"{index['collectionGroup']} ({', '.join(f'{p} {short.get(o, o)}' for p, o in fields_of(index))})"
