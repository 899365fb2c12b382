"""Staged deploy folders: exactly what gcloud uploads, and they run without the repo's editable install."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from mllab.api import routes
from mllab.platform import config
from mllab_dev import secrets as dev_secrets

ROOT = Path(__file__).resolve().parents[2]


# The runtime this interpreter is (the deploy's is python312: the venv's Python).
THIS_RUNTIME = f"python{sys.version_info.major}{sys.version_info.minor}"


def _stage(tmp_path: Path, name: str, *flags: str) -> Path:
    out = subprocess.run(
        [sys.executable, str(ROOT / "infra" / "stage.py"), "--out", str(tmp_path), *flags, name],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    return tmp_path / name


def test_staged_for_its_runtime_a_function_ships_hash_checked_bytecode_of_every_module(tmp_path: Path) -> None:
    """A new instance reads the shipped bytecode instead of compiling our sources on its cold start: one
    .pyc per module, for the runtime's interpreter, valid by source hash (an upload keeps no mtimes)."""
    import importlib.util

    staged = _stage(tmp_path, "predict", f"--bytecode-for={THIS_RUNTIME}")
    sources = sorted(p for p in staged.rglob("*.py"))
    assert len(sources) > 30
    for source in sources:
        pyc = Path(importlib.util.cache_from_source(str(source)))
        assert pyc.is_file(), f"no bytecode for {source.relative_to(staged)}"
        header = pyc.read_bytes()[:16]
        assert header[:4] == importlib.util.MAGIC_NUMBER
        assert int.from_bytes(header[4:8], "little") == 0b01  # hash-based, source never re-checked


def test_staged_by_another_python_a_function_ships_no_bytecode_and_says_why(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, str(ROOT / "infra" / "stage.py"), "--out", str(tmp_path), "--bytecode-for=python399", "jwks"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert "no bytecode shipped" in out.stdout and "cpython-399" in out.stdout
    assert not list((tmp_path / "jwks").rglob("*.pyc"))


@pytest.mark.parametrize("fn", routes.FUNCTIONS, ids=lambda f: f.name)
def test_staged_folder_has_function_library_and_ignore_file(tmp_path: Path, fn: routes.Function) -> None:
    staged = _stage(tmp_path, fn.name)
    files = {p.relative_to(staged).as_posix() for p in staged.rglob("*") if p.is_file()}
    assert {
        "main.py",
        "requirements.txt",
        ".gcloudignore",
        "constraints.txt",
        "mllab/__init__.py",
        "mllab/api/http.py",
    } <= files
    assert not [f for f in files if "__pycache__" in f or f.endswith(".pyc")]
    assert not [f for f in files if f.startswith("mllab/ops/")]  # operator tools never ship inside a function
    assert (staged / "constraints.txt").read_text() == (ROOT / "constraints.txt").read_text()


@pytest.mark.parametrize("fn", routes.FUNCTIONS, ids=lambda f: f.name)
def test_staged_requirements_are_the_functions_pins_under_the_lock(tmp_path: Path, fn: routes.Function) -> None:
    """The buildpack runs `pip install -r requirements.txt`: the `-c` line (resolved beside the file)
    holds every transitive dependency to the tested version."""
    staged = _stage(tmp_path, fn.name)
    own = (ROOT / "functions" / fn.name / "requirements.txt").read_text().splitlines()
    lines = [ln for ln in (staged / "requirements.txt").read_text().splitlines() if not ln.startswith("#")]
    assert lines == [*own, "-c constraints.txt"]


def test_upload_lists_hold_mllab_and_nothing_else(tmp_path: Path) -> None:
    """What `gcloud functions deploy --source=build/<name>` would upload (gcloud works offline here):
    the library, its bytecode and the lock in every function, never tests or the operator CLI."""
    from concurrent.futures import ThreadPoolExecutor

    names = [fn.name for fn in routes.FUNCTIONS]
    out = subprocess.run(
        [sys.executable, str(ROOT / "infra" / "stage.py"), "--out", str(tmp_path), f"--bytecode-for={THIS_RUNTIME}"]
        + names,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    for name in names:  # what a developer's run may leave in a staged folder; the ignore file must drop it
        (tmp_path / name / "tests").mkdir()
        (tmp_path / name / "tests" / "test_x.py").write_text("")

    def upload_list(name: str) -> set[str]:
        done = subprocess.run(
            ["gcloud", "meta", "list-files-for-upload", str(tmp_path / name)],
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, "CLOUDSDK_CORE_DISABLE_PROMPTS": "1"},
        )
        assert done.returncode == 0, done.stderr[-2000:]
        return set(done.stdout.split())

    with ThreadPoolExecutor(max_workers=4) as pool:
        lists = dict(zip(names, pool.map(upload_list, names), strict=True))
    library = {
        p.relative_to(ROOT / "shared").as_posix()
        for p in (ROOT / "shared" / "mllab").rglob("*")
        if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc" and "ops" not in p.parts
    }
    tag = sys.implementation.cache_tag
    for name, files in lists.items():
        assert {"main.py", "requirements.txt", "constraints.txt", "mllab/__init__.py"} <= files, name
        assert library <= files, f"{name}: missing {sorted(library - files)}"
        assert {f"__pycache__/main.{tag}.pyc", f"mllab/api/__pycache__/http.{tag}.pyc"} <= files, name
        assert not [f for f in files if f.startswith("tests/")], name
        assert not [f for f in files if f.startswith("mllab/ops/")] and ".gcloudignore" not in files, name


def test_staged_jwks_runs_from_its_own_folder(tmp_path: Path) -> None:
    """-S skips .pth files, so the editable `mllab` is invisible: only the staged copy can load."""
    staged = _stage(tmp_path, "jwks")
    dev = tmp_path / "dev"
    purelib, main = sysconfig.get_paths()["purelib"], str(staged / "main.py")
    code = (
        f"import sys; sys.path.append({purelib!r})\n"
        "import functions_framework\n"
        f"app = functions_framework.create_app('jwks', {main!r}).test_client()\n"
        "r = app.get('/.well-known/jwks.json')\n"
        "import json, mllab; print(json.dumps({'status': r.status_code, 'mllab': mllab.__file__}))\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLLAB_")}
    env.update(MLLAB_ENV="test", MLLAB_DEV_DIR=str(dev))
    dev_secrets.ensure(config.load(env))  # as the local stack does before it starts a function
    out = subprocess.run(
        [sys.executable, "-S", "-c", code], capture_output=True, text=True, timeout=60, env=env, cwd=tmp_path
    )
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["status"] == 200
    assert Path(result["mllab"]).is_relative_to(staged)
