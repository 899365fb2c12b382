"""The shape of a Firestore query, as every module that queries declares it in its `QUERIES` tuple.

tests/unit/test_firestore_indexes.py checks that each declared shape needing a composite index has one
in infra/firestore/firestore.indexes.json, and that no module in mllab queries without declaring.
"""

from __future__ import annotations

from typing import NamedTuple


class Query(NamedTuple):
    """One query shape: equality filters (in order), then range filters or sort order on other fields."""

    collection: str
    filters: tuple[str, ...]
    order: tuple[tuple[str, str], ...] = ()
