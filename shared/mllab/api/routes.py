"""The one route table. The gateway routes by it, each function's router binds its handlers to it,
and the load balancer's URL map and the OpenAPI document are derived from it."""

from __future__ import annotations

import enum
import functools
import importlib
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:
    from pydantic import BaseModel

# Where the route table's models live: named, not imported, so a function loads only its own routes' models.
BILLING = "mllab.billing.schemas:"
FILES = "mllab.files.schemas:"
IDENTITY = "mllab.identity.schemas:"
SERVING = "mllab.serving.schemas:"
WIRE = "mllab.platform.wire:"


class LazyModel:
    """A route's request or response model: a class, or "module:Name" imported on first read. Each
    function reads only its own routes' models, so it never loads another domain's schemas; the gateway
    and the OpenAPI document read them all."""

    def __set_name__(self, owner: type, name: str) -> None:
        self.slot = "_" + name

    def __get__(self, obj: object, owner: type | None = None) -> type[BaseModel] | None:
        if obj is None:
            return None  # the dataclass default
        ref = getattr(obj, self.slot)
        if isinstance(ref, str):
            module, _, name = ref.partition(":")
            ref = getattr(importlib.import_module(module), name)
            object.__setattr__(obj, self.slot, ref)
        return cast("type[BaseModel] | None", ref)

    def __set__(self, obj: object, value: type[BaseModel] | str | None) -> None:
        object.__setattr__(obj, self.slot, value)


class Auth(enum.StrEnum):
    NONE = "none"
    ACCESS_TOKEN = "access_token"
    REFRESH_COOKIE = "refresh_cookie"
    WEBHOOK_SIGNATURE = "webhook_signature"
    # `Authorization: Bearer mlk_...`: the router requires the header; the serving domain judges the key
    # (mllab.serving.apikeys), never a cookie.
    API_KEY = "api_key"


class Csrf(enum.StrEnum):
    NONE = "none"
    # Cookie-authenticated routes: POST + JSON + a non-empty X-CSRF-Token + an allow-listed Origin,
    # and never Sec-Fetch-Site: cross-site.
    ORIGIN = "origin"
    # Other mutations: X-CSRF-Token must equal the session-bound token /me returns.
    SESSION = "session"


class Trigger(enum.StrEnum):
    HTTP = "http"
    PUBSUB = "pubsub"


@dataclass(frozen=True)
class Function:
    name: str
    trigger: Trigger
    # Cloud clients (mllab.platform.clients getters) its paths may load; the import check holds it to this.
    uses: frozenset[str] = field(default_factory=frozenset)
    topic: str | None = None  # for Pub/Sub triggers
    # Deployed (and run by the local stack) only with this file store (mllab.config `storage`); None: always
    store: str | None = None


@dataclass(frozen=True)
class Route:
    method: str
    path: str  # template: /models/{id}/versions
    function: str
    summary: str
    request: LazyModel = LazyModel()
    response: LazyModel = LazyModel()
    status: int = 200
    auth: Auth = Auth.NONE
    csrf: Csrf = Csrf.NONE
    # Check that the token's session is still live and its user neither deleted nor disabled before
    # answering (docs/security.md). Every access-token route does: reads return user data or signed URLs too.
    live: bool = True
    cache: str = "no-store"
    # Statuses the handler answers besides `status` and those the route's auth, CSRF, body and path
    # parameters imply (mllab.api.openapi derives those, and adds the 429 and 503 every route may answer).
    answers: tuple[int, ...] = ()
    # CORS for any origin, without credentials (the route takes an API key, never a cookie).
    any_origin: bool = False
    # False: the edge hands the handler the parsed JSON and sends its answer as is, and the route's domain
    # checks both to the models above, which stay the route's contract (OpenAPI, the gateway, the fuzzer;
    # a unit test holds the domain to them). For a route whose path must not load pydantic: about 70 ms
    # of CPU at every cold start (docs/operations.md, cold starts).
    edge_validates: bool = True

    @property
    def has_request(self) -> bool:
        """Whether the route takes a body, known without importing its model."""
        return object.__getattribute__(self, "_request") is not None

    @property
    def needs_live_session(self) -> bool:
        return self.auth is Auth.ACCESS_TOKEN and self.live

    @functools.cached_property
    def pattern(self) -> re.Pattern[str]:
        return compile_template(self.path)

    def match(self, path: str) -> dict[str, str] | None:
        m = self.pattern.fullmatch(path)
        return m.groupdict() if m else None


def compile_template(template: str) -> re.Pattern[str]:
    parts = re.split(r"\{([a-z_]+)\}", template)
    regex = "".join(re.escape(p) if i % 2 == 0 else f"(?P<{p}>[^/]+)" for i, p in enumerate(parts))
    return re.compile(regex)


FUNCTIONS: tuple[Function, ...] = (
    Function("jwks", Trigger.HTTP),
    Function("auth_google_login", Trigger.HTTP, uses=frozenset({"firestore"})),
    Function("auth_google_callback", Trigger.HTTP, uses=frozenset({"firestore"})),
    Function("auth_password", Trigger.HTTP, uses=frozenset({"firestore"})),
    Function("auth_refresh", Trigger.HTTP, uses=frozenset({"firestore"})),
    Function("auth_logout", Trigger.HTTP, uses=frozenset({"firestore"})),
    Function("account", Trigger.HTTP, uses=frozenset({"firestore"})),
    Function("catalog", Trigger.HTTP, uses=frozenset({"firestore", "storage"})),
    Function("signed_urls", Trigger.HTTP, uses=frozenset({"firestore", "storage"})),
    Function("on_object_finalized", Trigger.PUBSUB, uses=frozenset({"firestore", "storage"}), topic="events_topic"),
    Function("purge_accounts", Trigger.PUBSUB, uses=frozenset({"firestore", "storage"}), topic="purge_topic"),
    Function("billing", Trigger.HTTP, uses=frozenset({"firestore"})),
    Function("paypal_webhook", Trigger.HTTP, uses=frozenset({"firestore"})),
    Function("promo_apply", Trigger.HTTP, uses=frozenset({"firestore"})),
    Function("reconcile_subscriptions", Trigger.PUBSUB, uses=frozenset({"firestore"}), topic="reconcile_topic"),
    # reports uploads whose completion never came (an S3-compatible store sends no events: mllab.files.completion)
    Function("sweep_uploads", Trigger.PUBSUB, uses=frozenset({"firestore", "pubsub"}), topic="sweep_topic", store="s3"),
    Function("deployments", Trigger.HTTP, uses=frozenset({"firestore", "storage"})),
    # Reads the key, deployment and plan from Firestore and the model's files from the bucket, nothing else.
    Function("predict", Trigger.HTTP, uses=frozenset({"firestore", "storage"})),
)

_TOKEN: dict[str, Any] = {"auth": Auth.ACCESS_TOKEN}
_MUTATE: dict[str, Any] = {"auth": Auth.ACCESS_TOKEN, "csrf": Csrf.SESSION}
_COOKIE: dict[str, Any] = {"csrf": Csrf.ORIGIN}


def _crud(collection: str, noun: str, create: str, record: str, filters: str) -> list[Route]:
    """The five routes every catalog collection has: create, list, get, rename, delete (models named
    in mllab.files.schemas)."""
    one = f"/{collection}/{{id}}"
    parent = (404,) if "project_id" in filters else ()  # the parent is not (or no longer) yours
    create, record = FILES + create, FILES + record
    return [
        Route(
            "POST",
            f"/{collection}",
            "catalog",
            f"Create a {noun}",
            request=create,
            response=record,
            status=201,
            answers=(*parent, 409),
            **_MUTATE,
        ),  # 409: the plan's limit of them is reached
        Route(
            "GET",
            f"/{collection}",
            "catalog",
            f"List your {noun}s ({filters}?limit=, ?cursor=)",
            response=FILES + "Page",
            answers=(400, 422),
            **_TOKEN,
        ),  # a foreign cursor; bad query parameters
        Route("GET", one, "catalog", f"One {noun}", response=record, **_TOKEN),
        Route("PATCH", one, "catalog", f"Rename a {noun}", request=FILES + "Rename", response=record, **_MUTATE),
        Route("DELETE", one, "catalog", f"Delete a {noun} and its files", status=204, **_MUTATE),
    ]


ROUTES: tuple[Route, ...] = (
    Route(
        "GET",
        "/.well-known/jwks.json",
        "jwks",
        "Public keys that verify access tokens",
        response=IDENTITY + "Jwks",
        cache="public, max-age=300",
        edge_validates=False,  # mllab.identity.tokens.public_jwks builds it to the model
    ),
    # Google sign-in (browser navigations: they answer with redirects)
    Route(
        "GET",
        "/auth/google/login",
        "auth_google_login",
        "Start Google sign-in (?return_to=/path; &link=1 adds Google to a password session's account)",
        status=302,
        answers=(400, 401, 403, 502),
    ),
    Route(
        "GET",
        "/auth/google/callback",
        "auth_google_callback",
        "Google redirects back here",
        status=302,
        answers=(400, 401, 403, 409, 502),
    ),
    # email + password
    Route(
        "POST",
        "/auth/register",
        "auth_password",
        "Create an account (a verification mail follows)",
        request=IDENTITY + "RegisterRequest",
        response=WIRE + "Accepted",
        status=202,
        **_COOKIE,
    ),
    Route(
        "POST",
        "/auth/login",
        "auth_password",
        "Sign in; sets the refresh cookie",
        request=IDENTITY + "LoginRequest",
        response=IDENTITY + "AccessTokenResponse",
        answers=(401,),
        **_COOKIE,
    ),
    Route(
        "POST",
        "/auth/verify-email",
        "auth_password",
        "Confirm an email address with the mailed token",
        request=IDENTITY + "VerifyEmailRequest",
        response=WIRE + "Accepted",
        answers=(400,),
    ),
    Route(
        "POST",
        "/auth/verify-email/resend",
        "auth_password",
        "Mail a new verification link",
        request=IDENTITY + "EmailRequest",
        response=WIRE + "Accepted",
        status=202,
    ),
    Route(
        "POST",
        "/auth/password-reset",
        "auth_password",
        "Mail a password-reset link",
        request=IDENTITY + "EmailRequest",
        response=WIRE + "Accepted",
        status=202,
    ),
    Route(
        "POST",
        "/auth/password-reset/confirm",
        "auth_password",
        "Set a new password with the mailed token",
        request=IDENTITY + "PasswordResetConfirmRequest",
        response=WIRE + "Accepted",
        answers=(400,),
    ),
    Route(
        "POST",
        "/auth/password-change",
        "auth_password",
        "Change the password (optionally sign out others)",
        request=IDENTITY + "PasswordChangeRequest",
        response=WIRE + "Accepted",
        **_MUTATE,
    ),
    # refresh cookie
    Route(
        "POST",
        "/auth/refresh",
        "auth_refresh",
        "Rotate the refresh cookie; new access token (204: signed out)",
        response=IDENTITY + "AccessTokenResponse",
        auth=Auth.REFRESH_COOKIE,
        answers=(204,),
        **_COOKIE,
    ),
    Route(
        "POST",
        "/auth/logout",
        "auth_logout",
        "Sign out this device, the others, or everywhere",
        request=IDENTITY + "LogoutRequest",
        status=204,
        auth=Auth.REFRESH_COOKIE,
        **_COOKIE,
    ),
    # account
    Route(
        "GET",
        "/me",
        "account",
        "The signed-in user, plan, usage and CSRF token",
        response="mllab.account:Me",
        **_TOKEN,
    ),
    Route("GET", "/sessions", "account", "Signed-in devices", response=IDENTITY + "SessionList", **_TOKEN),
    Route("DELETE", "/sessions/{id}", "account", "Sign out one device", status=204, **_MUTATE),
    Route(
        "GET",
        "/account/export",
        "account",
        "Everything we hold about you, as JSON",
        response=IDENTITY + "AccountExport",
        **_TOKEN,
    ),
    Route(
        "DELETE",
        "/account",
        "account",
        "Delete the account (password or a sign-in in the last 10 minutes)",
        request=IDENTITY + "DeleteAccountRequest",
        status=204,
        **_MUTATE,
    ),
    # catalog: projects, models (+ versions), datasets, jobs
    *_crud("projects", "project", "CreateProject", "Project", ""),
    *_crud("models", "model", "CreateModel", "Model", "?project_id=, "),
    Route(
        "POST",
        "/models/{id}/versions",
        "catalog",
        "Allocate the next version (pending until both files land)",
        response=FILES + "ModelVersion",
        status=201,
        answers=(409,),
        **_MUTATE,
    ),
    Route(
        "PATCH",
        "/models/{id}/versions/{version}",
        "catalog",
        "Set a version's notes",
        request=FILES + "VersionNotes",
        response=FILES + "ModelVersion",
        answers=(404,),
        **_MUTATE,
    ),
    *_crud("datasets", "dataset", "CreateDataset", "Dataset", "?project_id=, "),
    *_crud("jobs", "training job", "CreateJob", "Job", "?project_id=, ?model_id=, "),
    # signed URLs: the browser talks to the bucket directly
    Route(
        "POST",
        "/signed/upload",
        "signed_urls",
        "A signed PUT URL for one of your files",
        request=FILES + "SignUpload",
        response=FILES + "SignedUrl",
        answers=(404, 409),
        **_MUTATE,
    ),
    Route(
        "POST",
        "/signed/complete",
        "signed_urls",
        "Report a finished upload (an S3-compatible store sends no event of its own)",
        request=FILES + "CompleteUpload",
        response=WIRE + "Accepted",
        status=202,
        answers=(404,),
        **_MUTATE,
    ),
    Route(
        "GET",
        "/signed/download",
        "signed_urls",
        "A signed GET URL for a recorded file (?object=)",
        response=FILES + "SignedUrl",
        answers=(404,),
        **_TOKEN,
    ),
    # billing: PayPal subscriptions and promo codes
    Route(
        "GET",
        "/billing/plans",
        "billing",
        "The plans, their prices and limits",
        response=BILLING + "Plans",
        cache="public, max-age=300",
    ),
    Route(
        "POST",
        "/billing/paypal/subscribe",
        "billing",
        "Start a PayPal checkout; answers the approval URL and when the first charge will be "
        "(the end of any PRO already held, else at approval)",
        response=BILLING + "SubscribeResponse",
        answers=(409,),
        **_MUTATE,
    ),
    Route(
        "POST",
        "/billing/sync",
        "billing",
        "Re-read your subscription from PayPal (on return from PayPal)",
        request=BILLING + "SyncRequest",
        response=BILLING + "Subscription",
        answers=(404,),
        **_MUTATE,
    ),
    Route(
        "POST",
        "/billing/cancel",
        "billing",
        "Cancel the subscription; PRO stays until the paid-through date",
        request=BILLING + "CancelRequest",
        response=BILLING + "Subscription",
        answers=(409,),
        **_MUTATE,
    ),
    Route(
        "POST",
        "/payments/paypal/webhook",
        "paypal_webhook",
        "PayPal's event notifications (signed by PayPal)",
        response=BILLING + "WebhookAck",
        auth=Auth.WEBHOOK_SIGNATURE,
        answers=(409,),
    ),
    Route(
        "POST",
        "/promo/apply",
        "promo_apply",
        "Redeem a promo code (a PRO trial or a comp)",
        request=BILLING + "PromoRequest",
        response=BILLING + "PromoApplied",
        answers=(409,),
        **_MUTATE,
    ),
    # serving: deployments (PRO), API keys, share pages and predictions (docs/serving.md)
    Route(
        "POST",
        "/deployments",
        "deployments",
        "Deploy a ready version of one of your models (PRO)",
        request=SERVING + "CreateDeployment",
        response=SERVING + "Deployment",
        status=201,
        answers=(404, 409),  # 403: no PRO (the CSRF 403 is implied); 409: not ready, not servable, or 20 held
        **_MUTATE,
    ),
    Route("GET", "/deployments", "deployments", "Your deployments", response=SERVING + "DeploymentList", **_TOKEN),
    Route("GET", "/deployments/{id}", "deployments", "One deployment", response=SERVING + "Deployment", **_TOKEN),
    Route(
        "PATCH",
        "/deployments/{id}",
        "deployments",
        "Switch the version, share it publicly or describe it",
        request=SERVING + "UpdateDeployment",
        response=SERVING + "Deployment",
        answers=(409,),
        **_MUTATE,
    ),
    Route("DELETE", "/deployments/{id}", "deployments", "Delete a deployment", status=204, **_MUTATE),
    Route(
        "POST",
        "/api-keys",
        "deployments",
        "Create an API key (the key is answered this once)",
        request=SERVING + "CreateApiKey",
        response=SERVING + "NewApiKey",
        status=201,
        answers=(409,),  # 20 live keys held
        **_MUTATE,
    ),
    Route(
        "GET",
        "/api-keys",
        "deployments",
        "Your API keys (never the keys)",
        response=SERVING + "ApiKeyList",
        **_TOKEN,
    ),
    Route("DELETE", "/api-keys/{id}", "deployments", "Revoke an API key at once", status=204, **_MUTATE),
    Route(
        "GET",
        "/public/deployments/{id}",
        "deployments",
        "What a shared model's page needs (no sign-in; 404 unless shared)",
        response=SERVING + "PublicDeployment",
    ),
    Route(
        "POST",
        "/predict/{id}",
        "predict",
        "Predictions from a deployment (Authorization: Bearer <API key>)",
        request=SERVING + "PredictRequest",
        response=SERVING + "PredictResponse",
        auth=Auth.API_KEY,
        answers=(
            402,
            403,
            413,
        ),  # 402: the owner's PRO lapsed; 403: the key's scope or deployments; 413: too big a model
        any_origin=True,
        edge_validates=False,  # mllab.serving.predict checks the instances and builds the answer
    ),
)


def function(name: str) -> Function:
    for fn in FUNCTIONS:
        if fn.name == name:
            return fn
    raise KeyError(name)


def for_store(storage: str) -> list[Function]:
    """The functions a deployment (or the local stack) on this file store runs."""
    return [fn for fn in FUNCTIONS if fn.store in (None, storage)]


def store_functions(storage: str) -> list[Function]:
    """The functions of a deployment on this file store whose paths use the store (mllab.files.store): those
    that use "storage" (the GCS client, on GCS) and the store's own functions (the S3 upload sweep). On an
    S3-compatible store these, and only these, get its credentials and its client library."""
    return [fn for fn in for_store(storage) if "storage" in fn.uses or fn.store == storage]


def http_functions() -> list[Function]:
    return [fn for fn in FUNCTIONS if fn.trigger is Trigger.HTTP]


def for_function(name: str, table: tuple[Route, ...] = ROUTES) -> tuple[Route, ...]:
    return tuple(r for r in table if r.function == name)


def match_path(path: str, table: tuple[Route, ...] = ROUTES) -> list[tuple[Route, dict[str, str]]]:
    """Every route whose template matches the path, whatever its method."""
    found = []
    for route in table:
        params = route.match(path)
        if params is not None:
            found.append((route, params))
    return found
