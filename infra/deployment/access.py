"""Least privilege: what each function's service account may read, write and sign, and why.

Firestore access is project-wide (`roles/datastore.user`: IAM has no per-collection grant), given to
every function whose route table entry says it uses Firestore. Bucket roles are granted on the data
bucket only. Each secret's accessor role is granted on that secret only, to the functions that read
it, and only those functions get it mounted. On an S3-compatible store, IAM does not reach the bucket:
its credentials (one secret) go to the functions that use the store, and those that write it publish
the object events themselves (mllab.files.notify), so they may publish to the events topic.
tests/unit/test_deploy_plan.py checks these tables against the route table and against which mllab
modules each function can reach.
"""

from __future__ import annotations

from dataclasses import dataclass

from deployment import environment
from deployment.environment import Environment
from mllab.platform import config


@dataclass(frozen=True)
class Secret:
    name: str
    what: str
    source: str  # generated | derived | operator | bootstrap


SECRETS: tuple[Secret, ...] = (
    Secret(config.SIGNING_KEYS, "the ES256 private key set that signs access tokens", "generated"),
    Secret(config.PUBLIC_KEYS, "the public key set every function verifies access tokens with", "derived"),
    Secret(config.SESSION_KEYS, "master keys for refresh-token and CSRF-token HMACs", "generated"),
    Secret(config.OAUTH_CLIENT_SECRET, "the Google OAuth client secret (Google sign-in)", "operator"),
    Secret(config.SMTP_URL, "smtps://user:password@host:port of the mail relay", "operator"),
    Secret(config.PAYPAL_CLIENT, 'the PayPal REST app: {"client_id", "client_secret"}', "operator"),
    Secret(config.PAYPAL_IDS, 'product, plan and webhook ids: `mllab billing bootstrap` prints them', "bootstrap"),
)
S3_SECRET = Secret(
    config.S3_CREDENTIALS, 'the S3-compatible bucket\'s API token: {"access_key_id", "secret_access_key"}', "s3"
)


def secrets(env: Environment) -> tuple[Secret, ...]:
    """The secrets this deployment stores: the S3 store adds its credentials."""
    return (*SECRETS, S3_SECRET) if env.s3 else SECRETS


# Which secrets each function's paths read (mllab.platform.config.secret call sites reachable from its routes).
READS: dict[str, tuple[str, ...]] = {
    "jwks": (config.PUBLIC_KEYS,),  # publishes it
    "auth_google_login": (),  # the client id is a setting; the secret is only needed for the code exchange
    "auth_google_callback": (config.OAUTH_CLIENT_SECRET, config.SESSION_KEYS),  # code exchange, new session
    "auth_password": (config.SIGNING_KEYS, config.PUBLIC_KEYS, config.SESSION_KEYS, config.SMTP_URL),
    "auth_refresh": (config.SIGNING_KEYS, config.SESSION_KEYS),  # rotates the cookie, signs a new token
    "auth_logout": (config.SESSION_KEYS,),  # finds the session by its refresh token
    "account": (config.PUBLIC_KEYS, config.SESSION_KEYS, config.PAYPAL_CLIENT, config.SMTP_URL),  # deletion cancels
    "catalog": (config.PUBLIC_KEYS, config.SESSION_KEYS),
    "signed_urls": (config.PUBLIC_KEYS, config.SESSION_KEYS),
    "on_object_finalized": (),
    "purge_accounts": (),
    "billing": (config.PUBLIC_KEYS, config.SESSION_KEYS, config.PAYPAL_CLIENT, config.PAYPAL_IDS, config.SMTP_URL),
    "paypal_webhook": (config.PAYPAL_IDS, config.PAYPAL_CLIENT, config.SMTP_URL),  # verify, resync, dunning mail
    "promo_apply": (config.PUBLIC_KEYS, config.SESSION_KEYS),
    "reconcile_subscriptions": (config.PAYPAL_CLIENT, config.SMTP_URL),  # re-reads at PayPal, access-ending mail
    "sweep_uploads": (),  # deployed only with an S3-compatible store, whose credentials `reads` adds
    "deployments": (config.PUBLIC_KEYS, config.SESSION_KEYS),
    "predict": (),  # API keys are SHA-256 digests compared in constant time: no secret is involved
}

# Bucket role per function that uses storage: each of them deletes objects (a record's files, a rule-
# breaking upload, a purged account's files) and the signer's URLs create and overwrite them, which
# needs storage.objects.delete, so objectAdmin; nobody gets bucket-level admin. The serving functions
# only read a model's two files (and the share page's signed GET URLs only read), so objectViewer; on S3
# they are the store's functions that publish no object event (they delete nothing).
READ_ONLY_BUCKET = frozenset({"deployments", "predict"})
VIEWER_ROLE, ADMIN_ROLE = "roles/storage.objectViewer", "roles/storage.objectAdmin"
BUCKET_ROLES: dict[str, str] = {
    fn.name: VIEWER_ROLE if fn.name in READ_ONLY_BUCKET else ADMIN_ROLE
    for fn in environment.FUNCTIONS
    if "storage" in fn.uses
}

# The functions that sign URLs through IAM signBlob as themselves: token creator on their own account
# only (deployments: a share page's GET URLs of a model's files).
SIGNERS = frozenset({"signed_urls", "deployments"})

FIRESTORE_ROLE = "roles/datastore.user"
PUBLISHER_ROLE = "roles/pubsub.publisher"


def reads(env: Environment, function: str) -> tuple[str, ...]:
    """The secrets this function reads in this deployment: READS, plus the S3 store's credentials when it
    uses that store."""
    store = env.s3 and function in {fn.name for fn in env.store_functions}
    return (*READS[function], config.S3_CREDENTIALS) if store else READS[function]


def readers(env: Environment, secret: str) -> list[str]:
    return [fn.name for fn in env.functions if secret in reads(env, fn.name)]


def bucket_roles(env: Environment) -> dict[str, str]:
    """IAM on the data bucket: a GCS bucket's only (an S3-compatible store knows only its own tokens)."""
    return {} if env.s3 else BUCKET_ROLES


def signers(env: Environment) -> frozenset[str]:
    """Who signs through IAM signBlob: nobody on S3, whose URLs are presigned with the store's secret key."""
    return frozenset() if env.s3 else SIGNERS


def event_publishers(env: Environment) -> list[str]:
    """On S3, the store's functions that create or delete objects publish their object events to the
    events topic (completion and sweep: OBJECT_FINALIZE; deletes: OBJECT_DELETE). On GCS the bucket does."""
    if not env.s3:
        return []
    return [fn.name for fn in env.store_functions if fn.name not in READ_ONLY_BUCKET]


def firestore_users(env: Environment) -> list[str]:
    return [fn.name for fn in env.functions if "firestore" in fn.uses]


def mount_path(secret: str) -> str:
    # One folder per secret: a mounted secret shadows its whole folder (mllab.platform.config.secret reads both).
    return f"{config.Settings().secrets_dir}/{secret}/{secret}"
