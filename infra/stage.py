"""Stage each function for `gcloud functions deploy --source=build/<name>`.

build/<name>/ = functions/<name>/* + the `mllab` package + a `.gcloudignore` + the repo's lock. This is
Google's documented "package local dependencies" layout: functions-framework puts main.py's folder on
sys.path, so `import mllab` finds the copy beside it. The staged requirements.txt is the function's own
pins plus `-c constraints.txt`, so the buildpack's `pip install -r requirements.txt` installs every
transitive dependency at the version the tests ran with. Standard library only.

    python3 infra/stage.py [--out build] [name ...]
"""

from __future__ import annotations

import argparse
import shutil
import sys
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


def stage(name: str, out: Path) -> Path:
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
    (dest / "requirements.txt").write_text(
        f"{pins}\n# The repo's full lock: dependencies of the pins above install at the tested versions.\n-c {LOCK}\n"
    )
    return dest


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "build")
    parser.add_argument("names", nargs="*", help="functions to stage (default: all)")
    args = parser.parse_args(argv)
    for name in args.names or functions():
        print(f"staged {stage(name, args.out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
