"""Typed settings and secrets.

Settings come from `MLLAB_*` environment variables. Secrets come from files mounted by Cloud Functions
(`--set-secrets=/secrets/<name>/<name>=<name>:latest`), then from Secret Manager as a lazy, cached fallback.
Locally, missing secrets (the development signing keys) are generated on first use into the ignored
`.dev/` folder. A production configuration refuses every local-only switch and stand-in.
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import functools
import os
import threading
import types
import typing
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, Literal

PREFIX = "MLLAB_"
EMULATOR_VARS = ("FIRESTORE_EMULATOR_HOST", "PUBSUB_EMULATOR_HOST", "STORAGE_EMULATOR_HOST")
MiB = 1024 * 1024
GiB = 1024 * MiB

# Secret names: the same in Secret Manager, as mounted file names, and under .dev/secrets locally.
SIGNING_KEYS = "token-signing-keys"  # private JWKS; mounted only into functions that sign
PUBLIC_KEYS = "token-public-keys"  # public JWKS; every function verifies against it
DEV_SIGNER = "dev-gcs-signer"  # local only: a service-account key for V4 URLs (production uses signBlob)
SESSION_KEYS = "session-keys"  # master keys: refresh tokens and CSRF tokens are HMACs derived from them
OAUTH_CLIENT_SECRET = "oauth-client-secret"  # Google OAuth client secret
SMTP_URL = "smtp-url"  # smtp(s)://user:pass@host:port for outgoing mail (production)
PAYPAL_CLIENT = "paypal-client"  # {"client_id", "client_secret"} of the PayPal REST app
PAYPAL_IDS = "paypal-ids"  # {"product_id", "plan_id", "webhook_id"}: printed by `mllab billing bootstrap`
# {"access_key_id", "secret_access_key"} of an S3-compatible bucket (MLLAB_STORAGE=s3); mounted only into
# the functions that use the file store
S3_CREDENTIALS = "s3-credentials"

# PayPal's REST hosts. The environment (sandbox or live) follows from the API base; webhook
# certificates are fetched only from the hosts of that environment (exact scheme + host + port).
PAYPAL_LIVE_API = "https://api-m.paypal.com"
PAYPAL_SANDBOX_API = "https://api-m.sandbox.paypal.com"
PAYPAL_CERT_ORIGINS = {
    PAYPAL_LIVE_API: ("https://api.paypal.com", "https://api-m.paypal.com"),
    PAYPAL_SANDBOX_API: ("https://api.sandbox.paypal.com", "https://api-m.sandbox.paypal.com"),
}


class ConfigError(RuntimeError):
    """The configuration is invalid; raised at cold start so a bad deploy fails loudly."""


class Env(enum.StrEnum):
    LOCAL = "local"
    TEST = "test"
    PRODUCTION = "production"


# Settings and tables are stdlib dataclasses, not pydantic models: every function imports this module
# at cold start, and pydantic costs about 70 ms of CPU to import (docs/operations.md, cold starts), which
# a function whose routes have no request model never needs.


@dataclasses.dataclass(frozen=True)
class Limits:
    """The one table of limits."""

    request_body_bytes: int = 1 * MiB
    webhook_body_bytes: int = 64 * 1024
    access_token_ttl_s: int = 10 * 60
    refresh_idle_s: int = 7 * 24 * 3600
    refresh_absolute_s: int = 30 * 24 * 3600
    pro_storage_bytes: int = 5 * GiB
    weights_bytes: int = 50 * MiB
    model_json_bytes: int = 2 * MiB
    # metrics.json is stored on its training job's record: it must fit a Firestore document (1 MiB)
    # with room to spare. The lab's run of 1,000 epochs writes about 100 KiB.
    metrics_json_bytes: int = 512 * 1024
    dataset_csv_bytes: int = 100 * MiB
    uploads_per_day: int = 200
    past_due_grace_days: int = 7
    # Stored user JSON (a model's config_json, a dataset's schema_json): the lab's largest layers
    # config (a few dozen layers) is under 10 KiB, so 64 KiB is ample, and a page of records stays small.
    json_field_bytes: int = 64 * 1024
    # Nesting depth of any user JSON we store or parse (the lab's configs nest about 8 deep): deeper
    # values cannot be served back (response validation and the export recurse through them).
    json_depth: int = 32
    # One page of a list answers at most this many bytes of items: the page shrinks to fit.
    list_page_bytes: int = 1 * MiB - 64 * 1024
    # A dataset's header, as stored on its record (the lab trains on at most 200 columns).
    csv_columns: int = 1000
    csv_header_bytes: int = 64 * 1024


LIMITS = Limits()


@dataclasses.dataclass(frozen=True, kw_only=True)
class Plan:
    """One row of the plans table: what a plan costs and what it allows."""

    id: str
    name: str
    price: str  # decimal string, as PayPal takes it
    currency: str = "USD"
    interval: str = "month"
    cloud_saves: bool
    storage_bytes: int
    uploads_per_day: int
    # How many catalog records a user may keep (deleting one frees its place).
    projects: int
    models: int
    versions_per_model: int  # version numbers ever allocated on one model
    datasets: int
    jobs: int
    # Serving (docs/serving.md): deployments a user may keep, predictions a month across them.
    deployments: int
    predictions_per_month: int


# The plans (docs/architecture.md, entitlements). A promo trial, a comp code and an operator grant all give `pro`.
PLANS: dict[str, Plan] = {
    "free": Plan(
        id="free",
        name="Free",
        price="0.00",
        cloud_saves=False,
        storage_bytes=0,
        uploads_per_day=0,
        projects=20,
        models=50,
        versions_per_model=20,
        datasets=50,
        jobs=100,
        deployments=0,
        predictions_per_month=0,
    ),
    "pro": Plan(
        id="pro",
        name="ML Lab PRO",
        price="15.00",
        cloud_saves=True,
        storage_bytes=LIMITS.pro_storage_bytes,
        uploads_per_day=LIMITS.uploads_per_day,
        projects=200,
        models=1000,
        versions_per_model=100,
        datasets=1000,
        jobs=5000,
        deployments=20,
        predictions_per_month=100_000,
    ),
}
PAYPAL_PAYMENT_FAILURE_THRESHOLD = 2  # failed cycles before PayPal suspends (bootstrap sets it on the plan)
CHECKOUT_PENDING_S = 3600  # an unapproved checkout is reused this long, then reconciliation expires it


@dataclasses.dataclass(frozen=True)
class RateLimits:
    """Budgets per fixed window, counted with a sliding estimate (mllab.platform.ratelimit). Nothing here lets
    a stranger lock someone out: failed passwords are budgeted per (account, client address) and per
    address; per account they only add a short progressive delay. Mails to one address are capped
    silently (the answer never says so), and authenticated re-checks count per session."""

    window_s: int = 15 * 60
    login_pair: int = 5  # wrong passwords for one account from one client address: then 429
    login_ip: int = 50  # wrong passwords from one client address, any accounts: then 429
    login_account: int = 10  # wrong passwords for one account from anywhere: then a short delay, never 429
    register_ip: int = 10  # registrations (successful or not) from one client address: then 429
    reset_ip: int = 20  # reset requests from one address: then no mail (the answer stays 202)
    mail_address: int = 5  # account mails (verify, reset, already-registered) to one address: then none
    reauth_session: int = 5  # wrong current passwords in one session (password change, deletion): then 429
    promo_user: int = 10
    promo_ip: int = 30
    api_key_pair: int = 20  # failed API keys with one key prefix from one client address: then 429
    api_key_ip: int = 200  # failed API keys from one client address, any prefix: then 429


# The per-account delay after `login_account` failures: doubles per failure, never above the cap, so
# a guesser gains almost nothing and the owner waits at most a couple of seconds.
LOGIN_DELAY_BASE_S = 0.25
LOGIN_DELAY_MAX_S = 2.0
RATE_LIMITS = RateLimits()
REFRESH_REUSE_WINDOW_S = 10  # the immediately previous refresh token is honoured this long
RECENT_SIGN_IN_S = 10 * 60  # deleting the account without a password needs a sign-in this recent
EMAIL_VERIFY_TTL_S = 24 * 3600
PASSWORD_RESET_TTL_S = 30 * 60
OAUTH_TX_TTL_S = 10 * 60
ACCOUNT_PURGE_AFTER_DAYS = 30


@dataclasses.dataclass(frozen=True, kw_only=True)
class Settings:
    env: Env = Env.LOCAL
    project: str = "demo-mllab"
    function: str = ""
    bucket: str = "mllab-local"
    events_topic: str = "gcs-events"
    purge_topic: str = "account-purge"
    # Public origin of the API (the load balancer; locally the gateway). Also the token issuer.
    public_url: str = "http://127.0.0.1:8080"
    cors_origins: tuple[str, ...] = ("http://127.0.0.1:8080", "http://localhost:8080")
    token_audience: str = "mllab-api"
    # Where the lab lives (post-login redirects land here); locally the same origin as the API.
    lab_url: str = "http://127.0.0.1:8080"
    # OpenID provider: Google in production, the oidc-provider-mock stand-in locally.
    oidc_issuer: str = "http://127.0.0.1:9400"
    oidc_client_id: str = "mllab-local"
    mail_from: str = "ML Lab <no-reply@mllab.local>"
    # PayPal: the REST API base (live or sandbox; locally the stand-in), and, for the local stand-in
    # only, the development CA it is served with and its origin as an extra webhook-cert origin.
    paypal_api_base: str = PAYPAL_SANDBOX_API
    paypal_ca_file: Path | None = None
    paypal_cert_origins: tuple[str, ...] = ()
    paypal_timeout_s: float = 8.0
    reconcile_topic: str = "billing-reconcile"
    sweep_topic: str = "upload-sweep"  # the upload sweep's schedule (S3-compatible store only)
    secrets_dir: Path = Path("/secrets")
    dev_dir: Path = Path(".dev")
    rpc_timeout_s: float = 8.0  # per outbound call: a request answers 503 within 10 s of a hang
    # The file store: "gcs" (the default) or "s3", any S3-compatible bucket named `bucket` (Cloudflare R2,
    # Amazon S3, MinIO; docs/operations.md): its API endpoint, its region ("auto" for R2) and whether the
    # bucket is addressed in the path (endpoint/bucket/key) or as a subdomain (bucket.endpoint/key).
    storage: Literal["gcs", "s3"] = "gcs"
    s3_endpoint: str = ""
    s3_region: str = "auto"
    s3_addressing: Literal["path", "virtual"] = "path"

    @property
    def token_issuer(self) -> str:
        return self.public_url

    @property
    def is_production(self) -> bool:
        return self.env is Env.PRODUCTION

    @property
    def paypal_live(self) -> bool:
        return self.paypal_api_base == PAYPAL_LIVE_API

    @property
    def paypal_autopay_url(self) -> str:
        """PayPal's page where a buyer manages (and can cancel) automatic payments."""
        web = {PAYPAL_LIVE_API: "https://www.paypal.com", PAYPAL_SANDBOX_API: "https://www.sandbox.paypal.com"}
        return web.get(self.paypal_api_base, self.paypal_api_base) + "/myaccount/autopay/"

    @property
    def webhook_cert_origins(self) -> tuple[str, ...]:
        """Exact `https://host[:port]` origins a webhook's certificate URL may point at."""
        return PAYPAL_CERT_ORIGINS.get(self.paypal_api_base, ()) + self.paypal_cert_origins

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            typed = _typed(f.name, _FIELD_TYPES[f.name], value)
            if typed is not value:
                object.__setattr__(self, f.name, typed)
        problems = list(self._local_parts()) if self.is_production else []
        if problems:
            raise ConfigError("invalid MLLAB_* settings: " + "; ".join(problems))

    def _local_parts(self) -> Iterator[str]:
        """What a production configuration must not have, one message each."""
        if not self.public_url.startswith("https://"):
            yield f"public_url must be https, got {self.public_url!r}"
        for origin in self.cors_origins:
            if not origin.startswith("https://"):
                yield f"CORS origin must be https: {origin!r}"
        if self.paypal_api_base not in PAYPAL_CERT_ORIGINS:
            yield f"paypal_api_base must be PayPal's live or sandbox API, got {self.paypal_api_base!r}"
        if self.paypal_ca_file is not None:
            yield "paypal_ca_file (the local stand-in's CA) is local-only"
        if self.paypal_cert_origins:
            yield "paypal_cert_origins (extra webhook certificate hosts) is local-only"
        for name in ("lab_url", "oidc_issuer", *(("s3_endpoint",) if self.storage == "s3" else ())):
            if not getattr(self, name).startswith("https://"):
                yield f"{name} must be https (no local stand-in in production)"
        if self.project.startswith("demo-"):
            yield f"project {self.project!r} is an emulator-only project id"


# Each field's type, resolved once (the annotations are strings: `from __future__ import annotations`).
_FIELD_TYPES: dict[str, Any] = typing.get_type_hints(Settings)


def field_names() -> tuple[str, ...]:
    """The settings' names (`MLLAB_<NAME>` in the environment)."""
    return tuple(_FIELD_TYPES)


def _typed(name: str, annotation: Any, value: Any) -> Any:
    """`value` as the field's type: strings from the environment become enums, numbers, paths and tuples
    (comma-separated); a value that is not one of the type's is a ConfigError naming the field."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is types.UnionType:  # Path | None
        if value is None:
            return None
        return _typed(name, next(a for a in args if a is not type(None)), value)
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"invalid MLLAB_* settings: {name} must be one of {', '.join(map(str, args))}")
        return value
    if origin is tuple:
        parts = value.split(",") if isinstance(value, str) else value
        return tuple(str(part).strip() for part in parts if str(part).strip())
    try:
        return value if type(value) is annotation else annotation(value)
    except (TypeError, ValueError):
        raise ConfigError(f"invalid MLLAB_* settings: {name} cannot be {value!r}") from None


def load(environ: Mapping[str, str] | None = None) -> Settings:
    """Build settings from an environment mapping (default `os.environ`)."""
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for field in _FIELD_TYPES:
        raw = environ.get(PREFIX + field.upper())
        if raw is not None:
            values[field] = raw
    values.setdefault("function", environ.get("K_SERVICE") or environ.get("FUNCTION_TARGET", ""))
    # On Cloud Functions (K_SERVICE set) an unset env means production, never local by accident.
    if "env" not in values and environ.get("K_SERVICE"):
        values["env"] = Env.PRODUCTION.value
    settings = Settings(**values)
    if settings.is_production:
        present = [var for var in EMULATOR_VARS if environ.get(var)]
        if present:
            raise ConfigError(f"production refuses emulator settings: {', '.join(present)}")
    return settings


@functools.cache
def settings() -> Settings:
    return load()


def reload() -> Settings:
    """Forget cached settings and secrets (tests change the environment)."""
    settings.cache_clear()
    _secret_manager_value.cache_clear()
    return settings()


# --- secrets -------------------------------------------------------------------------------------

_generate_lock = threading.Lock()


def secret(name: str) -> str:
    """A secret's current value: mounted file first (re-read each call, so `latest` rotates),
    then the local development file, then Secret Manager (cached per process)."""
    s = settings()
    mounted = s.secrets_dir / name
    if mounted.is_dir():  # Cloud Run mounts each secret in its own folder (/secrets/<name>/<name>)
        mounted = mounted / name
    if mounted.is_file():
        return mounted.read_text()
    if not s.is_production:
        return _local_secret(s, name).read_text()
    return _secret_manager_value(s.project, name)


def local_secrets_dir(s: Settings | None = None) -> Path:
    s = s or settings()
    return s.dev_dir / "secrets"


def ensure_local_secrets(s: Settings | None = None) -> Path:
    """Create every development secret that is missing (the stack calls this before starting)."""
    s = s or settings()
    for name in _GENERATORS:
        _local_secret(s, name)
    return local_secrets_dir(s)


def _local_secret(s: Settings, name: str) -> Path:
    if s.is_production:
        raise ConfigError("production never generates secrets")
    path = local_secrets_dir(s) / name
    if path.is_file():
        return path
    if name not in _GENERATORS:
        raise ConfigError(f"secret {name!r} is not set: put it in {path} (`make dev` makes the development ones)")
    with _generate_lock:
        if not path.is_file():
            for target, content in _GENERATORS[name](local_secrets_dir(s)).items():
                write_once(local_secrets_dir(s) / target, content)
    return path


def write_once(path: Path, content: str | bytes, mode: int = 0o600) -> None:
    """Atomic create-if-absent, safe when several processes start at once: the first link wins."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.fchmod(fd, mode)  # exactly `mode`, whatever the umask
        with os.fdopen(fd, "wb") as fh:
            fh.write(content.encode() if isinstance(content, str) else content)
        with contextlib.suppress(FileExistsError):  # another process linked it first: theirs stands
            os.link(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


# Makers of development secrets: {secret name: maker(folder) -> {file name: content}}. The local
# stack installs them (mllab_dev.secrets), so settings import nothing of the domains that own the
# formats; a deployment has none and never generates a secret.
_GENERATORS: dict[str, Callable[[Path], dict[str, str]]] = {}


def install_local_generators(makers: Mapping[str, Callable[[Path], dict[str, str]]]) -> None:
    _GENERATORS.update(makers)


@functools.cache
def _secret_manager_value(project: str, name: str) -> str:
    from mllab.platform import clients

    client = clients.secret_manager()
    version = f"projects/{project}/secrets/{name}/versions/latest"
    response = client.access_secret_version(name=version, **clients.opts())
    return response.payload.data.decode("utf-8")
