"""Billing's wire models: plans and their limits, the subscription view, checkout, promo codes and the
webhook acknowledgement."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, StringConstraints

from mllab.platform import config
from mllab.platform.wire import ApiModel, Plain, Strict


class LastPayment(ApiModel):
    time: str
    value: str | None = None  # PayPal's decimal string, e.g. "15.00"
    currency: str | None = None


class Subscription(ApiModel):
    status: Literal["active", "past_due", "trial", "canceled", "none"] = "none"
    plan: Literal["free", "pro"] = "free"
    pro_until: str | None = None
    trial_until: str | None = None
    next_billing_time: str | None = None
    past_due: bool = False
    last_payment: LastPayment | None = None
    # Where the subscriber manages the automatic payment at PayPal (while PayPal still bills them).
    manage_url: str | None = None
    # When PayPal first charges: a subscription's delayed start, or, for someone who could subscribe,
    # the end of the PRO they have already (null: at once).
    first_charge_time: str | None = None


class Money(ApiModel):
    value: str
    currency: str


class PlanLimits(ApiModel):
    cloud_saves: bool
    storage_bytes: int
    uploads_per_day: int
    projects: int = Field(description="projects a user may keep")
    models: int = Field(description="models a user may keep")
    versions_per_model: int = Field(description="versions that may be allocated on one model")
    datasets: int = Field(description="datasets a user may keep")
    jobs: int = Field(description="training runs a user may keep")
    json_field_bytes: int = Field(description="the largest config_json / schema_json, as compact JSON")
    json_depth: int = Field(description="the deepest nesting of stored JSON")
    file_bytes: dict[str, int] = Field(description="the largest upload of each kind (model, weights, dataset, metrics)")
    deployments: int = Field(description="deployments a user may keep")
    predictions_per_month: int = Field(description="predictions a month across a user's deployments")

    @classmethod
    def of(cls, plan: config.Plan) -> PlanLimits:
        limits = config.LIMITS
        return cls(
            cloud_saves=plan.cloud_saves,
            storage_bytes=plan.storage_bytes,
            uploads_per_day=plan.uploads_per_day,
            projects=plan.projects,
            models=plan.models,
            versions_per_model=plan.versions_per_model,
            datasets=plan.datasets,
            jobs=plan.jobs,
            deployments=plan.deployments,
            predictions_per_month=plan.predictions_per_month,
            json_field_bytes=limits.json_field_bytes,
            json_depth=limits.json_depth,
            file_bytes={
                "model": limits.model_json_bytes,
                "weights": limits.weights_bytes,
                "dataset": limits.dataset_csv_bytes,
                "metrics": limits.metrics_json_bytes,
            },
        )


class PlanInfo(ApiModel):
    id: Literal["free", "pro"]
    name: str
    price: Money
    interval: Literal["month"]
    limits: PlanLimits


class Plans(ApiModel):
    plans: list[PlanInfo]


class SubscribeResponse(ApiModel):
    subscription_id: str
    approve_url: str
    # The first charge: at the end of the PRO already held (a paid-through date, a trial), else now.
    first_charge_time: str | None = None
    amount: Money | None = None


class SyncRequest(Strict):
    subscription_id: Annotated[str, StringConstraints(pattern=r"^I-[A-Z0-9]{6,40}$")] | None = Field(
        default=None, description="the id PayPal appended to the return URL; default: your latest checkout"
    )


class CancelRequest(Strict):
    reason: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=128), Plain] | None = None


class PromoRequest(Strict):
    code: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=64), Plain]


class PromoApplied(ApiModel):
    code: str
    kind: Literal["trial", "comp"]
    days: int | None
    subscription: Subscription


class WebhookAck(ApiModel):
    event_id: str
    outcome: str
