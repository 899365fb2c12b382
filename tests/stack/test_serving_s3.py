"""Serving on the S3-compatible store (moto's S3 server, as `make dev STORAGE=s3` runs it): a saved
model is read through the file store seam at its recorded generation and predicts as TF.js did, and a
recorded file that the bucket no longer holds at that generation is a reason the version cannot be
served (a ModelError, which the predict and deploy paths answer 409), not an uncaught error."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from mllab.files import s3
from mllab.serving import store
from mllab.serving.errors import ModelError
from mllab_dev.stack import BUCKET, Stack

from .conftest import running_stack
from .serving_support import golden_files

pytestmark = pytest.mark.stack


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running_stack(tmp_path_factory.mktemp("s3serving"), storage_backend="s3") as s:
        yield s


def ready_version(unique: str) -> dict:
    """A ready version document whose two files are in the S3 bucket, as the recorder records them."""
    model_json, weights, _ = golden_files()
    files = {}
    for name, data in (("model.json", model_json), ("weights.bin", weights)):
        key = f"users/u-{unique}/projects/p/models/m/versions/1/{name}"
        s3.client().put_object(Bucket=BUCKET, Key=key, Body=data)
        info = s3.stat(key)
        assert info is not None
        files[name] = {"object": key, "generation": info.generation, "size": info.size}
    return {"version": 1, "status": "ready", "files": files}


def test_a_saved_model_is_read_from_the_s3_store_and_predicts_as_tfjs_did(stack: Stack, unique: str) -> None:
    _, _, recorded = golden_files()
    model = store.load(ready_version(unique))
    for mine, theirs in zip(model.predict(recorded["rows"]), recorded["predictions"], strict=True):
        assert mine["label"] == theirs["label"]


def test_a_recorded_file_gone_from_the_s3_store_cannot_be_served(stack: Stack, unique: str) -> None:
    version = ready_version(unique)
    weights = version["files"]["weights.bin"]
    replaced = {
        **version,
        "files": {**version["files"], "weights.bin": {**weights, "generation": weights["generation"] + 1}},
    }
    with pytest.raises(ModelError, match="weights.bin is no longer in the bucket"):
        store.load(replaced)
    s3.delete(version["files"]["model.json"]["object"])
    with pytest.raises(ModelError, match="model.json is no longer in the bucket"):
        store.load(version)
