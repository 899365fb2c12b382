"""Wire models of the HTTP API: the route table points at these, and the OpenAPI document is
generated from them."""

from __future__ import annotations

import json
import unicodedata
import warnings
from datetime import UTC, date, datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    GetCoreSchemaHandler,
    GetJsonSchemaHandler,
    StringConstraints,
    model_validator,
)
from pydantic_core import CoreSchema, core_schema

from mllab import config


def jsonable(value: Any) -> Any:
    """Firestore values as JSON: timestamps as RFC 3339, recursively."""
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat().replace("+00:00", "Z")
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


# Bidirectional embeddings, overrides and isolates: they make text display in another order than it
# is stored ("abc\u202egnp.exe" shows as "abcexe.png").
_BIDI_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def _plain(value: str) -> str:
    """Text people read (names, codes, reasons): any script or emoji, but no control characters (NUL,
    line breaks, escapes), unpaired surrogates or bidirectional overrides."""
    for ch in value:
        if ch in _BIDI_CONTROLS or unicodedata.category(ch) in ("Cc", "Cs"):
            raise ValueError("control characters (such as NUL, line breaks or direction overrides) are not allowed")
    return value


# The same rule as a JSON Schema pattern, so the OpenAPI document says it and generated clients (and
# the fuzzer) know it. The validator above stays the rule: it gives the readable message.
PLAIN_PATTERN = r"^[^\x00-\x1F\x7F-\x9F\u202A-\u202E\u2066-\u2069\uD800-\uDFFF]*$"


class _PlainText:
    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> CoreSchema:
        return core_schema.no_info_after_validator_function(_plain, handler(source))

    def __get_pydantic_json_schema__(self, schema: CoreSchema, handler: GetJsonSchemaHandler) -> dict[str, Any]:
        return {**handler(schema), "pattern": PLAIN_PATTERN}


Plain = _PlainText()


def json_depth(value: Any) -> int:
    """How deep a JSON value nests (a scalar is 0, `{}` and `[]` are 1), without recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else None
        if children is None:
            continue
        deepest = max(deepest, depth)
        stack.extend((child, depth + 1) for child in children)
    return deepest


def compact_json(value: Any) -> str:
    """JSON as stored: compact, UTF-8 (not escaped), no NaN or infinities."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def _bounded_json(value: dict) -> dict:
    limits = config.LIMITS
    depth = json_depth(value)  # first: compact_json would recurse through a deep value
    if depth > limits.json_depth:
        raise ValueError(f"nested {depth} levels deep; at most {limits.json_depth} levels are stored")
    size = len(compact_json(value).encode())
    if size > limits.json_field_bytes:
        raise ValueError(
            f"{size} bytes as compact JSON; at most {limits.json_field_bytes} bytes "
            f"({limits.json_field_bytes // 1024} KiB) are stored"
        )
    return value


# A JSON object the API stores and answers back: bounded in size and depth so every stored value can be
# served (the OpenAPI document carries both bounds as `x-max-bytes` / `x-max-depth`).
JsonObject = Annotated[
    dict,
    AfterValidator(_bounded_json),
    Field(json_schema_extra={"x-max-bytes": config.LIMITS.json_field_bytes, "x-max-depth": config.LIMITS.json_depth}),
]


class Strict(BaseModel):
    """Request bodies refuse unknown fields, so a typo is a 422, not a silent no-op."""

    model_config = ConfigDict(extra="forbid")


class Jwk(BaseModel):
    kty: Literal["EC"]
    crv: Literal["P-256"]
    x: str
    y: str
    kid: str
    use: Literal["sig"] = "sig"
    alg: Literal["ES256"] = "ES256"


class Jwks(BaseModel):
    keys: list[Jwk]


class FieldError(BaseModel):
    field: str
    message: str


class Problem(BaseModel):
    """RFC 9457 problem details, as every error is answered."""

    type: str
    title: str
    status: int
    detail: str
    instance: str | None = None
    request_id: str
    errors: list[FieldError] | None = Field(default=None, description="validation errors, one per field")
    resource: str | None = Field(default=None, description="limit-reached: what is counted (e.g. models)")
    limit: int | None = Field(default=None, description="limit-reached: how many the plan allows")


# --- identity and sessions -----------------------------------------------------------------------

# The server's own check (mllab.users.normalize_email) answers 422 for what is not an email address.
Email = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=3, max_length=254),
    Plain,
    Field(json_schema_extra={"format": "email"}),
]
# 8 characters minimum, and at least 64 accepted (we take up to 1,024 so no one's passphrase is cut).
NewPassword = Annotated[str, StringConstraints(min_length=8, max_length=1024)]
AnyPassword = Annotated[str, StringConstraints(min_length=1, max_length=1024)]
OneTimeToken = Annotated[str, StringConstraints(min_length=16, max_length=256, pattern=r"^[A-Za-z0-9_-]+$")]


class RegisterRequest(Strict):
    email: Email
    password: NewPassword
    name: Annotated[str, StringConstraints(strip_whitespace=True, max_length=100), Plain] = ""


class LoginRequest(Strict):
    email: Email
    password: AnyPassword


class EmailRequest(Strict):
    email: Email


class VerifyEmailRequest(Strict):
    token: OneTimeToken


class PasswordResetConfirmRequest(Strict):
    token: OneTimeToken
    password: NewPassword


class PasswordChangeRequest(Strict):
    current_password: AnyPassword
    new_password: NewPassword
    sign_out_others: bool = True


class LogoutRequest(Strict):
    scope: Literal["local", "others", "global"] = "local"


class DeleteAccountRequest(Strict):
    password: AnyPassword | None = None


class AccessTokenResponse(BaseModel):
    access_token: str
    token_type: Literal["Bearer"] = "Bearer"
    expires_in: int


class Accepted(BaseModel):
    detail: str


class LastPayment(BaseModel):
    time: str
    value: str | None = None  # PayPal's decimal string, e.g. "15.00"
    currency: str | None = None


class Subscription(BaseModel):
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


class Usage(BaseModel):
    storage_bytes: int = 0
    storage_limit_bytes: int = 0
    uploads_today: int = 0
    uploads_limit: int = 0


class Me(BaseModel):
    uid: str
    email: str
    name: str
    role: Literal["user", "admin"]
    email_verified: bool
    providers: list[Literal["password", "google"]] = Field(
        default_factory=list, description="How this account signs in: a password, Google, or both"
    )
    subscription: Subscription
    usage: Usage
    csrf: str


class SessionInfo(BaseModel):
    id: str
    method: str
    user_agent: str
    ip: str
    created_at: str
    refreshed_at: str
    expires_at: str
    current: bool


class SessionList(BaseModel):
    items: list[SessionInfo]
    next_cursor: str | None = None


class AccountExport(BaseModel):
    model_config = ConfigDict(extra="allow")

    exported_at: str
    user: dict
    identities: list[dict]
    sessions: list[dict]
    audit: list[dict]


# --- catalog and storage -------------------------------------------------------------------------

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


class Project(BaseModel):
    id: str
    name: str
    created_at: str
    updated_at: str


class ModelVersion(BaseModel):
    version: int
    status: Literal["pending", "ready", "failed"]
    created_at: str
    size_bytes: int
    failure: str | None = Field(default=None, description="why an uploaded file was refused (status failed)")


class Model(BaseModel):
    id: str
    project_id: str
    name: str
    config_json: dict
    latest_version: int | None
    versions: list[ModelVersion] = []
    created_at: str
    updated_at: str


class Dataset(BaseModel):
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


class Job(BaseModel):
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


class Page(BaseModel):
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
    object: Annotated[str, StringConstraints(min_length=1, max_length=1024)]


class SignedUrl(BaseModel):
    url: str
    method: Literal["PUT", "GET"]
    headers: dict[str, str]
    object: str
    expires_at: str


class EpochMetrics(BaseModel):
    model_config = ConfigDict(extra="allow")

    epoch: Annotated[int, Field(ge=1)]
    loss: float | None = None
    val_loss: float | None = None
    acc: float | None = None
    val_acc: float | None = None


class Metrics(BaseModel):
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
    backend: Literal["webgpu", "webgl", "cpu"]
    started_at: str
    finished_at: str

    @model_validator(mode="after")
    def _servable(self) -> Metrics:
        for field in ("params", "final"):
            depth = json_depth(getattr(self, field))
            if depth > config.LIMITS.json_depth:
                raise ValueError(f"{field} is nested {depth} levels deep; at most {config.LIMITS.json_depth}")
        return self


# --- billing and promo codes ---------------------------------------------------------------------


class Money(BaseModel):
    value: str
    currency: str


class PlanLimits(BaseModel):
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
            json_field_bytes=limits.json_field_bytes,
            json_depth=limits.json_depth,
            file_bytes={
                "model": limits.model_json_bytes,
                "weights": limits.weights_bytes,
                "dataset": limits.dataset_csv_bytes,
                "metrics": limits.metrics_json_bytes,
            },
        )


class PlanInfo(BaseModel):
    id: Literal["free", "pro"]
    name: str
    price: Money
    interval: Literal["month"]
    limits: PlanLimits


class Plans(BaseModel):
    plans: list[PlanInfo]


class SubscribeResponse(BaseModel):
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


class PromoApplied(BaseModel):
    code: str
    kind: Literal["trial", "comp"]
    days: int | None
    subscription: Subscription


class WebhookAck(BaseModel):
    event_id: str
    outcome: str
