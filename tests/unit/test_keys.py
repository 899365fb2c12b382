"""Access-token key rotation (docs/operations.md, runbook): a new key signs at once, a retired key stays published
until every token it signed has expired, then prune drops it; the CLI never shows key material."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import jwt
import pytest

from mllab.identity import tokens
from mllab.ops import cli, keys
from mllab.platform import clients, clock, config
from tests.unit.helpers import private_key_set


def _kid(token: str) -> str:
    return jwt.get_unverified_header(token)["kid"]


def _secret_values(key_set: dict[str, Any]) -> set[str]:
    """Every piece of key material in a set: private scalars and public coordinates."""
    return {k[m] for k in key_set["keys"] for m in ("d", "x", "y") if m in k}


def _rotate_locally() -> dict[str, Any]:
    result = keys.rotate(keys.LocalStore())
    tokens.reset_caches()  # a fresh instance (or one past SIGNER_REFRESH_S) reads the new set
    return result


def test_grace_covers_signer_refresh_token_lifetime_and_skew() -> None:
    assert tokens.retired_grace_s() == tokens.SIGNER_REFRESH_S + config.LIMITS.access_token_ttl_s + tokens.IAT_LEEWAY_S


def test_rotate_signs_with_the_new_key_at_once_and_keeps_the_old_one_published() -> None:
    old_kid = private_key_set()["keys"][0]["kid"]
    old_token = tokens.issue_access_token("user-1", "s1").token
    result = _rotate_locally()
    new_kid = result["signing"]["kid"]
    assert new_kid != old_kid and [k["kid"] for k in result["retired"]] == [old_kid] and result["dropped"] == []

    new_token = tokens.issue_access_token("user-2", "s2").token
    assert _kid(new_token) == new_kid
    assert tokens.verify_access_token(old_token)["sub"] == "user-1"
    assert tokens.verify_access_token(new_token)["sub"] == "user-2"
    assert [k["kid"] for k in tokens.public_jwks()["keys"]] == [old_kid, new_kid]
    # the served JWKS carries public members only (no dates, never `d`)
    assert all(set(k) <= set(tokens.PUBLIC_MEMBERS) for k in tokens.public_jwks()["keys"])
    public = json.loads((config.local_secrets_dir() / config.PUBLIC_KEYS).read_text())
    assert all("d" not in k for k in public["keys"])
    assert public == tokens.public_key_set(private_key_set())


def test_the_retired_key_is_published_until_its_last_token_expires_then_pruned() -> None:
    old_token = tokens.issue_access_token("user-1", "s1").token
    old_kid = _kid(old_token)
    new_kid = _rotate_locally()["signing"]["kid"]
    retired_at = private_key_set()["keys"][0]["retired_at"]
    assert keys.prune(keys.LocalStore())["dropped"] == []
    grace = tokens.retired_grace_s()

    with clock.travel(by=timedelta(seconds=grace - 5)):
        assert keys.prune(keys.LocalStore())["dropped"] == []
        assert keys.listing(keys.LocalStore())[0]["state"] == "retired (published)"
    with clock.travel(by=timedelta(seconds=grace + 2)):
        assert keys.listing(keys.LocalStore())[0]["state"] == "expired (prune drops it)"
        result = keys.prune(keys.LocalStore())
        assert [k["kid"] for k in result["dropped"]] == [old_kid]
        assert result["dropped"][0]["retired"] == clock.rfc3339(datetime.fromtimestamp(retired_at, UTC))
        assert [k["kid"] for k in result["kept"]] == [new_kid]
    tokens.reset_caches()
    assert [k["kid"] for k in tokens.public_jwks()["keys"]] == [new_kid]
    assert [k["kid"] for k in private_key_set()["keys"]] == [new_kid]
    with pytest.raises(tokens.TokenError, match="unknown key"):
        tokens.verify_access_token(old_token)


def test_a_later_rotate_drops_keys_retired_past_the_grace() -> None:
    first = private_key_set()["keys"][0]["kid"]
    second = _rotate_locally()["signing"]["kid"]
    with clock.travel(by=timedelta(seconds=tokens.retired_grace_s() + 1)):
        result = _rotate_locally()
    assert [k["kid"] for k in result["dropped"]] == [first]
    assert [k["kid"] for k in result["retired"]] == [second]
    assert [k["kid"] for k in private_key_set()["keys"]] == [second, result["signing"]["kid"]]


def test_the_signer_never_picks_a_retired_key() -> None:
    """Even when a retired key's created_at is later (clocks of two operators' machines)."""
    retired, current = tokens.new_private_jwk(), tokens.new_private_jwk()
    retired["created_at"], current["created_at"] = 2_000, 1_000
    retired["retired_at"] = 2_100
    keys.LocalStore().write({"keys": [retired, current]})
    assert _kid(tokens.issue_access_token("u", "s").token) == current["kid"]


def test_rotated_files_replace_atomically_with_owner_only_mode() -> None:
    _rotate_locally()
    directory = config.local_secrets_dir()
    for name in (config.SIGNING_KEYS, config.PUBLIC_KEYS):
        assert (directory / name).stat().st_mode & 0o777 == 0o600
    assert not [p for p in directory.iterdir() if p.name.endswith(".tmp")]


# --- the CLI -------------------------------------------------------------------------------------


@pytest.fixture
def local_target(monkeypatch: pytest.MonkeyPatch) -> None:
    # setenv first, so monkeypatch removes afterwards what configure_target writes
    for name in (
        "FIRESTORE_EMULATOR_HOST",
        "MLLAB_PROJECT",
        "GOOGLE_CLOUD_PROJECT",
        "MLLAB_PAYPAL_API_BASE",
        "MLLAB_PAYPAL_CA_FILE",
    ):
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)


def test_cli_rotate_list_prune_print_kids_and_dates_never_key_material(
    local_target: None, capsys: pytest.CaptureFixture[str]
) -> None:
    before = private_key_set()
    assert cli.main(["keys", "rotate"]) == 0  # no Firestore emulator is running: keys need none
    rotated = out = capsys.readouterr()
    after = private_key_set()
    new_kid = after["keys"][-1]["kid"]
    assert f"new signing key {new_kid}" in out.out
    assert f"retired {before['keys'][0]['kid']}" in out.out and "published until" in out.out

    assert cli.main(["keys", "list", "--json"]) == 0
    listed = capsys.readouterr()
    rows = json.loads(listed.out)["keys"]
    assert [(r["kid"], r["state"]) for r in rows] == [
        (before["keys"][0]["kid"], "retired (published)"),
        (new_kid, "signing"),
    ]
    assert cli.main(["keys", "prune"]) == 0
    pruned = capsys.readouterr()
    assert "nothing to drop" in pruned.out

    printed = "".join(o.out + o.err for o in (rotated, listed, pruned))
    for value in _secret_values(after):
        assert value not in printed
    assert '"d"' not in printed and "BEGIN" not in printed


def test_cli_keys_commands_parse() -> None:
    parser = cli.build_parser()
    assert parser.parse_args(["keys", "rotate"]).run is cli.cmd_keys_rotate
    assert parser.parse_args(["keys", "prune", "--project", "p"]).project == "p"
    assert parser.parse_args(["--json", "keys", "list"]).json is True


# --- Secret Manager (a fake client: the calls and their order) ------------------------------------


class FakeSecretManager:
    def __init__(self, versions: dict[str, list[bytes]], secrets: set[str] | None = None) -> None:
        self.versions = versions
        self.secrets = secrets if secrets is not None else set(versions)
        self.added: list[tuple[str, bytes]] = []

    def access_secret_version(self, *, name: str, **_: Any) -> Any:
        from google.api_core.exceptions import NotFound

        secret = name.split("/")[3]
        if not self.versions.get(secret):
            raise NotFound(f"{name} has no versions")
        return SimpleNamespace(payload=SimpleNamespace(data=self.versions[secret][-1]))

    def get_secret(self, *, name: str, **_: Any) -> Any:
        from google.api_core.exceptions import NotFound

        if name.split("/")[3] not in self.secrets:
            raise NotFound(name)
        return SimpleNamespace(name=name)

    def add_secret_version(self, *, parent: str, payload: dict[str, bytes], **_: Any) -> None:
        assert parent.startswith("projects/prod-1/secrets/")
        self.added.append((parent.split("/")[3], payload["data"]))
        self.versions.setdefault(parent.split("/")[3], []).append(payload["data"])


def _fake(monkeypatch: pytest.MonkeyPatch, fake: FakeSecretManager) -> FakeSecretManager:
    monkeypatch.setattr(clients, "secret_manager", lambda: fake)
    return fake


def test_secret_manager_rotate_adds_public_then_private_versions(monkeypatch: pytest.MonkeyPatch) -> None:
    current = tokens.new_key_set()
    fake = _fake(
        monkeypatch,
        FakeSecretManager({config.SIGNING_KEYS: [json.dumps(current).encode()], config.PUBLIC_KEYS: [b"{}"]}),
    )
    result = keys.rotate(keys.store("prod-1"))
    assert result["where"] == "Secret Manager, project prod-1"
    assert [name for name, _ in fake.added] == [config.PUBLIC_KEYS, config.SIGNING_KEYS]  # publish before signing
    public, private = (json.loads(data) for _, data in fake.added)
    assert [k["kid"] for k in public["keys"]] == [current["keys"][0]["kid"], result["signing"]["kid"]]
    assert all("d" not in k for k in public["keys"])
    assert public == tokens.public_key_set(private)


def test_secret_manager_first_rotate_creates_the_first_key(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = _fake(monkeypatch, FakeSecretManager({}, secrets={config.SIGNING_KEYS, config.PUBLIC_KEYS}))
    result = keys.rotate(keys.store("prod-1"))
    assert result["retired"] == [] and result["dropped"] == []
    assert [k["kid"] for k in json.loads(fake.added[-1][1])["keys"]] == [result["signing"]["kid"]]


def test_secret_manager_missing_secret_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    _fake(monkeypatch, FakeSecretManager({}, secrets=set()))
    with pytest.raises(config.ConfigError, match="does not exist"):
        keys.rotate(keys.store("prod-1"))


def test_secret_manager_prune_writes_nothing_when_nothing_expired(monkeypatch: pytest.MonkeyPatch) -> None:
    rotated = tokens.rotate(tokens.new_key_set())
    fake = _fake(monkeypatch, FakeSecretManager({config.SIGNING_KEYS: [json.dumps(rotated).encode()]}))
    assert keys.prune(keys.store("prod-1"))["dropped"] == []
    assert fake.added == []
