"""The files domain's wire models: projects, models, datasets and training runs, their pages, signed
upload and download URLs, the lab's `metrics.json`, and storage usage."""

from __future__ import annotations

import warnings
from typing import Annotated, Literal

from pydantic import ConfigDict, Field, StringConstraints, model_validator

from mllab.platform import config
from mllab.platform.jsonvalues import json_depth
from mllab.platform.wire import ApiModel, JsonObject, Plain, Strict

Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100), Plain]
Id = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{32}$")]


class CreateProject(Strict):
    name: Name


class Rename(Strict):
    name: Name


class CreateModel(Strict):
    project_id: Id
    name: Name
    config_json: JsonObject = Field(default_factory=dict, description="the model's layer configuration (JSON object)")


# The API says `schema_json` (the seed plan's name); it shadows a deprecated pydantic method harmlessly.
warnings.filterwarnings("ignore", message='Field name "schema_json"', category=UserWarning)


class CreateDataset(Strict):
    project_id: Id
    name: Name
    schema_json: JsonObject = Field(  # type: ignore[assignment]  # the API's name shadows pydantic's deprecated method
        default_factory=dict, description="column roles and types (JSON object)"
    )


class CreateJob(Strict):
    project_id: Id
    model_id: Id
    version: Annotated[int, Field(ge=1, le=999_999_999)] | None = None
    dataset_id: Id | None = None
    name: Annotated[str, StringConstraints(strip_whitespace=True, max_length=100), Plain] = ""


class Project(ApiModel):
    id: str
    name: str
    created_at: str
    updated_at: str


class ModelVersion(ApiModel):
    version: int
    status: Literal["pending", "ready", "failed"]
    created_at: str
    size_bytes: int
    failure: str | None = Field(default=None, description="why an uploaded file was refused (status failed)")
    notes: str = Field(default="", description="the owner's short note on this version")


class VersionNotes(Strict):
    notes: Annotated[str, StringConstraints(strip_whitespace=True, max_length=500), Plain]


class Model(ApiModel):
    id: str
    project_id: str
    name: str
    config_json: dict
    latest_version: int | None
    versions: list[ModelVersion] = []
    created_at: str
    updated_at: str


class Dataset(ApiModel):
    id: str
    project_id: str
    name: str
    schema_json: dict  # type: ignore[assignment]  # the API's name shadows pydantic's deprecated method
    status: Literal["pending", "ready", "failed"]
    failure: str | None = Field(default=None, description="why the uploaded file was refused (status failed)")
    object: str | None = None
    size_bytes: int = 0
    columns: list[str] = []
    row_count: int | None = None
    created_at: str
    updated_at: str


class Job(ApiModel):
    model_config = ConfigDict(extra="allow")

    id: str
    project_id: str
    model_id: str
    version: int | None
    dataset_id: str | None
    name: str
    status: str
    created_at: str
    updated_at: str


class Page(ApiModel):
    items: list[dict]
    next_cursor: str | None = None


class SignUpload(Strict):
    kind: Literal["model", "weights", "dataset", "metrics"]
    size: Annotated[int, Field(ge=1, description="bytes the client will upload")]
    model_id: Id | None = None
    version: Annotated[int, Field(ge=1, le=999_999_999)] | None = None
    dataset_id: Id | None = None
    filename: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9._-]{1,100}\.csv$")] | None = None
    job_id: Id | None = None


class CompleteUpload(Strict):
    object: Annotated[str, StringConstraints(min_length=1, max_length=1024), Plain]  # no control characters


class SignedUrl(ApiModel):
    url: str
    method: Literal["PUT", "GET"]
    headers: dict[str, str]
    object: str
    expires_at: str


class EpochMetrics(ApiModel):
    model_config = ConfigDict(extra="allow")

    epoch: Annotated[int, Field(ge=1)]
    loss: float | None = None
    val_loss: float | None = None
    acc: float | None = None
    val_acc: float | None = None


class Metrics(ApiModel):
    """`metrics.json` as the lab writes it (docs/architecture.md, object names)."""

    model_config = ConfigDict(extra="forbid")

    schema_: Literal[1] = Field(alias="schema")
    model_id: Id
    version: Annotated[int, Field(ge=1)] | None
    dataset_id: Id | None
    task: Literal["binary", "multiclass", "regression"]
    params: dict
    epochs: Annotated[list[EpochMetrics], Field(max_length=100_000)]
    final: dict
    backend: Literal["webgpu", "webgl", "wasm", "cpu"]
    started_at: str
    finished_at: str

    @model_validator(mode="after")
    def _servable(self) -> Metrics:
        for field in ("params", "final"):
            depth = json_depth(getattr(self, field))
            if depth > config.LIMITS.json_depth:
                raise ValueError(f"{field} is nested {depth} levels deep; at most {config.LIMITS.json_depth}")
        return self


class Usage(ApiModel):
    storage_bytes: int = 0
    storage_limit_bytes: int = 0
    uploads_today: int = 0
    uploads_limit: int = 0
