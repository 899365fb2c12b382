"""Development secrets, made on first use into `.dev/secrets/` (never in a deployment, which takes
them from Secret Manager). Each maker writes files in the format the module that reads them owns:
token signing keys (mllab.identity.tokens), the local URL signer (mllab.files.storage), session keys
(mllab.identity.sessions), the OIDC stand-in's client secret, the PayPal stand-in's credentials."""

from __future__ import annotations

import json
from pathlib import Path

from mllab.platform import config


def _signing_keys(directory: Path) -> dict[str, str]:
    from mllab.identity import tokens

    config.write_once(directory / config.SIGNING_KEYS, json.dumps(tokens.new_key_set(), indent=1))
    # Derive the public set from the private set that won the race (or an earlier run left), so the
    # pair always matches even when another process wrote the private file first.
    private = json.loads((directory / config.SIGNING_KEYS).read_text())
    return {config.PUBLIC_KEYS: json.dumps(tokens.public_key_set(private), indent=1)}


def _dev_signer(directory: Path) -> dict[str, str]:
    from mllab.files import storage

    return {config.DEV_SIGNER: json.dumps(storage.new_dev_service_account(config.settings().project), indent=1)}


def _session_keys(directory: Path) -> dict[str, str]:
    from mllab.identity import sessions

    return {config.SESSION_KEYS: sessions.new_key_set()}


def _oauth_client_secret(directory: Path) -> dict[str, str]:
    import secrets as pysecrets

    return {config.OAUTH_CLIENT_SECRET: pysecrets.token_urlsafe(24)}


def _paypal_client(directory: Path) -> dict[str, str]:
    """Credentials the local PayPal stand-in accepts (it reads the same file)."""
    import secrets as pysecrets

    creds = {"client_id": "local-" + pysecrets.token_hex(8), "client_secret": pysecrets.token_urlsafe(24)}
    return {config.PAYPAL_CLIENT: json.dumps(creds, indent=1)}


MAKERS = {
    config.SIGNING_KEYS: _signing_keys,
    config.PUBLIC_KEYS: _signing_keys,
    config.DEV_SIGNER: _dev_signer,
    config.SESSION_KEYS: _session_keys,
    config.OAUTH_CLIENT_SECRET: _oauth_client_secret,
    config.PAYPAL_CLIENT: _paypal_client,
}


def install() -> None:
    """Let mllab.platform.config make any missing development secret on first use."""
    config.install_local_generators(MAKERS)


def ensure(settings: config.Settings | None = None) -> Path:
    """Every development secret, made where missing (the stack calls this before it starts)."""
    install()
    return config.ensure_local_secrets(settings)
