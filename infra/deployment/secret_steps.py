"""Secret Manager: each secret created if missing, a first value added while it has none, and the
accessor role granted per secret to exactly the functions that read it.

Values never appear in a command or in output: they are produced in memory (new key sets), derived
from a stored secret read into memory, or read from the operator's SECRETS_FROM folder (the S3 store's
token also from the environment of `make deploy`), and passed to
`gcloud secrets versions add NAME --data-file=-` on stdin. Later values come from the operator's
tools (`mllab keys rotate`, `mllab billing bootstrap`), never from a redeploy.
"""

from __future__ import annotations

import json
import os

from deployment import access
from deployment.environment import Environment
from deployment.steps import Context, DeployError, Probe, SecretValue, Step, gcloud
from mllab.identity import sessions
from mllab.platform import config


def _new_key_set(ctx: Context) -> bytes:
    from mllab.identity import tokens

    return json.dumps(tokens.new_key_set(), indent=1).encode()


def _new_session_keys(ctx: Context) -> bytes:
    return sessions.new_key_set().encode()


def read_secret(env: Environment, name: str) -> tuple[str, ...]:
    """The command that reads a stored secret's latest value (its output is kept in memory only)."""
    return gcloud(env.project, "secrets", "versions", "access", "latest", f"--secret={name}")


def read_signing_keys(env: Environment) -> tuple[str, ...]:
    """The command that reads the stored private key set."""
    return read_secret(env, config.SIGNING_KEYS)


def _stored_s3_credentials(ctx: Context) -> bytes:
    """The S3 token stored in Secret Manager (read into memory, passed on stdin, never shown)."""
    read = ctx.runner(read_secret(ctx.env, config.S3_CREDENTIALS), capture=True)
    if read.returncode != 0:
        raise DeployError(f"could not read {config.S3_CREDENTIALS} from Secret Manager to set the bucket's CORS")
    return read.stdout.encode()


STORED_S3_CREDENTIALS = SecretValue(
    f"<{config.S3_CREDENTIALS}:latest, read from Secret Manager>", _stored_s3_credentials
)


def _public_from_stored_private(ctx: Context) -> bytes:
    """The public set of the private set stored in Secret Manager (read into memory, never shown)."""
    from mllab.identity import tokens

    read = ctx.runner(read_signing_keys(ctx.env), capture=True)
    if read.returncode != 0:
        raise DeployError(f"could not read {config.SIGNING_KEYS} to derive its public key set")
    return json.dumps(tokens.public_key_set(json.loads(read.stdout)), indent=1).encode()


# The S3 store's keys may also come from the environment of `make deploy` (never from its arguments).
S3_KEY_VARS = ("S3_ACCESS_KEY_ID", "S3_SECRET_ACCESS_KEY")


def _held(secret: access.Secret, ctx: Context) -> bytes | None:
    folder = ctx.env.secrets_from
    path = folder / secret.name if folder else None
    return path.read_bytes() if path and path.is_file() else None


def _s3_credentials(ctx: Context) -> bytes | None:
    """The S3 token as the functions read it (mllab.files.s3): SECRETS_FROM/s3-credentials, or else
    S3_ACCESS_KEY_ID and S3_SECRET_ACCESS_KEY from the environment, checked without ever showing it."""
    held = _held(access.S3_SECRET, ctx)
    if held is None:
        key_id, secret_key = (os.environ.get(var, "") for var in S3_KEY_VARS)
        if not (key_id or secret_key):
            return None
        held = json.dumps({"access_key_id": key_id, "secret_access_key": secret_key}).encode()
    try:
        keys = json.loads(held)
        well_formed = all(isinstance(keys.get(k), str) and keys[k] for k in ("access_key_id", "secret_access_key"))
    except (ValueError, AttributeError):
        well_formed = False
    if not well_formed:
        raise DeployError(
            f"{config.S3_CREDENTIALS} must be JSON with non-empty access_key_id and secret_access_key "
            f"(or set both {' and '.join(S3_KEY_VARS)})"
        )
    return held


def _from_operator(secret: access.Secret, env: Environment) -> SecretValue:
    if secret.source == "s3":
        return SecretValue(
            placeholder=f"<SECRETS_FROM/{secret.name}, or {' + '.join(S3_KEY_VARS)} from the environment>",
            produce=_s3_credentials,
            missing=(
                f'{secret.name}: {secret.what}; put {{"access_key_id": "...", "secret_access_key": "..."}} in '
                f"SECRETS_FROM/{secret.name}, or export {' and '.join(S3_KEY_VARS)} before `make deploy`"
            ),
        )

    def produce(ctx: Context) -> bytes | None:
        return _held(secret, ctx)

    if secret.source == "bootstrap":
        how = (
            f"run `mllab billing bootstrap --project {env.project} --webhook-url "
            f"{env.api_url}/payments/paypal/webhook` and store what it prints"
        )
    else:
        how = (
            f"put it in a file and run `gcloud secrets versions add {secret.name} --project={env.project} "
            "--data-file=FILE`"
        )
    return SecretValue(
        placeholder=f"<SECRETS_FROM/{secret.name}>",
        produce=produce,
        missing=f"{secret.name}: {secret.what}; {how} (or pass SECRETS_FROM=<folder holding {secret.name}>)",
    )


def value_source(secret: access.Secret, env: Environment) -> SecretValue:
    if secret.source == "generated" and secret.name == config.SIGNING_KEYS:
        return SecretValue("<a new ES256 key set, generated in memory>", _new_key_set)
    if secret.source == "generated":
        return SecretValue("<new random session keys, generated in memory>", _new_session_keys)
    if secret.source == "derived":
        return SecretValue(f"<the public half of {config.SIGNING_KEYS}:latest>", _public_from_stored_private)
    return _from_operator(secret, env)


def secret_steps(env: Environment) -> list[Step]:
    p = env.project
    steps = []
    for secret in access.secrets(env):
        name = secret.name
        steps.append(
            Step(
                "Secrets",
                f"Secret {name}: {secret.what}.",
                gcloud(p, "secrets", "create", name, "--replication-policy=automatic", "--labels=app=mllab"),
                probe=Probe(gcloud(p, "secrets", "describe", name, "--format=value(name)")),
            )
        )
        source = value_source(secret, env)
        steps.append(
            Step(
                "Secrets",
                f"First value of {name}, only while it has none (stdin, never in a command line).",
                gcloud(p, "secrets", "versions", "add", name, "--data-file=-"),
                probe=Probe(
                    gcloud(
                        p,
                        "secrets",
                        "versions",
                        "list",
                        name,
                        "--filter=state=ENABLED",
                        "--limit=1",
                        "--format=value(name)",
                    )
                ),
                stdin=source,
            )
        )
    for secret in access.secrets(env):
        for reader in access.readers(env, secret.name):
            email = env.service_account(reader)
            steps.append(
                Step(
                    "Secrets",
                    f"{reader} may read {secret.name} (this secret only).",
                    gcloud(
                        p,
                        "secrets",
                        "add-iam-policy-binding",
                        secret.name,
                        f"--member={env.member(email)}",
                        "--role=roles/secretmanager.secretAccessor",
                    ),
                )
            )
    steps.append(
        Step("Secrets", "Every secret a function mounts must have a value before the functions deploy.", gate=True)
    )
    return steps
