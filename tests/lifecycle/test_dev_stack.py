"""`make dev`'s launcher as a user runs it: a separate process, signals, crashes, busy ports,
missing prerequisites. Each test starts its own stack on free ports in its own folder."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from mllab_dev.stack import ROOT, _group_alive

UP_TIMEOUT_S = 120


def launch(
    dev_dir: Path, *args: str, env: dict[str, str] | None = None, sigint_ignored: bool = False
) -> subprocess.Popen:
    def ignore_sigint() -> None:  # what a shell does to a background job
        signal.signal(signal.SIGINT, signal.SIG_IGN)

    return subprocess.Popen(
        [sys.executable, "-m", "mllab_dev.stack", "--free-ports", "--dev-dir", str(dev_dir), *args],
        cwd=ROOT,
        env=env or os.environ.copy(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=ignore_sigint if sigint_ignored else None,
    )


def wait_healthy(proc: subprocess.Popen, dev_dir: Path) -> dict:
    deadline = time.monotonic() + UP_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"launcher exited {proc.returncode}: {proc.stderr.read()[-2000:]}")
        try:
            state = json.loads((dev_dir / "stack.json").read_text())
            if (
                state["ready"]
                and httpx.get(f"http://127.0.0.1:{state['ports']['gateway']}/healthz", timeout=3).status_code == 200
            ):
                return json.loads((dev_dir / "stack.json").read_text())
        except (OSError, ValueError, KeyError, httpx.HTTPError):
            pass
        time.sleep(0.25)
    raise AssertionError("stack did not become healthy")


def groups_of(state: dict) -> list[int]:
    return [c["pgid"] for c in state["children"]]


def _describe(pid: int) -> str:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text().split()
        return f"state {stat[2]}: " + Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()[:200]
    except OSError as exc:
        return f"no /proc entry ({exc.strerror}): group member other than the leader"


def port_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def wait_gone(groups: list[int], timeout: float = 15) -> list[int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(_group_alive(g) for g in groups):
        time.sleep(0.1)
    return [g for g in groups if _group_alive(g)]


@pytest.mark.parametrize("sigint_ignored", [False, True], ids=["foreground", "background-job"])
def test_sigint_stops_every_child(tmp_path: Path, sigint_ignored: bool) -> None:
    proc = launch(tmp_path, sigint_ignored=sigint_ignored)
    try:
        state = wait_healthy(proc, tmp_path)
        groups = groups_of(state)
        assert len(groups) >= 6  # 3 emulators, 2 functions, the gateway
        jwks = httpx.get(f"http://127.0.0.1:{state['ports']['gateway']}/.well-known/jwks.json", timeout=5)
        assert jwks.status_code == 200
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    console = proc.stdout.read()
    # the console: one short line for the request (time, method, path, status, latency, function) ...
    assert re.search(r"^\d\d:\d\d:\d\d  GET +/\.well-known/jwks\.json +200 +\d+ ms  jwks$", console, re.M), console
    # ... and no routine JSON record, which goes to the part's file in .dev/logs/ instead
    assert '"severity": "INFO"' not in console
    logged = [
        json.loads(line)
        for line in (tmp_path / "logs" / "gateway.log").read_text().splitlines()
        if line.startswith("{")
    ]
    assert [
        r
        for r in logged
        if r.get("message") == "request"
        and r.get("path") == "/.well-known/jwks.json"
        and r.get("status") == 200
        and r.get("function") == "jwks"
        and r.get("latency_ms", -1) >= 0
    ]
    assert wait_gone(groups) == []
    ports = [p for k, p in state["ports"].items() if k != "functions"] + list(state["ports"]["functions"].values())
    assert all(port_free(p) for p in ports)
    assert not (tmp_path / "stack.json").exists()


def test_rerun_after_crash_cleans_its_own_leftovers(tmp_path: Path) -> None:
    first = launch(tmp_path)
    try:
        first_state = wait_healthy(first, tmp_path)
        orphans = groups_of(first_state)
    finally:
        first.kill()  # SIGKILL: no cleanup, children live on
    first.wait(10)
    assert any(_group_alive(g) for g in orphans)
    second = launch(tmp_path)
    try:
        state = wait_healthy(second, tmp_path)
        survivors = wait_gone(orphans)
        assert survivors == [], [
            (c["name"], _describe(c["pgid"])) for c in first_state["children"] if c["pgid"] in survivors
        ]
        assert set(groups_of(state)).isdisjoint(orphans)
        second.send_signal(signal.SIGTERM)
        assert second.wait(timeout=30) == 0
    finally:
        if second.poll() is None:
            second.kill()
    assert "cleaned up" in second.stderr.read()
    assert wait_gone(groups_of(state)) == []


def test_foreign_port_holder_fails_fast_and_is_named(tmp_path: Path) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        started = time.monotonic()
        proc = launch(tmp_path, "--port", f"gateway={port}")
        _, err = proc.communicate(timeout=30)
        elapsed = time.monotonic() - started
    assert proc.returncode == 1
    assert f"port {port}" in err and f"pid {os.getpid()}" in err, err
    assert elapsed < 15, f"took {elapsed:.1f}s"
    assert not (tmp_path / "stack.json").exists()


def _path_without(tmp_path: Path, keep: list[str]) -> str:
    """A PATH that offers only the named commands (symlinked from the real PATH)."""
    import shutil

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for cmd in keep:
        real = shutil.which(cmd)
        assert real, cmd
        (bin_dir / cmd).symlink_to(real)
    return str(bin_dir)


@pytest.mark.parametrize(
    "missing,expect",
    [
        ("java", "openjdk-17-jre-headless"),
        ("gcloud", "google-cloud-cli"),
    ],
)
def test_missing_prerequisite_fails_fast_naming_what_to_install(tmp_path: Path, missing: str, expect: str) -> None:
    keep = [c for c in ("java", "gcloud") if c != missing]
    env = {**os.environ, "PATH": _path_without(tmp_path, keep)}
    started = time.monotonic()
    proc = launch(tmp_path / "dev", env=env)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 1
    assert expect in err, err
    assert time.monotonic() - started < 15


def test_missing_emulator_component_is_named(tmp_path: Path) -> None:
    sdk = tmp_path / "sdk"
    (sdk / "bin").mkdir(parents=True)
    (sdk / "platform" / "pubsub-emulator").mkdir(parents=True)  # firestore emulator missing
    fake = sdk / "bin" / "gcloud"
    fake.write_text("#!/bin/sh\nexit 0\n")
    fake.chmod(0o755)
    bin_dir = Path(_path_without(tmp_path, ["java"]))
    (bin_dir / "gcloud").symlink_to(fake)
    out = subprocess.run(
        [sys.executable, str(ROOT / "infra/local/mllab_dev/preflight.py")],
        env={**os.environ, "PATH": str(bin_dir)},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 1
    assert "cloud-firestore-emulator" in out.stderr and "google-cloud-cli-firestore-emulator" in out.stderr
    assert "pubsub-emulator," not in out.stderr
