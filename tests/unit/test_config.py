"""Typed settings and secrets (mllab.platform.config)."""

from __future__ import annotations

import json
import stat
import threading
import types
from pathlib import Path
from typing import Any

import pytest

from mllab.identity import tokens
from mllab.platform import clients, config

PRODUCTION = {
    "MLLAB_ENV": "production",
    "MLLAB_PROJECT": "mllab-prod",
    "MLLAB_PUBLIC_URL": "https://lab.example.com",
    "MLLAB_CORS_ORIGINS": "https://lab.example.com",
    "MLLAB_LAB_URL": "https://lab.example.com",
    "MLLAB_OIDC_ISSUER": "https://accounts.google.com",
}


# --- load() --------------------------------------------------------------------------------------


def test_defaults_from_an_empty_environment() -> None:
    s = config.load({})
    assert s.env is config.Env.LOCAL
    assert s.project == "demo-mllab"
    assert s.function == ""
    assert s.public_url == "http://127.0.0.1:8080"
    assert s.token_issuer == s.public_url
    assert s.token_audience == "mllab-api"
    assert s.cors_origins == ("http://127.0.0.1:8080", "http://localhost:8080")
    assert s.secrets_dir == Path("/secrets")
    assert s.dev_dir == Path(".dev")
    assert s.rpc_timeout_s == 8.0
    assert not s.is_production


def test_values_are_read_and_typed_from_mllab_variables() -> None:
    s = config.load(
        {
            "MLLAB_ENV": "test",
            "MLLAB_PROJECT": "demo-x",
            "MLLAB_RPC_TIMEOUT_S": "2.5",
            "MLLAB_DEV_DIR": "/tmp/somewhere",
            "MLLAB_BUCKET": "b1",
            "UNRELATED": "x",
        }
    )
    assert s.env is config.Env.TEST
    assert s.project == "demo-x"
    assert s.rpc_timeout_s == 2.5
    assert s.dev_dir == Path("/tmp/somewhere")
    assert s.bucket == "b1"


def test_cors_origins_are_comma_separated_and_trimmed() -> None:
    s = config.load({"MLLAB_CORS_ORIGINS": " http://a.test:1 ,http://b.test,, "})
    assert s.cors_origins == ("http://a.test:1", "http://b.test")


def test_function_name_comes_from_k_service_or_function_target() -> None:
    assert config.load({"MLLAB_ENV": "local", "K_SERVICE": "jwks"}).function == "jwks"
    assert config.load({"FUNCTION_TARGET": "account"}).function == "account"


def test_unknown_values_are_a_config_error() -> None:
    with pytest.raises(config.ConfigError):
        config.load({"MLLAB_ENV": "staging"})
    with pytest.raises(config.ConfigError):
        config.load({"MLLAB_RPC_TIMEOUT_S": "soon"})


def test_k_service_without_mllab_env_means_production() -> None:
    s = config.load({**{k: v for k, v in PRODUCTION.items() if k != "MLLAB_ENV"}, "K_SERVICE": "jwks"})
    assert s.env is config.Env.PRODUCTION
    assert s.is_production
    assert s.function == "jwks"


def test_k_service_with_local_defaults_is_refused_as_production() -> None:
    """On Cloud Functions a forgotten MLLAB_ENV never silently runs the local configuration."""
    with pytest.raises(config.ConfigError, match="https"):
        config.load({"K_SERVICE": "jwks"})


def test_a_valid_production_configuration_loads() -> None:
    s = config.load(PRODUCTION)
    assert s.is_production
    assert s.cors_origins == ("https://lab.example.com",)


def test_paypal_environment_decides_the_webhook_certificate_hosts() -> None:
    sandbox = config.load(PRODUCTION)
    assert not sandbox.paypal_live
    assert sandbox.webhook_cert_origins == ("https://api.sandbox.paypal.com", "https://api-m.sandbox.paypal.com")
    live = config.load({**PRODUCTION, "MLLAB_PAYPAL_API_BASE": "https://api-m.paypal.com"})
    assert live.paypal_live and live.webhook_cert_origins == ("https://api.paypal.com", "https://api-m.paypal.com")
    local = config.load(
        {"MLLAB_PAYPAL_API_BASE": "https://127.0.0.1:9500", "MLLAB_PAYPAL_CERT_ORIGINS": "https://127.0.0.1:9500"}
    )
    assert local.webhook_cert_origins == ("https://127.0.0.1:9500",)  # no real PayPal host trusted locally


def test_plans_table_matches_the_limits() -> None:
    assert config.PLANS["pro"].price == "15.00" and config.PLANS["pro"].cloud_saves
    assert config.PLANS["pro"].storage_bytes == config.LIMITS.pro_storage_bytes == 5 * config.GiB
    assert config.PLANS["free"].storage_bytes == 0 and not config.PLANS["free"].cloud_saves


@pytest.mark.parametrize(
    ("variable", "value", "match"),
    [
        ("MLLAB_PUBLIC_URL", "http://lab.example.com", "public_url"),
        ("MLLAB_CORS_ORIGINS", "https://lab.example.com,http://127.0.0.1:8080", "CORS"),
        ("MLLAB_PROJECT", "demo-mllab", "emulator-only"),
        ("MLLAB_OIDC_ISSUER", "http://127.0.0.1:9400", "oidc_issuer"),  # the local OIDC stand-in
        ("MLLAB_LAB_URL", "http://127.0.0.1:8080", "lab_url"),
        ("MLLAB_PAYPAL_API_BASE", "https://127.0.0.1:9500", "paypal_api_base"),  # the local PayPal stand-in
        ("MLLAB_PAYPAL_API_BASE", "https://api-m.paypal.com.evil.test", "paypal_api_base"),
        ("MLLAB_PAYPAL_CA_FILE", "/tmp/ca.pem", "paypal_ca_file"),
        ("MLLAB_PAYPAL_CERT_ORIGINS", "https://127.0.0.1:9500", "paypal_cert_origins"),
    ],
)
def test_production_refuses_local_settings(variable: str, value: str, match: str) -> None:
    with pytest.raises(config.ConfigError, match=match):
        config.load({**PRODUCTION, variable: value})


@pytest.mark.parametrize("variable", config.EMULATOR_VARS)
def test_production_refuses_every_emulator_host(variable: str) -> None:
    with pytest.raises(config.ConfigError, match=variable):
        config.load({**PRODUCTION, variable: "127.0.0.1:8081"})


@pytest.mark.parametrize("variable", config.EMULATOR_VARS)
def test_local_accepts_emulator_hosts(variable: str) -> None:
    assert config.load({"MLLAB_ENV": "local", variable: "127.0.0.1:8081"}).env is config.Env.LOCAL


def test_settings_are_cached_until_reload(monkeypatch: pytest.MonkeyPatch) -> None:
    assert config.settings().bucket == "mllab-local"
    monkeypatch.setenv("MLLAB_BUCKET", "other-bucket")
    assert config.settings().bucket == "mllab-local"
    assert config.reload().bucket == "other-bucket"
    assert config.settings().bucket == "other-bucket"


# --- local secrets -------------------------------------------------------------------------------


def test_local_signing_keys_are_generated_once_into_the_dev_dir(mllab_env: Path) -> None:
    first_private = config.secret(config.SIGNING_KEYS)
    first_public = config.secret(config.PUBLIC_KEYS)
    assert config.secret(config.SIGNING_KEYS) == first_private
    assert config.secret(config.PUBLIC_KEYS) == first_public
    config.reload()
    assert config.secret(config.SIGNING_KEYS) == first_private

    directory = mllab_env / "secrets"
    assert config.local_secrets_dir() == directory
    assert (directory / config.SIGNING_KEYS).read_text() == first_private
    # The public set is exactly the public half of the private set.
    assert json.loads(first_public) == tokens.public_key_set(json.loads(first_private))
    assert "d" in json.loads(first_private)["keys"][0]


def test_local_secret_files_are_private_to_the_owner(mllab_env: Path) -> None:
    config.secret(config.SIGNING_KEYS)
    for name in (config.SIGNING_KEYS, config.PUBLIC_KEYS):
        mode = stat.S_IMODE((mllab_env / "secrets" / name).stat().st_mode)
        assert mode == 0o600, oct(mode)
    leftovers = [p.name for p in (mllab_env / "secrets").iterdir() if p.name.endswith(".tmp")]
    assert leftovers == []


def test_concurrent_first_use_yields_one_consistent_key_set() -> None:
    barrier = threading.Barrier(8)
    results: list[tuple[str, str]] = []
    errors: list[BaseException] = []

    def worker(index: int) -> None:
        try:
            barrier.wait()
            if index % 2:
                public = config.secret(config.PUBLIC_KEYS)
                private = config.secret(config.SIGNING_KEYS)
            else:
                private = config.secret(config.SIGNING_KEYS)
                public = config.secret(config.PUBLIC_KEYS)
            results.append((private, public))
        except BaseException as exc:  # noqa: BLE001 - surfaced by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    assert len(results) == 8
    assert len(set(results)) == 1
    private, public = results[0]
    assert json.loads(public) == tokens.public_key_set(json.loads(private))
    # And a token signed with it verifies.
    assert tokens.verify_access_token(tokens.issue_access_token("u", "s").token)["sub"] == "u"


def test_public_keys_missing_next_to_an_existing_private_set_are_derived_from_it(mllab_env: Path) -> None:
    """Another process won the race for the private file (or stopped before the public one):
    the public set must still match the private set on disk."""
    directory = mllab_env / "secrets"
    directory.mkdir(parents=True)
    existing = tokens.new_key_set()
    (directory / config.SIGNING_KEYS).write_text(json.dumps(existing))

    public = json.loads(config.secret(config.PUBLIC_KEYS))
    assert public == tokens.public_key_set(existing)
    assert json.loads(config.secret(config.SIGNING_KEYS)) == existing
    assert tokens.verify_access_token(tokens.issue_access_token("u", "s").token)["sub"] == "u"


def test_unknown_local_secret_is_a_config_error_naming_the_file(mllab_env: Path) -> None:
    with pytest.raises(config.ConfigError, match="paypal-client-secret"):
        config.secret("paypal-client-secret")


def test_mounted_secret_file_is_preferred_over_the_dev_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    generated = config.secret(config.SIGNING_KEYS)
    mounted = tmp_path / "mounted"
    mounted.mkdir()
    (mounted / config.SIGNING_KEYS).write_text("mounted-value-1")
    monkeypatch.setenv("MLLAB_SECRETS_DIR", str(mounted))
    config.reload()
    assert config.secret(config.SIGNING_KEYS) == "mounted-value-1"
    # Re-read on each call, so a new `latest` version is picked up.
    (mounted / config.SIGNING_KEYS).write_text("mounted-value-2")
    assert config.secret(config.SIGNING_KEYS) == "mounted-value-2"
    # Other secrets still come from the dev folder.
    assert config.secret(config.PUBLIC_KEYS) == json.dumps(tokens.public_key_set(json.loads(generated)), indent=1)


class _FakeSecretManager:
    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    def access_secret_version(self, *, name: str, timeout: float, retry: Any = None) -> Any:
        self.calls.append({"name": name, "timeout": timeout})
        payload = types.SimpleNamespace(data=f"value-of-{name.split('/')[3]}".encode())
        return types.SimpleNamespace(payload=payload)


def _production(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for key, value in PRODUCTION.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("MLLAB_SECRETS_DIR", str(tmp_path / "no-mount"))
    config.reload()


def test_production_without_a_mount_reads_secret_manager_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mllab_env: Path
) -> None:
    fake = _FakeSecretManager()
    monkeypatch.setattr(clients, "secret_manager", lambda: fake)
    _production(monkeypatch, tmp_path)

    assert config.secret("smtp-url") == "value-of-smtp-url"
    assert config.secret("smtp-url") == "value-of-smtp-url"
    assert fake.calls == [{"name": "projects/mllab-prod/secrets/smtp-url/versions/latest", "timeout": 8.0}]
    # Production never generates development secrets.
    assert not (mllab_env / "secrets").exists()


def test_production_prefers_the_mounted_file_over_secret_manager(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = _FakeSecretManager()
    monkeypatch.setattr(clients, "secret_manager", lambda: fake)
    _production(monkeypatch, tmp_path)
    mounted = tmp_path / "no-mount"
    mounted.mkdir()
    (mounted / "smtp-url").write_text("from-the-mount")
    assert config.secret("smtp-url") == "from-the-mount"
    assert fake.calls == []


def test_production_never_generates_local_secrets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _production(monkeypatch, tmp_path)
    with pytest.raises(config.ConfigError, match="never generates"):
        config.ensure_local_secrets()


def test_reload_forgets_cached_secret_manager_values(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = _FakeSecretManager()
    monkeypatch.setattr(clients, "secret_manager", lambda: fake)
    _production(monkeypatch, tmp_path)
    config.secret("smtp-url")
    config.reload()
    config.secret("smtp-url")
    assert len(fake.calls) == 2
