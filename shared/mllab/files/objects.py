"""The object-name grammar (docs/architecture.md). The server builds every name; the recorder parses
them back. A name that does not parse is not ours to record.

    users/<uid>/projects/<pid>/models/<mid>/versions/<n>/model.json | weights.bin
    users/<uid>/projects/<pid>/datasets/<did>/<file>.csv
    users/<uid>/projects/<pid>/jobs/<jid>/metrics.json
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from mllab.platform import config

ID = r"[0-9a-f]{32}"  # uuid4 hex, as the catalog makes them
DATASET_FILE = re.compile(r"[A-Za-z0-9._-]{1,100}\.csv")
_NAME = re.compile(
    rf"users/(?P<uid>{ID})/projects/(?P<project_id>{ID})/(?:"
    rf"models/(?P<model_id>{ID})/versions/(?P<version>[1-9][0-9]{{0,8}})/(?P<model_file>model\.json|weights\.bin)"
    rf"|datasets/(?P<dataset_id>{ID})/(?P<dataset_file>[A-Za-z0-9._-]{{1,100}}\.csv)"
    rf"|jobs/(?P<job_id>{ID})/(?P<job_file>metrics\.json))"
)


@dataclass(frozen=True)
class Kind:
    name: str  # model | weights | dataset | metrics
    content_type: str
    max_bytes: int


KINDS = {
    "model": Kind("model", "application/json", config.LIMITS.model_json_bytes),
    "weights": Kind("weights", "application/octet-stream", config.LIMITS.weights_bytes),
    "dataset": Kind("dataset", "text/csv", config.LIMITS.dataset_csv_bytes),
    "metrics": Kind("metrics", "application/json", config.LIMITS.metrics_json_bytes),
}


@dataclass(frozen=True)
class ObjectName:
    kind: Kind
    uid: str
    project_id: str
    model_id: str | None = None
    version: int | None = None
    dataset_id: str | None = None
    filename: str | None = None
    job_id: str | None = None

    def __str__(self) -> str:
        base = f"users/{self.uid}/projects/{self.project_id}"
        if self.kind.name in ("model", "weights"):
            return f"{base}/models/{self.model_id}/versions/{self.version}/" + (
                "model.json" if self.kind.name == "model" else "weights.bin"
            )
        if self.kind.name == "dataset":
            return f"{base}/datasets/{self.dataset_id}/{self.filename}"
        return f"{base}/jobs/{self.job_id}/metrics.json"


def model_file(uid: str, project_id: str, model_id: str, version: int, kind: str) -> ObjectName:
    return ObjectName(KINDS[kind], uid, project_id, model_id=model_id, version=version)


def dataset_file(uid: str, project_id: str, dataset_id: str, filename: str) -> ObjectName:
    if not DATASET_FILE.fullmatch(filename) or filename.startswith("."):
        raise ValueError("dataset file names are 1-100 of A-Z a-z 0-9 . _ - ending in .csv")
    return ObjectName(KINDS["dataset"], uid, project_id, dataset_id=dataset_id, filename=filename)


def metrics_file(uid: str, project_id: str, job_id: str) -> ObjectName:
    return ObjectName(KINDS["metrics"], uid, project_id, job_id=job_id)


def parse(name: str) -> ObjectName | None:
    """The structured name, or None when `name` is outside the grammar."""
    m = _NAME.fullmatch(name)
    if not m:
        return None
    g = m.groupdict()
    if g["model_file"]:
        kind = "model" if g["model_file"] == "model.json" else "weights"
        return model_file(g["uid"], g["project_id"], g["model_id"], int(g["version"]), kind)
    if g["dataset_file"]:
        if g["dataset_file"].startswith("."):
            return None
        return dataset_file(g["uid"], g["project_id"], g["dataset_id"], g["dataset_file"])
    return metrics_file(g["uid"], g["project_id"], g["job_id"])


def user_prefix(uid: str) -> str:
    return f"users/{uid}/"
