"""Helpers shared by the unit tests (paths, golden files, hand-made JWTs)."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path
from typing import Any

from mllab.platform import config

REPO = Path(__file__).resolve().parents[2]
FUNCTIONS_DIR = REPO / "functions"
GOLDEN_DIR = REPO / "tests" / "golden"


def golden(name: str) -> Any:
    return json.loads((GOLDEN_DIR / name).read_text())


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_json(obj: Any) -> str:
    return b64url(json.dumps(obj, separators=(",", ":")).encode())


def private_key_set() -> dict[str, Any]:
    """The development private key set (generated on first use by mllab.platform.config)."""
    return json.loads(config.secret(config.SIGNING_KEYS))


class LogCapture:
    """Lines written by mllab.platform.log during a test."""

    def __init__(self) -> None:
        self.buffer = io.StringIO()

    @property
    def text(self) -> str:
        return self.buffer.getvalue()

    def records(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.text.splitlines()]

    def find(self, message: str) -> list[dict[str, Any]]:
        return [r for r in self.records() if r.get("message") == message]
