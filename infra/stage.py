"""Stage each function for `gcloud functions deploy --source=build/<name>`.

build/<name>/ = functions/<name>/* + the `mllab` package + a `.gcloudignore` + the repo's lock. This is
Google's documented "package local dependencies" layout: functions-framework puts main.py's folder on
sys.path, so `import mllab` finds the copy beside it. The staged requirements.txt is the function's own
pins plus `-c constraints.txt`, so the buildpack's `pip install -r requirements.txt` installs every
transitive dependency at the version the tests ran with. `--extra=s3:a,b` adds an optional dependency
group of pyproject.toml (the S3 store's `s3`) to the named functions' requirements: a deployment on an
S3-compatible store installs its client only where the store is used. Standard library only.

    python3 infra/stage.py [--out build] [--extra=EXTRA:name,name] [name ...]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GCLOUDIGNORE = """\
# Upload only what the function runs; gcloud would otherwise also honour .gitignore.
.gcloudignore
__pycache__/
*.pyc
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


def stage(name: str, out: Path, extras: tuple[str, ...] = ()) -> Path:
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
    parser.add_argument("names", nargs="*", help="functions to stage (default: all)")
    args = parser.parse_args(argv)
    extras = parse_extras(args.extra)
    unknown = sorted(set(extras) - set(functions()))
    if unknown:
        raise SystemExit(f"stage: --extra names no function {', '.join(unknown)}")
    for name in args.names or functions():
        print(f"staged {stage(name, args.out, extras.get(name, ()))}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
