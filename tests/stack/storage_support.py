"""Shared by the storage and promo tests: the files of a saved model, and a model with a pending
version allocated through the gateway, as the lab makes one before its upload."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from typing import TypeVar

import httpx

from mllab.files import events, objects
from mllab_dev.stack import BUCKET

from .conftest import Browser

T = TypeVar("T")

WEIGHTS = bytes(range(256)) * 40  # 10,240 bytes
MODEL_JSON = b'{"format":"layers-model","modelTopology":{},"weightsManifest":[{"paths":["weights.bin"]}]}'


def ok(r: httpx.Response, status: int = 200) -> dict:
    assert r.status_code == status, r.text
    return r.json() if r.content else {}


def model_with_version(lab: Browser) -> tuple[str, str, int]:
    """(project id, model id, version number) of a new project and model with version 1 pending."""
    project = ok(lab.request("POST", "/projects", json_body={"name": "XOR"}), 201)
    model = ok(
        lab.request(
            "POST",
            "/models",
            json_body={"project_id": project["id"], "name": "xor-net", "config_json": {"layers": [{"units": 4}]}},
        ),
        201,
    )
    version = ok(lab.request("POST", f"/models/{model['id']}/versions"), 201)
    assert version["version"] == 1 and version["status"] == "pending"
    return project["id"], model["id"], version["version"]


def weights_event(lab: Browser, project_id: str, model_id: str, version: int, generation: int, size: int):
    """The bucket's OBJECT_FINALIZE for one generation of a version's weights.bin (each call its own
    message id: a redelivery reuses one event)."""
    name = str(objects.model_file(lab.uid, project_id, model_id, version, "weights"))
    return events.ObjectEvent(
        "OBJECT_FINALIZE",
        BUCKET,
        name,
        generation,
        uuid.uuid4().hex,
        size=size,
        content_type="application/octet-stream",
    )


def at_once(calls: list[Callable[[], T]]) -> list[T]:
    """Run the calls on their own threads, released together: deliveries racing one another."""
    start = threading.Barrier(len(calls))
    results: dict[int, T] = {}
    errors: list[BaseException] = []

    def run(i: int) -> None:
        start.wait()
        try:
            results[i] = calls[i]()
        except BaseException as exc:  # noqa: BLE001 - re-raised below, in the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return [results[i] for i in range(len(calls))]
