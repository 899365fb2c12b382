"""Unit-test isolation: every test gets its own MLLAB_DEV_DIR, a clean MLLAB_* environment,
fresh settings, fresh key caches and fresh cloud clients."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from mllab.identity import tokens
from mllab.platform import clients, config, log
from mllab_dev import secrets as dev_secrets
from tests.unit.helpers import FUNCTIONS_DIR, LogCapture

# Variables outside the MLLAB_ prefix that change how mllab.platform.config reads its settings.
_FOREIGN_VARS = (
    *config.EMULATOR_VARS,
    "K_SERVICE",
    "FUNCTION_TARGET",
    "FUNCTION_SIGNATURE_TYPE",
    "FUNCTION_SOURCE",
    "ENTRY_POINT",
    "LOG_EXECUTION_ID",
)


@pytest.fixture(autouse=True)
def mllab_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """MLLAB_ENV=test, MLLAB_DEV_DIR in tmp_path, no leftovers; caches reset before and after."""
    for name in list(os.environ):
        if name.startswith(config.PREFIX) or name in _FOREIGN_VARS:
            monkeypatch.delenv(name, raising=False)
    dev_dir = tmp_path / "dev"
    monkeypatch.setenv("MLLAB_ENV", "test")
    monkeypatch.setenv("MLLAB_DEV_DIR", str(dev_dir))
    # Never pick up a real /secrets mount of the machine running the tests.
    monkeypatch.setenv("MLLAB_SECRETS_DIR", str(tmp_path / "mounted-secrets"))
    saved_stream, saved_level = log.stream, log.min_level
    config.reload()
    dev_secrets.install()  # development secrets are made on first use, as under `make dev`
    tokens.reset_caches()
    clients.reset()
    yield dev_dir
    log.stream, log.min_level = saved_stream, saved_level
    config.reload()
    tokens.reset_caches()
    # Undo the test's patches (environment, fake clients) before dropping cached clients, and
    # leave no settings cached that point into this test's tmp_path.
    monkeypatch.undo()
    clients.reset()
    config.settings.cache_clear()


@pytest.fixture
def logs(monkeypatch: pytest.MonkeyPatch) -> LogCapture:
    capture = LogCapture()
    monkeypatch.setattr(log, "stream", capture.buffer)
    return capture


@pytest.fixture
def load_function() -> Iterator[Callable[[str], Any]]:
    """`load_function(name)` -> the function's Flask app, built by functions_framework.create_app.

    create_app registers the module as `main` in sys.modules and appends its folder to sys.path;
    both are restored afterwards so functions never leak into each other."""
    import functions_framework

    saved_path = list(sys.path)
    saved_main = sys.modules.get("main")

    def load(name: str) -> Any:
        source = FUNCTIONS_DIR / name / "main.py"
        app = functions_framework.create_app(name, str(source))
        module = sys.modules.get("main")
        assert module is not None and Path(module.__file__).resolve() == source.resolve()
        app.config["mllab_module"] = module  # tests reach the module's `router` through the app
        return app

    yield load
    sys.path[:] = saved_path
    if saved_main is None:
        sys.modules.pop("main", None)
    else:
        sys.modules["main"] = saved_main
