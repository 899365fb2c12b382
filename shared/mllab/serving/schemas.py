"""The serving domain's wire models: deployments, API keys, a share page's view, and predictions.

The domain checks the values again (a version's readiness, a key's scopes and deployment list, each
instance's features); these models give the OpenAPI document its shapes and refuse what is plainly
malformed before a handler runs."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, StringConstraints

from mllab.platform.wire import ApiModel, Plain, Strict
from mllab.serving import apikeys, deployments  # the domain's limits (every function loading this module loads both)

Id = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{32}$")]
Version = Annotated[int, Field(ge=1, le=999_999_999)]


class CreateDeployment(Strict):
    model_id: Id
    version: Version


class UpdateDeployment(Strict):
    """Every field is optional; only those sent change (switching `version` has no downtime)."""

    version: Version | None = None
    public: bool | None = None
    description: Annotated[str, StringConstraints(max_length=deployments.MAX_DESCRIPTION), Plain] | None = None


class Deployment(ApiModel):
    id: str
    model_id: str
    version: int
    public: bool
    description: str
    predict_url: str
    created_at: str | None
    updated_at: str | None


class DeploymentList(ApiModel):
    items: list[Deployment]


class CreateApiKey(Strict):
    name: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=apikeys.MAX_NAME), Plain]
    scopes: Annotated[list[Literal["predict"]], Field(min_length=1, max_length=1)]
    deployment_ids: Annotated[list[Id], Field(max_length=apikeys.MAX_DEPLOYMENT_IDS)] | None = None
    expires_in_days: Annotated[int, Field(ge=1, le=apikeys.MAX_EXPIRY_DAYS)] | None = None


class ApiKey(ApiModel):
    """A key as listed: never the key or its hash."""

    id: str
    name: str
    prefix: str
    scopes: list[str]
    deployment_ids: list[str] | None
    created_at: str | None
    last_used_at: str | None
    expires_at: str | None


class NewApiKey(ApiKey):
    key: str = Field(description="the key itself: shown this once, stored only as a hash")


class ApiKeyList(ApiModel):
    items: list[ApiKey]


class PublicFeature(ApiModel):
    name: str
    type: str
    values: list[Any] | None = None


class PublicDeployment(ApiModel):
    """What a share page needs: the browser predicts from the two signed URLs."""

    id: str
    name: str
    description: str
    version: int
    task: str
    target: str
    labels: list[Any] | None
    features: list[PublicFeature]
    model_json_url: str
    weights_url: str
    urls_expire_at: str


class PredictionUsage(ApiModel):
    """This month's predictions (UTC), as GET /me shows them; the count lags by up to a second."""

    month: str = ""
    predictions: int = 0
    limit: int = 0


class PredictRequest(Strict):
    instances: Annotated[
        list[dict[str, Any]],
        Field(min_length=1, max_length=1000, description="raw feature values, as the lab's prediction form takes them"),
    ]


class PredictResponse(ApiModel):
    predictions: list[dict[str, Any]]
    deployment_id: str
    model_id: str
    version: int
