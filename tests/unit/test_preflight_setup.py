"""A fresh Debian machine sets itself up: `make dev` / `make test` install the missing Debian packages
with apt-get when run as root, printing what they install, and otherwise print the one line to run.
apt-get itself is replaced by a recorder here; which packages apt knows is injected."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from mllab_dev import preflight

EVERYTHING = [
    "python3.12",
    "python3.12-venv",
    "openjdk-17-jre-headless",
    "google-cloud-cli",
    "google-cloud-cli-firestore-emulator",
    "google-cloud-cli-pubsub-emulator",
    "nodejs",
    "npm",
    "chromium",
]
DEBIAN = {"openjdk-17-jre-headless", "nodejs", "npm", "chromium"}  # bookworm: no python3.12, no Google repo


class Apt:
    def __init__(self, fails: bool = False) -> None:
        self.calls: list[list[str]] = []
        self.fails = fails

    def __call__(self, argv: Sequence[str]) -> int:
        self.calls.append(list(argv))
        return 100 if self.fails and "install" in argv else 0


@pytest.fixture
def missing(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    chosen: list[str] = []
    monkeypatch.setattr(preflight, "needed_packages", lambda test: list(chosen))
    monkeypatch.setattr(preflight.shutil, "which", lambda name, *a, **k: f"/usr/bin/{name}")
    return chosen


def _install(as_root: bool, available: set[str], apt: Apt, test: bool = True) -> tuple[bool, str]:
    said: list[str] = []
    done = preflight.install(test, as_root=as_root, run=apt, available=available.__contains__, say=said.append)
    return done, "\n".join(said)


def test_as_root_the_missing_debian_packages_are_installed_and_named(missing: list[str]) -> None:
    missing += ["openjdk-17-jre-headless", "nodejs", "npm", "chromium"]
    apt = Apt()
    done, said = _install(True, DEBIAN, apt)
    assert done
    assert apt.calls == [
        ["apt-get", "update", "-qq"],
        ["apt-get", "install", "-y", "-qq", "openjdk-17-jre-headless", "nodejs", "npm", "chromium"],
    ]
    assert "installing openjdk-17-jre-headless nodejs npm chromium" in said


def test_without_root_nothing_runs_and_the_one_apt_line_is_printed(missing: list[str]) -> None:
    missing += ["nodejs", "npm", "chromium"]
    apt = Apt()
    done, said = _install(False, DEBIAN, apt)
    assert not done and apt.calls == []
    assert said.count("apt-get install") == 1 and "apt-get install -y nodejs npm chromium" in said


def test_nothing_missing_runs_nothing(missing: list[str]) -> None:
    apt = Apt()
    assert _install(True, DEBIAN, apt) == (True, "") and apt.calls == []


def test_what_apt_cannot_install_is_explained_not_guessed(missing: list[str]) -> None:
    missing += EVERYTHING
    apt = Apt()
    done, said = _install(True, DEBIAN, apt)
    assert not done, "gcloud and Python 3.12 are still missing"
    assert apt.calls[-1] == ["apt-get", "install", "-y", "-qq", *sorted(DEBIAN, key=EVERYTHING.index)]
    assert "packages.cloud.google.com/apt" in said and "google-cloud-cli" in said
    assert "pyenv install 3.12" in said


def test_with_googles_repository_configured_gcloud_and_its_emulators_are_installed(missing: list[str]) -> None:
    missing += ["google-cloud-cli", "google-cloud-cli-firestore-emulator", "google-cloud-cli-pubsub-emulator"]
    apt = Apt()
    done, _ = _install(True, DEBIAN | set(missing), apt)
    assert done and apt.calls[-1][-3:] == missing


def test_a_failed_install_stops_with_the_command(missing: list[str]) -> None:
    missing += ["chromium"]
    done, said = _install(True, DEBIAN, Apt(fails=True))
    assert not done and "`apt-get install -y chromium` failed" in said


def test_the_missing_packages_follow_what_the_machine_lacks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(preflight, "find_python", lambda minor: None)
    monkeypatch.setattr(preflight.shutil, "which", lambda name, *a, **k: None)
    monkeypatch.setattr(preflight.os, "access", lambda path, mode: False)
    assert preflight.needed_packages(test=True) == EVERYTHING
    assert "chromium" not in preflight.needed_packages(test=False), "only `make test` drives a browser"
