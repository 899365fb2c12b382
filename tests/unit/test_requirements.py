"""Each function's requirements.txt: exact pins at the lock's versions, covering what its code imports
and nothing its code never imports. (tests/stack/test_staged_functions.py installs each file alone and
serves a request; tests/stack/test_function_imports.py checks the modules a request really loads.)"""

from __future__ import annotations

import ast
import functools
import sys
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from mllab.api import routes
from tests.pins import lock

ROOT = Path(__file__).resolve().parents[2]
FUNCTIONS_DIR = ROOT / "functions"
MLLAB_DIR = ROOT / "shared" / "mllab"
# mllab's subpackages (platform, identity, ...), dotted: `from <one> import x` imports the module x.
MLLAB_PACKAGES = {"mllab." + ".".join(p.parent.relative_to(MLLAB_DIR).parts) for p in MLLAB_DIR.rglob("*/__init__.py")}
# The client getters in mllab.platform.clients, and the distribution each one imports.
CLIENT_DISTS = {
    "firestore": "google-cloud-firestore",
    "storage": "google-cloud-storage",
    "pubsub": "google-cloud-pubsub",
    "secret_manager": "google-cloud-secret-manager",
}
RUNTIME = "functions-framework"  # the buildpack refuses a function without it


def requirements(name: str) -> dict[str, Requirement]:
    lines = (FUNCTIONS_DIR / name / "requirements.txt").read_text().splitlines()
    reqs = [Requirement(line.split("#", 1)[0]) for line in lines if line.split("#", 1)[0].strip()]
    return {canonicalize_name(r.name): r for r in reqs}


def closure(dists: set[str]) -> set[str]:
    """The distributions these install, following each one's declared dependencies (installed metadata)."""
    seen: set[str] = set()
    todo = [Requirement(d) for d in dists]
    while todo:
        req = todo.pop()
        name = canonicalize_name(req.name)
        if name in seen:
            continue
        seen.add(name)
        for dep in metadata.requires(name) or []:
            r = Requirement(dep)
            if r.marker is None or r.marker.evaluate({"extra": ""}):
                todo.append(r)
    return seen


@functools.cache
def module_owners() -> dict[str, str]:
    """Dotted module path -> the installed distribution whose files hold it (no import needed)."""
    owners: dict[str, set[str]] = {}
    for dist in metadata.distributions():
        name = canonicalize_name(dist.metadata["Name"])
        for file in dist.files or []:
            if file.suffix != ".py" or ".." in file.parts:
                continue
            parts = [*file.parts[:-1], file.stem] if file.stem != "__init__" else list(file.parts[:-1])
            for i in range(1, len(parts) + 1):
                owners.setdefault(".".join(parts[:i]), set()).add(name)
    return {module: next(iter(names)) for module, names in owners.items() if len(names) == 1}


def owner(module: str) -> str | None:
    parts = module.split(".")
    for i in range(len(parts), 0, -1):  # the longest prefix one distribution owns (namespace packages)
        found = module_owners().get(".".join(parts[:i]))
        if found:
            return found
    return None


def _imported(node: ast.AST, package: str | None = None) -> set[str]:
    """The absolute modules one statement imports, `from mllab.platform import x` spelled `mllab.platform.x`;
    a relative import (`from . import store` in mllab.serving) resolved against the file's `package`."""
    if isinstance(node, ast.Import):
        return {a.name for a in node.names}
    if not isinstance(node, ast.ImportFrom):
        return set()
    module = node.module
    if node.level:
        if package is None:
            return set()
        base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
        module = f"{base}.{module}" if module else base
    if not module:
        return set()
    if module in ("mllab", "google.cloud"):
        return {f"{module}.{a.name}" for a in node.names}
    if module in MLLAB_PACKAGES:  # `from mllab.platform import clients` spelled `mllab.platform.clients`
        return {f"{module}.{a.name}" for a in node.names}
    return {module}


def _run_on_import(body: list[ast.stmt]) -> Iterator[ast.stmt]:
    """The statements of a module body, and of the blocks of its `if` (but not `if TYPE_CHECKING`) and
    `try` statements: those run on import. Function bodies are not entered."""
    for node in body:
        yield node
        if isinstance(node, ast.If) and "TYPE_CHECKING" not in ast.unparse(node.test):
            yield from _run_on_import(node.body)
            yield from _run_on_import(node.orelse)
        elif isinstance(node, ast.Try):
            for block in (node.body, *(handler.body for handler in node.handlers), node.orelse, node.finalbody):
                yield from _run_on_import(block)


def _imports(path: Path, *, module_level_only: bool) -> set[str]:
    """Absolute imports in a file, `from mllab.platform import x` spelled `mllab.platform.x`. Module level:
    the statements run on import (not those in function bodies, nor under `if TYPE_CHECKING`)."""
    tree = ast.parse(path.read_text())
    nodes = _run_on_import(tree.body) if module_level_only else ast.walk(tree)
    package = ".".join(["mllab", *path.parent.relative_to(MLLAB_DIR).parts]) if path.is_relative_to(MLLAB_DIR) else None
    return {module for node in nodes for module in _imported(node, package)}


def _mllab_file(module: str) -> Path | None:
    """The file of an mllab module (`mllab.files.s3.ObjectInfo` -> files/s3.py), None for a package."""
    parts = module.split(".")[1:]
    for n in range(len(parts), 0, -1):
        path = MLLAB_DIR.joinpath(*parts[:n]).with_suffix(".py")
        if path.is_file():
            return path
    return None


def third_party_imports(name: str, *, module_level_only: bool) -> dict[str, set[str]]:
    """Third-party modules main.py's import path reaches -> the files importing them. Lazy imports
    inside mllab.platform.clients are left out: which client a function loads is `routes.FUNCTIONS[...].uses`."""
    seen: set[Path] = set()
    todo = [FUNCTIONS_DIR / name / "main.py"]
    found: dict[str, set[str]] = {}
    while todo:
        path = todo.pop()
        lazy_ok = not module_level_only and path.name != "clients.py"
        for module in _imports(path, module_level_only=not lazy_ok):
            if module.startswith("mllab."):
                target = _mllab_file(module)
                if target is not None and target not in seen:
                    seen.add(target)
                    todo.append(target)
            elif module.split(".")[0] not in sys.stdlib_module_names and module != "__future__":
                found.setdefault(module, set()).add(path.name)
    return found


NAMES = [fn.name for fn in routes.FUNCTIONS]


@pytest.mark.parametrize("name", NAMES)
def test_pins_are_exact_and_equal_the_lock(name: str) -> None:
    pins = lock()
    for dist, req in requirements(name).items():
        specs = list(req.specifier)
        assert len(specs) == 1 and specs[0].operator == "==" and not req.extras and req.marker is None, (
            f"{name}: {req} is not an exact pin"
        )
        assert dist in pins, f"{name}: {dist} is not in constraints.txt"
        assert specs[0].version == pins[dist], f"{name}: {dist}=={specs[0].version}, constraints.txt has {pins[dist]}"


@pytest.mark.parametrize("name", NAMES)
def test_requirements_cover_what_loads_at_import(name: str) -> None:
    installed = closure(set(requirements(name)))
    missing = {}
    for module, importers in third_party_imports(name, module_level_only=True).items():
        dist = owner(module)
        assert dist, f"{module} (imported by {sorted(importers)}) belongs to no installed distribution"
        if dist not in installed:
            missing[module] = dist
    assert not missing, f"{name}/requirements.txt does not install {missing}"


@pytest.mark.parametrize("fn", routes.FUNCTIONS, ids=lambda f: f.name)
def test_cloud_clients_follow_the_route_table(fn: routes.Function) -> None:
    reqs = set(requirements(fn.name))
    assert set(CLIENT_DISTS) >= fn.uses
    for client, dist in CLIENT_DISTS.items():
        assert (dist in reqs) == (client in fn.uses), (
            f"{fn.name}: {dist} {'listed' if dist in reqs else 'missing'}, but uses={sorted(fn.uses)}"
        )


@pytest.mark.parametrize("name", NAMES)
def test_every_requirement_is_imported_somewhere_on_the_path(name: str) -> None:
    """Minimal: a pin no reachable code imports (even lazily) is dead weight in the function's image."""
    reached = {owner(m) for m in third_party_imports(name, module_level_only=False)}
    unused = set(requirements(name)) - reached - set(CLIENT_DISTS.values()) - {RUNTIME}
    assert not unused, f"{name}/requirements.txt pins what its code never imports: {sorted(unused)}"
    assert RUNTIME in requirements(name)


def test_owner_resolves_namespace_packages() -> None:
    assert owner("google.cloud.firestore_v1.base_query") == "google-cloud-firestore"
    assert owner("google.api_core.exceptions") == "google-api-core"
    assert owner("jwt") == "pyjwt"
    assert owner("argon2") == "argon2-cffi"
    assert owner("no_such_module_anywhere") is None


def test_the_import_scan_sees_lazy_and_module_level_imports() -> None:
    lazy = third_party_imports("auth_password", module_level_only=False)
    eager = third_party_imports("auth_password", module_level_only=True)
    assert "argon2" in lazy and "argon2" not in eager  # passwords.py imports it inside a function
    assert "jwt" in eager  # http -> tokens, at import
    assert not any(m.startswith("google.cloud.pubsub") for m in lazy)  # only platform.clients imports it: left out
