"""The layers of mllab (docs/architecture.md) point one way: platform <- domains <- HTTP edge <-
functions. Every import in the package, at module level or inside a function, is checked against the
table below, so a domain that reaches for the router, or settings that reach into a domain, fail here
naming the import."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "shared" / "mllab"

PLATFORM = {"config", "clients", "clock", "log", "problems", "queries", "idempotency", "audit", "mail", "schemas"}
DOMAINS = {
    # identity
    "users",
    "passwords",
    "sessions",
    "tokens",
    "auth",
    "oauth",
    "ratelimit",
    "accounts",
    # files
    "objects",
    "catalog",
    "storage",
    "uploads",
    "events",
    "recorder",
    # money
    "entitlements",
    "billing",
    "paypal",
    "webhooks",
    "promo",
}
EDGE = {"routes", "http", "openapi"}
OPS = {"cli", "keys"}  # operator tools: never staged into a function, never imported by one
LAYER = {**dict.fromkeys(PLATFORM, 0), **dict.fromkeys(DOMAINS, 1), **dict.fromkeys(EDGE, 2), **dict.fromkeys(OPS, 3)}
NAMES = {0: "platform", 1: "domain", 2: "HTTP edge", 3: "ops"}


def mllab_imports(path: Path) -> set[str]:
    """The mllab modules a file imports, anywhere in it (`from mllab import x`, `import mllab.x`,
    `from mllab.x import y`)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module == "mllab":
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("mllab."):
            found.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            found |= {a.name.split(".")[1] for a in node.names if a.name.startswith("mllab.")}
    return found


def modules() -> list[str]:
    return sorted(p.stem for p in PACKAGE.glob("*.py") if p.stem != "__init__")


def test_every_module_has_a_layer() -> None:
    assert sorted(set(modules()) - set(LAYER)) == [], "add the new module to a layer in this table"
    assert sorted(set(LAYER) - set(modules())) == [], "a module in this table no longer exists"


@pytest.mark.parametrize("module", modules())
def test_imports_point_down_the_layers(module: str) -> None:
    mine = LAYER[module]
    wrong = sorted(
        f"{module} ({NAMES[mine]}) imports {other} ({NAMES[LAYER[other]]})"
        for other in mllab_imports(PACKAGE / f"{module}.py")
        if other in LAYER and other != module and LAYER[other] > mine
    )
    assert wrong == []


def test_no_function_imports_an_operator_tool_or_the_local_stack() -> None:
    wrong = []
    for main in sorted((ROOT / "functions").glob("*/main.py")):
        tree = ast.parse(main.read_text())
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            wrong += [
                f"{main.parent.name}: {n}"
                for n in names
                if n.startswith("mllab_dev") or n in {f"mllab.{m}" for m in OPS}
            ]
    assert wrong == []


def test_events_only_parse() -> None:
    # The recorder decides what an object means; events.py converts delivery shapes and nothing else.
    assert mllab_imports(PACKAGE / "events.py") <= PLATFORM | {"objects"}
