"""Shared by the storage and promo tests: the files of a saved model, and a model with a pending
version allocated through the gateway, as the lab makes one before its upload."""

from __future__ import annotations

import httpx

from .conftest import Browser

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
