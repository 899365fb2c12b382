"""One deployment target and every name derived from it.

Staging and production are two projects with nothing shared: project-scoped resources (service
accounts, topics, functions, the load balancer, secrets, Firestore) live inside their project, and the
only globally named resources, the buckets, carry the project id.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from mllab.api import routes
from mllab.platform import config

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_OUT = ROOT / "build" / "deploy"

_PROJECT_ID = re.compile(r"[a-z][a-z0-9-]{4,28}[a-z0-9]")
_REGION = re.compile(r"[a-z]+(?:-[a-z]+)+[0-9]{1,2}")
_DOMAIN = re.compile(r"(?=.{4,190}$)(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}")
_BILLING_ACCOUNT = re.compile(r"[0-9A-F]{6}-[0-9A-F]{6}-[0-9A-F]{6}")
_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[a-z]{2,63}")
# S3's bucket naming rules (R2's are the same or looser): 3-63 of a-z, 0-9, '.' and '-', alphanumeric ends.
_S3_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_S3_REGION = re.compile(r"[a-z0-9][a-z0-9-]{0,40}")
STORAGES = ("gcs", "s3")
S3_ADDRESSING = ("path", "virtual")
S3_USAGE = "STORAGE=s3 S3_ENDPOINT=https://<host> S3_BUCKET=<bucket> [S3_REGION=auto] [S3_ADDRESSING=path|virtual]"
GCS_ORIGIN = "https://storage.googleapis.com"  # where GCS's signed URLs point
PAYPAL_APIS = {"sandbox": config.PAYPAL_SANDBOX_API, "live": config.PAYPAL_LIVE_API}
USAGE = "make deploy-plan PROJECT=<project id> REGION=<region, e.g. europe-west1> DOMAIN=<domain, e.g. example.com>"

# The functions of a deployment on the default store (GCS); an environment's own are `Environment.functions`.
FUNCTIONS: tuple[routes.Function, ...] = tuple(routes.for_store("gcs"))

# Placeholders the plan shows for optional values it was not given (never a real value).
NO_BILLING_ACCOUNT = "<BILLING_ACCOUNT>"
NO_OAUTH_CLIENT_ID = "<OAUTH_CLIENT_ID>"


class UsageError(ValueError):
    """A missing or malformed argument: the message says which and how to pass it."""


def deployable(env: Environment) -> None:
    """What `apply` needs beyond what a plan needs."""
    if env.project.startswith("demo-"):
        # mllab.platform.config refuses these in production: the functions would not start
        raise UsageError(f"PROJECT {env.project!r}: demo- ids are emulator-only; a plan is fine, a deploy is not")
    if not env.oauth_client_id:
        raise UsageError(
            "OAUTH_CLIENT_ID is needed to deploy: Google sign-in's client id (Google Cloud console > "
            "APIs & Services > Credentials), e.g. OAUTH_CLIENT_ID=1234-abc.apps.googleusercontent.com"
        )


@dataclass(frozen=True)
class Environment:
    project: str
    region: str
    domain: str
    billing_account: str | None = None  # the budget alert needs it; without it the plan shows a placeholder
    oauth_client_id: str | None = None  # Google sign-in's client id (public, not a secret)
    paypal: str = "sandbox"  # "live" for production
    alert_email: str | None = None  # where alerts are mailed; without it they show in the console only
    budget_usd: int = 100  # monthly budget the alert compares spend with
    secrets_from: Path | None = None  # a folder of operator-held secret values (read only while applying)
    out: Path = DEFAULT_OUT
    # The file store: "gcs" (a bucket this plan creates) or "s3", an S3-compatible bucket the operator made
    # (Cloudflare R2, Amazon S3, MinIO): its API endpoint, bucket, region and addressing (mllab.platform.config).
    storage: str = "gcs"
    s3_endpoint: str = ""
    s3_bucket: str = ""
    s3_region: str = "auto"
    s3_addressing: str = "path"

    @property
    def s3(self) -> bool:
        return self.storage == "s3"

    @property
    def functions(self) -> tuple[routes.Function, ...]:
        """The functions this deployment runs: its file store's (the S3 store adds the upload sweep)."""
        return tuple(routes.for_store(self.storage))

    @property
    def store_functions(self) -> tuple[routes.Function, ...]:
        """The functions whose paths use the file store (on S3 they get its credentials and library)."""
        return tuple(routes.store_functions(self.storage))

    @property
    def storage_origin(self) -> str:
        """The origin the lab's signed URLs point at (the lab's CSP connect-src allows it): GCS's, or the S3
        endpoint's, with the bucket as a subdomain when it is addressed virtual-host style."""
        if not self.s3:
            return GCS_ORIGIN
        parts = urlsplit(self.s3_endpoint)
        host = f"{self.s3_bucket}.{parts.netloc}" if self.s3_addressing == "virtual" else parts.netloc
        return f"{parts.scheme}://{host}"

    # --- hosts -----------------------------------------------------------------------------------

    @property
    def api_host(self) -> str:
        return f"api.{self.domain}"

    @property
    def lab_host(self) -> str:
        return f"lab.{self.domain}"

    @property
    def api_url(self) -> str:
        return f"https://{self.api_host}"

    @property
    def lab_url(self) -> str:
        return f"https://{self.lab_host}"

    @property
    def files(self) -> Path:
        """Where this project's generated files go (one folder per project)."""
        return self.out / self.project

    # --- storage and events ------------------------------------------------------------------------

    @property
    def data_bucket(self) -> str:
        """The bucket of the users' files: the S3 bucket given, or the GCS bucket this plan creates."""
        return self.s3_bucket if self.s3 else f"{self.project}-mllab-data"

    @property
    def lab_bucket(self) -> str:
        return f"{self.project}-mllab-lab"

    @property
    def topics(self) -> dict[str, str]:
        """The Settings fields naming topics -> their names (the functions read the same settings)."""
        defaults = config.Settings()
        return {
            "events_topic": defaults.events_topic,
            "purge_topic": defaults.purge_topic,
            "reconcile_topic": defaults.reconcile_topic,
            **({"sweep_topic": defaults.sweep_topic} if self.s3 else {}),
        }

    @property
    def events_topic(self) -> str:
        return self.topics["events_topic"]

    @property
    def dead_letter_topic(self) -> str:
        return f"{self.events_topic}-dead-letter"

    @property
    def dead_letter_hold(self) -> str:
        """The subscription that keeps dead-lettered events until an operator looks at them."""
        return f"{self.events_topic}-dead-letter-hold"

    def scheduler_job(self, topic: str) -> str:
        return f"mllab-{topic}"

    # --- identities --------------------------------------------------------------------------------

    def service_account_id(self, function: str) -> str:
        return "fn-" + function.replace("_", "-")

    def account_email(self, account_id: str) -> str:
        """A service account of this project, by its id."""
        return f"{account_id}@{self.project}.iam.gserviceaccount.com"

    def service_account(self, function: str) -> str:
        return self.account_email(self.service_account_id(function))

    @property
    def invoker_id(self) -> str:
        """Pub/Sub pushes to the event-triggered functions as this identity (it may invoke them, nothing else)."""
        return "mllab-events-invoker"

    @property
    def invoker(self) -> str:
        return self.account_email(self.invoker_id)

    @property
    def build_account_id(self) -> str:
        """Cloud Build builds the functions' images as this account (it may only build, log and push)."""
        return "mllab-builder"

    @property
    def build_account(self) -> str:
        return self.account_email(self.build_account_id)

    def member(self, email: str) -> str:
        return f"serviceAccount:{email}"

    # --- load balancer -----------------------------------------------------------------------------

    def run_service(self, function: str) -> str:
        """Cloud Run's name for a gen2 function (underscores become hyphens)."""
        return function.replace("_", "-")

    def neg(self, function: str) -> str:
        return f"mllab-{self.run_service(function)}-neg"

    def backend(self, function: str) -> str:
        return f"mllab-{self.run_service(function)}-backend"

    def _global_url(self, collection: str, name: str) -> str:
        """The URL a URL map names a global compute resource of this project by."""
        return f"https://www.googleapis.com/compute/v1/projects/{self.project}/global/{collection}/{name}"

    def backend_url(self, function: str) -> str:
        return self._global_url("backendServices", self.backend(function))

    @property
    def lab_backend(self) -> str:
        return "mllab-lab-backend"

    @property
    def lab_backend_url(self) -> str:
        return self._global_url("backendBuckets", self.lab_backend)

    @property
    def share_backend(self) -> str:
        """The lab's bucket again, with the share page's headers (any site may frame it)."""
        return "mllab-share-backend"

    @property
    def share_backend_url(self) -> str:
        return self._global_url("backendBuckets", self.share_backend)

    def certificate(self, host: str) -> str:
        # the host is in the name: a managed certificate's domains cannot change, a new domain gets a new one
        return ("mllab-" + host.replace(".", "-"))[:63].rstrip("-")

    url_map = "mllab-lb"
    http_redirect_map = "mllab-http-redirect"
    https_proxy = "mllab-https-proxy"
    http_proxy = "mllab-http-proxy"
    address = "mllab-lb-ip"
    https_rule = "mllab-https-rule"
    http_rule = "mllab-http-rule"
    ssl_policy = "mllab-tls"
    armor_policy = "mllab-api-armor"
    alert_channel_name = "ML Lab alerts"

    @property
    def budget_name(self) -> str:
        return f"ML Lab {self.project}"

    @property
    def uptime_check(self) -> str:
        return f"ML Lab API {self.api_host}"


def make(project: str | None, region: str | None, domain: str | None, **optional: object) -> Environment:
    """Validate the arguments (all problems at once) and build the environment."""
    missing = [name for name, value in (("PROJECT", project), ("REGION", region), ("DOMAIN", domain)) if not value]
    if missing:
        raise UsageError(f"missing {', '.join(missing)}: {USAGE}")
    assert project and region and domain
    problems = _required_problems(project, region, domain) + _optional_problems(optional) + _storage_problems(optional)
    if problems:
        raise UsageError("; ".join(problems))
    values = {k: v for k, v in optional.items() if v not in (None, "")}
    values["paypal"] = _paypal(optional)
    values["budget_usd"] = int(str(_budget(optional)))
    for key in ("secrets_from", "out"):
        if key in values:
            values[key] = Path(str(values[key]))
    if "s3_endpoint" in values:
        values["s3_endpoint"] = str(values["s3_endpoint"]).rstrip("/")
    return Environment(project=project, region=region, domain=domain, **values)  # type: ignore[arg-type]


def _paypal(optional: dict[str, object]) -> object:
    """PAYPAL as given, sandbox when not."""
    return optional.get("paypal") or "sandbox"


def _budget(optional: dict[str, object]) -> object:
    """BUDGET as given (not yet checked to be a number), 100 US dollars when not."""
    return optional.get("budget_usd") or 100


def _required_problems(project: str, region: str, domain: str) -> list[str]:
    """What is wrong with PROJECT, REGION and DOMAIN, in that order."""
    problems = []
    if not _PROJECT_ID.fullmatch(project):
        problems.append(f"PROJECT {project!r} is not a Google Cloud project id (6-30 of a-z, 0-9, -)")
    if not _REGION.fullmatch(region):
        problems.append(f"REGION {region!r} is not a region name such as europe-west1")
    if not _DOMAIN.fullmatch(domain):
        problems.append(
            f"DOMAIN {domain!r} is not a lower-case domain such as example.com (the lab is lab.DOMAIN, "
            "the API api.DOMAIN)"
        )
    return problems


def _optional_problems(optional: dict[str, object]) -> list[str]:
    """What is wrong with the optional settings that were given (BILLING_ACCOUNT, PAYPAL, ALERT_EMAIL, BUDGET)."""
    problems = []
    billing = optional.get("billing_account")
    if billing and not _BILLING_ACCOUNT.fullmatch(str(billing)):
        problems.append(f"BILLING_ACCOUNT {billing!r} is not an id such as 012345-6789AB-CDEF01")
    paypal = _paypal(optional)
    if paypal not in PAYPAL_APIS:
        problems.append(f"PAYPAL must be one of {', '.join(PAYPAL_APIS)}, got {paypal!r}")
    email = optional.get("alert_email")
    if email and not _EMAIL.fullmatch(str(email)):
        problems.append(f"ALERT_EMAIL {email!r} is not an email address")
    budget = _budget(optional)
    if not str(budget).isdigit() or int(str(budget)) < 1:
        problems.append(f"BUDGET must be a whole number of US dollars, got {budget!r}")
    return problems


def _storage_problems(optional: dict[str, object]) -> list[str]:
    """What is wrong with STORAGE and the S3 store's settings (all needed for s3, none for gcs)."""
    storage = optional.get("storage") or "gcs"
    given = {k: str(v) for k, v in optional.items() if k.startswith("s3_") and v not in (None, "")}
    if storage not in STORAGES:
        return [f"STORAGE must be one of {', '.join(STORAGES)}, got {storage!r}"]
    if storage == "gcs":
        extra = sorted(k.upper() for k in given)
        return [f"{', '.join(extra)} only apply with STORAGE=s3 ({S3_USAGE})"] if extra else []
    missing = [k.upper() for k in ("s3_endpoint", "s3_bucket") if k not in given]
    if missing:
        return [f"STORAGE=s3 needs {' and '.join(missing)}: {S3_USAGE}"]
    problems = []
    endpoint = urlsplit(given["s3_endpoint"])
    if (
        endpoint.scheme != "https"
        or not endpoint.hostname
        or given["s3_endpoint"].rstrip("/") != (f"https://{endpoint.netloc}")
    ):
        problems.append(
            f"S3_ENDPOINT {given['s3_endpoint']!r} is not https://host[:port] (the S3 API endpoint, no path), e.g. "
            "https://<ACCOUNT_ID>.r2.cloudflarestorage.com"
        )
    if not _S3_BUCKET.fullmatch(given["s3_bucket"]) or ".." in given["s3_bucket"]:
        problems.append(f"S3_BUCKET {given['s3_bucket']!r} is not a bucket name (3-63 of a-z, 0-9, '.', '-')")
    region = given.get("s3_region", "auto")
    if not _S3_REGION.fullmatch(region):
        problems.append(f"S3_REGION {region!r} is not a region name such as auto or us-east-1")
    addressing = given.get("s3_addressing", "path")
    if addressing not in S3_ADDRESSING:
        problems.append(f"S3_ADDRESSING must be one of {', '.join(S3_ADDRESSING)}, got {addressing!r}")
    return problems
