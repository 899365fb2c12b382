"""The layers of mllab (docs/architecture.md) point one way: platform <- domains <- HTTP edge <-
functions. A module's layer is its subpackage (`mllab/account.py`, the one module that spans domains,
sits with them). Every import in the package, at module level or inside a function, is checked against
that, so a domain that reaches for the router, or settings that reach into a domain, fail here naming
the import."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "shared" / "mllab"

# The first part of a module's dotted path inside mllab -> its layer.
LAYER = {
    "platform": 0,
    "identity": 1,
    "files": 1,
    "billing": 1,
    "account": 1,
    "serving": 1,  # models answering predictions: deployments, API keys, metering, the inference engine
    "api": 2,
    "ops": 3,  # operator tools: never staged into a function, never imported by one
}
NAMES = {0: "platform", 1: "domain", 2: "HTTP edge", 3: "ops"}


def dotted(path: Path) -> str:
    """shared/mllab/identity/users.py -> mllab.identity.users"""
    return ".".join(("mllab", *path.relative_to(PACKAGE).with_suffix("").parts))


def modules() -> list[str]:
    return sorted(dotted(p) for p in PACKAGE.rglob("*.py") if p.stem != "__init__")


MODULES = set(modules())


def _resolve(base: str, name: str) -> str:
    """`from <base> import <name>`: the module it imports (mllab.platform + clients -> mllab.platform.clients),
    else the module the name comes from."""
    return f"{base}.{name}" if f"{base}.{name}" in MODULES else base


def _from_base(node: ast.ImportFrom, package: str | None) -> str | None:
    """The absolute module a `from X import ...` names: a relative one resolved against the file's package."""
    if not node.level:
        return node.module
    if package is None:
        return None
    parent = package.rsplit(".", node.level - 1)[0]
    return f"{parent}.{node.module}" if node.module else parent


def mllab_imports(path: Path, package: str | None = None) -> set[str]:
    """The mllab modules a file imports, anywhere in it, dotted (`from mllab.platform import clients`,
    `from mllab import account`, `import mllab.files.objects`, `from mllab.platform.problems import Problem`,
    and relative ones: `from . import store` in mllab.serving is mllab.serving.store). `package`: the
    file's, when it is not under shared/mllab."""
    if package is None and path.is_relative_to(PACKAGE):
        package = ".".join(("mllab", *path.parent.relative_to(PACKAGE).parts))
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom):
            base = _from_base(node, package)
            if base and base.split(".")[0] == "mllab":
                found |= {_resolve(base, alias.name) for alias in node.names}
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "mllab"}
    return found


def layer_of(module: str) -> int | None:
    parts = module.split(".")
    return LAYER.get(parts[1]) if len(parts) > 1 else None


def test_every_module_has_a_layer() -> None:
    assert [m for m in modules() if layer_of(m) is None] == [], "put the module in a subpackage of the LAYER table"
    used = {m.split(".")[1] for m in modules()}
    assert sorted(set(LAYER) - used) == [], "a subpackage in this table no longer exists"


@pytest.mark.parametrize("module", modules())
def test_imports_point_down_the_layers(module: str) -> None:
    mine = layer_of(module)
    assert mine is not None
    path = PACKAGE.joinpath(*module.split(".")[1:]).with_suffix(".py")
    wrong = []
    for other in sorted(mllab_imports(path)):
        theirs = layer_of(other)
        if theirs is None:
            wrong.append(f"{module} imports {other}, which is in no layer")
        elif theirs > mine:
            wrong.append(f"{module} ({NAMES[mine]}) imports {other} ({NAMES[theirs]})")
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
                if n.split(".")[0] == "mllab_dev" or n == "mllab.ops" or n.startswith("mllab.ops.")
            ]
    assert wrong == []


def test_events_only_parse() -> None:
    # The recorder decides what an object means; events.py converts delivery shapes and nothing else.
    imported = mllab_imports(PACKAGE / "files" / "events.py")
    wrong = sorted(m for m in imported if layer_of(m) != 0 and m != "mllab.files.objects")
    assert wrong == [], f"mllab.files.events imports {wrong}: only the platform and mllab.files.objects"


def test_settings_import_only_the_platform() -> None:
    imported = mllab_imports(PACKAGE / "platform" / "config.py")
    assert sorted(m for m in imported if layer_of(m) != 0) == [], "settings reach outside the platform"


def test_the_import_check_names_an_upward_import(tmp_path: Path) -> None:
    # The checker itself: an import from a domain up into the router, and one into ops, are both seen.
    source = tmp_path / "x.py"
    source.write_text("from mllab.api import http\ndef f():\n    from mllab.ops import keys\n")
    assert mllab_imports(source) == {"mllab.api.http", "mllab.ops.keys"}
    assert {layer_of(m) for m in mllab_imports(source)} == {2, 3}
    # A relative import is resolved against the package: one up into the router is seen too.
    source.write_text("from . import store\nfrom .errors import ModelError\nfrom ..api import http\n")
    assert mllab_imports(source, "mllab.serving") == {"mllab.serving.store", "mllab.serving.errors", "mllab.api.http"}
