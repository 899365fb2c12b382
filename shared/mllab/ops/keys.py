"""The access-token key sets where they are kept, for `mllab keys rotate | list | prune`.

Locally: the files under `.dev/secrets/` (the stack's functions re-read them). With a project: new
versions of the Secret Manager secrets, which the functions mount as files at `latest`. The public
set is always derived from the private set and written first, so no verifier meets a token signed
by a key it cannot find (beyond its rate-limited re-read). Nothing here prints or logs key material.
"""

from __future__ import annotations

import json
import os
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from mllab.identity import tokens
from mllab.platform import clock, config


class Store(Protocol):
    @property
    def where(self) -> str: ...

    def read(self) -> dict[str, Any]: ...

    def write(self, private_set: dict[str, Any]) -> None: ...


def _in_write_order(private_set: dict[str, Any]) -> tuple[tuple[str, str], ...]:
    """(secret name, content) of both secrets, public set first: no verifier meets a token signed by a
    key it cannot find."""
    return (
        (config.PUBLIC_KEYS, json.dumps(tokens.public_key_set(private_set), indent=1)),
        (config.SIGNING_KEYS, json.dumps(private_set, indent=1)),
    )


def replace_file(path: Path, content: str, mode: int = 0o600) -> None:
    """Atomic replace (readers see the old file or the new one, never half of one), mode exactly `mode`."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "w") as fh:
            fh.write(content)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _local_secrets() -> Path:
    # The development key set is made by the local stack's code (an operator tool may use it; a
    # function never does).
    from mllab_dev import secrets

    return secrets.ensure()


@dataclass
class LocalStore:
    """The development secrets (generated on first use, as the stack does)."""

    directory: Path = field(default_factory=lambda: _local_secrets())

    @property
    def where(self) -> str:
        return str(self.directory)

    def read(self) -> dict[str, Any]:
        return json.loads((self.directory / config.SIGNING_KEYS).read_text())

    def write(self, private_set: dict[str, Any]) -> None:
        for secret, content in _in_write_order(private_set):
            replace_file(self.directory / secret, content)


@dataclass
class SecretManagerStore:
    """A real project: the operator's credentials need accessor and version-adder on both secrets."""

    project: str

    @property
    def where(self) -> str:
        return f"Secret Manager, project {self.project}"

    def _name(self, secret: str) -> str:
        return f"projects/{self.project}/secrets/{secret}"

    def read(self) -> dict[str, Any]:
        from google.api_core.exceptions import FailedPrecondition, NotFound

        from mllab.platform import clients

        try:
            response = clients.secret_manager().access_secret_version(
                name=f"{self._name(config.SIGNING_KEYS)}/versions/latest", **clients.opts()
            )
        except (NotFound, FailedPrecondition):  # no enabled version yet: the first rotate creates the first key
            if not self._exists(config.SIGNING_KEYS):
                raise config.ConfigError(
                    f"secret {config.SIGNING_KEYS} does not exist in project {self.project} (make deploy creates it)"
                ) from None
            return {"keys": []}
        return json.loads(response.payload.data.decode("utf-8"))

    def _exists(self, secret: str) -> bool:
        from google.api_core.exceptions import NotFound

        from mllab.platform import clients

        try:
            clients.secret_manager().get_secret(name=self._name(secret), **clients.opts())
            return True
        except NotFound:
            return False

    def write(self, private_set: dict[str, Any]) -> None:
        from mllab.platform import clients

        client = clients.secret_manager()
        for secret, content in _in_write_order(private_set):
            client.add_secret_version(parent=self._name(secret), payload={"data": content.encode()}, **clients.opts())


def store(project: str | None) -> Store:
    return SecretManagerStore(project) if project else LocalStore()


# --- what an operator sees: kids and dates only --------------------------------------------------


def _date(ts: int | None) -> str | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


def describe(jwk: dict[str, Any]) -> dict[str, Any]:
    """A key as the CLI shows it: never `d`, `x` or `y`."""
    until = tokens.published_until(jwk)
    if until is None:
        state = "signing"
    elif until > clock.timestamp():
        state = "retired (published)"
    else:
        state = "expired (prune drops it)"
    return {
        "kid": jwk["kid"],
        "state": state,
        "created": _date(jwk.get("created_at")),
        "retired": _date(jwk.get("retired_at")),
        "published_until": _date(until),
    }


def listing(key_store: Store) -> list[dict[str, Any]]:
    return [describe(k) for k in key_store.read().get("keys", [])]


def rotate(key_store: Store) -> dict[str, Any]:
    """Add a signing key, retire the others, drop those whose tokens have all expired; write once."""
    before = key_store.read()
    rotated = tokens.rotate(before)
    kept, dropped = tokens.prune(rotated)
    key_store.write(kept)
    new = kept["keys"][-1]
    was_signing = {k["kid"] for k in before.get("keys", []) if "retired_at" not in k}
    return {
        "where": key_store.where,
        "signing": describe(new),
        "retired": [describe(k) for k in kept["keys"] if k["kid"] in was_signing],
        "dropped": [describe(k) for k in dropped],
    }


def prune(key_store: Store) -> dict[str, Any]:
    kept, dropped = tokens.prune(key_store.read())
    if dropped:
        key_store.write(kept)
    return {
        "where": key_store.where,
        "dropped": [describe(k) for k in dropped],
        "kept": [describe(k) for k in kept["keys"]],
    }
