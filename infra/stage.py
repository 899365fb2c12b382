"""Stage each function for `gcloud functions deploy --source=build/<name>`.

build/<name>/ = functions/<name>/* + the `mllab` package + a `.gcloudignore` + the repo's lock. This is
Google's documented "package local dependencies" layout: functions-framework puts main.py's folder on
sys.path, so `import mllab` finds the copy beside it. With `--bytecode-for=python312` (the plan passes its
runtime), a stager running that Python also ships the bytecode of every module (`__pycache__`, checked by
hash only, never by timestamp: an upload does not keep modification times), so a new instance does not
compile our sources on its cold start (docs/operations.md, cold starts). The staged requirements.txt is
the function's own pins plus `-c constraints.txt`, so the buildpack's `pip install -r requirements.txt`
installs every transitive dependency at the version the tests ran with. `--extra=s3:a,b` adds an optional dependency
group of pyproject.toml (the S3 store's `s3`) to the named functions' requirements: a deployment on an
S3-compatible store installs its client only where the store is used. Standard library only.

    python3 infra/stage.py [--out build] [--bytecode-for=python312] [--extra=EXTRA:name,name] [name ...]
"""

from __future__ import annotations

import argparse
import compileall
import py_compile
import shutil
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GCLOUDIGNORE = """\
# Upload only what the function runs (its sources and, when staged for its runtime, their bytecode);
# gcloud would otherwise also honour .gitignore, which ignores bytecode.
.gcloudignore
tests/
"""
LOCK = "constraints.txt"
SKIP = shutil.ignore_patterns("__pycache__", "*.pyc", "tests")
LIBRARY = ROOT / "shared" / "mllab"
# mllab/ops/ holds the operator tools (the `mllab` CLI, key rotation): they never ship inside a function.
OPERATOR_ONLY = "ops"


def _skip_in_library(directory: str, names: list[str]) -> set[str]:
    skipped = set(SKIP(directory, names))
    if Path(directory) == LIBRARY:
        skipped.add(OPERATOR_ONLY)
    return skipped


def functions() -> list[str]:
    return sorted(p.name for p in (ROOT / "functions").iterdir() if (p / "main.py").is_file())


def extra_pins(extra: str) -> list[str]:
    """An optional dependency group of pyproject.toml, as pins."""
    groups = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    if extra not in groups:
        raise SystemExit(f"stage: pyproject.toml has no optional dependencies {extra!r}")
    return list(groups[extra])


def runtime_tag(runtime: str) -> str:
    """`python312` -> the bytecode tag that runtime's interpreter reads, `cpython-312`."""
    version = runtime.removeprefix("python")
    if not runtime.startswith("python") or not version.isdigit() or len(version) < 2:
        raise SystemExit(f"stage: --bytecode-for takes a runtime such as python312, got {runtime!r}")
    return f"cpython-{version}"


def compile_bytecode(dest: Path) -> bool:
    """Every module's bytecode in __pycache__, valid for as long as the source's hash matches (the
    staged copy never changes). False when a module does not compile."""
    return bool(
        compileall.compile_dir(
            dest, quiet=1, invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH, workers=1
        )
    )


def stage(name: str, out: Path, extras: tuple[str, ...] = (), bytecode: bool = False) -> Path:
    src = ROOT / "functions" / name
    if not (src / "main.py").is_file() or not (src / "requirements.txt").is_file():
        raise SystemExit(f"stage: functions/{name} needs main.py and requirements.txt")
    dest = out / name
    shutil.rmtree(dest, ignore_errors=True)
    shutil.copytree(src, dest, ignore=SKIP)
    shutil.copytree(LIBRARY, dest / "mllab", ignore=_skip_in_library)
    (dest / ".gcloudignore").write_text(GCLOUDIGNORE)
    shutil.copyfile(ROOT / LOCK, dest / LOCK)
    pins = (src / "requirements.txt").read_text().rstrip("\n")
    own = set(pins.splitlines())
    for extra in extras:
        added = [pin for pin in extra_pins(extra) if pin not in own]
        if not added:
            continue  # the function pins all of it already (the S3 store's own sweep)
        own |= set(added)
        pins += f"\n# The `{extra}` extra (pyproject.toml), for this deployment's file store.\n" + "\n".join(added)
    (dest / "requirements.txt").write_text(
        f"{pins}\n# The repo's full lock: dependencies of the pins above install at the tested versions.\n-c {LOCK}\n"
    )
    if bytecode and not compile_bytecode(dest):
        raise SystemExit(f"stage: functions/{name} does not compile")
    return dest


def parse_extras(values: list[str]) -> dict[str, tuple[str, ...]]:
    """["s3:a,b", ...] -> {"a": ("s3",), "b": ("s3",)}: which extras each function gets."""
    chosen: dict[str, tuple[str, ...]] = {}
    for value in values:
        extra, _, names = value.partition(":")
        if not extra or not names:
            raise SystemExit(f"stage: --extra takes EXTRA:name[,name...], got {value!r}")
        for name in names.split(","):
            chosen[name] = (*chosen.get(name, ()), extra)
    return chosen


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "build")
    parser.add_argument("--extra", action="append", default=[], help="EXTRA:name,name (pyproject.toml's extras)")
    parser.add_argument(
        "--bytecode-for", metavar="RUNTIME", help="ship bytecode when staging with this runtime's Python"
    )
    parser.add_argument("names", nargs="*", help="functions to stage (default: all)")
    args = parser.parse_args(argv)
    bytecode = bool(args.bytecode_for) and runtime_tag(args.bytecode_for) == sys.implementation.cache_tag
    if args.bytecode_for and not bytecode:
        print(
            f"stage: no bytecode shipped: this is {sys.implementation.cache_tag}, {args.bytecode_for} reads "
            f"{runtime_tag(args.bytecode_for)} (each instance compiles the sources on its cold start)"
        )
    extras = parse_extras(args.extra)
    unknown = sorted(set(extras) - set(functions()))
    if unknown:
        raise SystemExit(f"stage: --extra names no function {', '.join(unknown)}")
    for name in args.names or functions():
        print(f"staged {stage(name, args.out, extras.get(name, ()), bytecode)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
