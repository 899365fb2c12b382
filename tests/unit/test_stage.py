"""Staged deploy folders: exactly what gcloud uploads, and they run without the repo's editable install."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from mllab import routes

ROOT = Path(__file__).resolve().parents[2]


def _stage(tmp_path: Path, name: str) -> Path:
    out = subprocess.run([sys.executable, str(ROOT / "infra" / "stage.py"), "--out", str(tmp_path), name],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return tmp_path / name


@pytest.mark.parametrize("fn", routes.FUNCTIONS, ids=lambda f: f.name)
def test_staged_folder_has_function_library_and_ignore_file(tmp_path: Path, fn: routes.Function) -> None:
    staged = _stage(tmp_path, fn.name)
    files = {p.relative_to(staged).as_posix() for p in staged.rglob("*") if p.is_file()}
    assert {"main.py", "requirements.txt", ".gcloudignore", "mllab/__init__.py", "mllab/http.py"} <= files
    assert not [f for f in files if "__pycache__" in f or f.endswith(".pyc")]
    assert "mllab/cli.py" not in files  # the operator CLI never ships inside a function
    assert (staged / "requirements.txt").read_text() == (ROOT / "functions" / fn.name / "requirements.txt").read_text()


def test_staged_jwks_runs_from_its_own_folder(tmp_path: Path) -> None:
    """-S skips .pth files, so the editable `mllab` is invisible: only the staged copy can load."""
    staged = _stage(tmp_path, "jwks")
    dev = tmp_path / "dev"
    code = (
        "import sys; sys.path.append(%r)\n"
        "import functions_framework\n"
        "app = functions_framework.create_app('jwks', %r).test_client()\n"
        "r = app.get('/.well-known/jwks.json')\n"
        "import json, mllab; print(json.dumps({'status': r.status_code, 'mllab': mllab.__file__}))\n"
    ) % (sysconfig.get_paths()["purelib"], str(staged / "main.py"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLLAB_")}
    env.update(MLLAB_ENV="test", MLLAB_DEV_DIR=str(dev))
    out = subprocess.run([sys.executable, "-S", "-c", code], capture_output=True, text=True, timeout=60,
                         env=env, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["status"] == 200
    assert Path(result["mllab"]).is_relative_to(staged)
