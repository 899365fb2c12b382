"""Emulator-backed tests: the real local stack (Firestore and Pub/Sub emulators, fake-gcs-server,
every function under functions-framework, the gateway) is started once per run on free ports.
Firestore is emptied before each test; objects and messages are made unique per test."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from mllab import clients, config, tokens
from mllab_dev.stack import PROJECT, Ports, Stack


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    s = Stack(Ports.free(), tmp_path_factory.mktemp("stack"))
    s.start()
    saved = {k: os.environ.get(k) for k in s.env()}
    os.environ.update(s.env())
    config.reload()
    clients.reset()
    tokens.reset_caches()
    try:
        yield s
    finally:
        s.stop()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        config.reload()
        clients.reset()
        tokens.reset_caches()


@pytest.fixture(autouse=True)
def clean_firestore(stack: Stack) -> None:
    r = httpx.delete(f"http://127.0.0.1:{stack.ports.firestore}/emulator/v1/projects/{PROJECT}"
                     "/databases/(default)/documents", timeout=10)
    assert r.status_code == 200, r.text


@pytest.fixture
def gateway(stack: Stack) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=stack.gateway_url, timeout=20) as client:
        yield client


@pytest.fixture
def unique() -> str:
    return uuid.uuid4().hex[:12]


def function_log(stack: Stack, name: str) -> Path:
    return stack.log_dir / f"fn-{name}.log"


def wait_for_log(path: Path, needle: str, *, count: int = 1, timeout: float = 15.0) -> list[str]:
    """Lines of a child's log containing `needle`, once at least `count` have arrived (logs are
    copied from the child's pipe by a thread, so they lag the response slightly)."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        lines = [ln for ln in path.read_text().splitlines() if needle in ln] if path.exists() else []
        if len(lines) >= count or time.monotonic() > deadline:
            return lines
        time.sleep(0.05)
