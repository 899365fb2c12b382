"""Saved models read from the bucket once per process and version, and kept.

A version's two files are read at the generations the recorder put on the version (a file is never
replaced, but reading the recorded generation makes that a property of the read, not a hope). The
cache holds at most CACHE_BYTES of weights.bin (a Model holds about twice that once numpy has its
float64 copy), least recently used out first."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from mllab.platform.problems import Problem

from .errors import ModelError
from .predictor import Model

CACHE_BYTES = 64 * 1024 * 1024

_lock = threading.Lock()
_cache: OrderedDict[tuple[str, int], tuple[Model, int]] = OrderedDict()  # (model id, version) -> (model, bytes)
_loading: dict[tuple[str, int], threading.Lock] = {}


def _read(name: str, entry: dict[str, Any]) -> bytes:
    """One recorded file through the file store seam (GCS or S3); gone or replaced is a ModelError."""
    from google.api_core.exceptions import NotFound

    from mllab.files import store as file_store

    try:
        return file_store.read(entry["object"], entry["generation"])
    except (NotFound, FileNotFoundError):  # the seam's "missing" on GCS and on S3
        raise ModelError(f"its {name} is no longer in the bucket") from None


def read_files(version: dict[str, Any]) -> tuple[bytes, bytes]:
    """(model.json, weights.bin) of a ready version document."""
    files = version.get("files") or {}
    if version.get("status") != "ready" or "model.json" not in files or "weights.bin" not in files:
        raise Problem(409, f"Version {version.get('version', '?')} is not ready: save it from the lab and wait for it.")
    return _read("model.json", files["model.json"]), _read("weights.bin", files["weights.bin"])


def load(version: dict[str, Any]) -> Model:
    """The version's model, ModelError when its files cannot be served (not cached)."""
    model_json, weights = read_files(version)
    return Model.from_files(model_json, weights)


def cached(model_id: str, n: int) -> bool:
    with _lock:
        return (model_id, n) in _cache


def get(model_id: str, n: int, version: Callable[[], dict[str, Any]]) -> Model:
    """The cached model of (model id, version n), read once per process (concurrent first requests
    wait for the one read); `version()` gives the version document, called on a miss only."""
    key = (model_id, n)
    with _lock:
        hit = _cache.get(key)
        if hit is not None:
            _cache.move_to_end(key)
            return hit[0]
        gate = _loading.setdefault(key, threading.Lock())
    with gate:
        with _lock:
            hit = _cache.get(key)
            if hit is not None:
                return hit[0]
        doc = version()
        try:
            model = load(doc)
        except ModelError as exc:
            raise Problem(409, f"This version cannot be served: {exc}.", slug="model-not-servable") from None
        size = int((doc.get("files") or {}).get("weights.bin", {}).get("size") or 0) * 2
        with _lock:
            _cache[key] = (model, size)
            _loading.pop(key, None)
            while sum(s for _, s in _cache.values()) > CACHE_BYTES and len(_cache) > 1:
                _cache.popitem(last=False)
        return model


def reset() -> None:
    with _lock:
        _cache.clear()
        _loading.clear()
