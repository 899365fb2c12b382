"""Prerequisite checks for the local stack. Standard library only: it runs before `.venv` exists.

`python3 infra/local/mllab_dev/preflight.py` checks everything and exits 1 naming what to install;
`--install` first installs the missing Debian packages with apt-get when run as root (printing what it
installs), or prints the one `apt-get install` line to run; `--test` adds what `make test` needs;
`--python312` prints the interpreter to build `.venv` with.
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

MIN_JAVA = 11  # the gcloud 528 emulators run on 11+; 17 is what this machine ships


class Missing(Exception):
    """A prerequisite is missing; the message says what to install."""


def python312() -> str:
    """Path of a working Python 3.12 (the deploy runtime, python312)."""
    exe = find_python(12)
    if exe:
        return exe
    raise Missing(
        "Python 3.12 (the Cloud Functions runtime python312) was not found. Install it "
        "(Debian: apt-get install python3.12 python3.12-venv; or: pyenv install 3.12) "
        "or set PYTHON312=/path/to/python3.12."
    )


def find_python(minor: int) -> str | None:
    """A working Python 3.<minor> with venv, from $PYTHON3<minor>, PATH, or pyenv."""
    candidates = [os.environ.get(f"PYTHON3{minor}", ""), f"python3.{minor}"]
    pyenv_root = os.environ.get("PYENV_ROOT") or str(Path.home() / ".pyenv")
    candidates += sorted(glob.glob(f"{pyenv_root}/versions/3.{minor}.*/bin/python3"), reverse=True)
    candidates += [f"/usr/bin/python3.{minor}", f"/usr/local/bin/python3.{minor}"]
    for cand in filter(None, candidates):
        exe = shutil.which(cand) or (cand if os.path.isfile(cand) else None)
        if not exe:
            continue
        try:
            out = subprocess.run(
                [exe, "-c", f"import sys, venv; print(sys.version_info[:2] == (3, {minor}))"],
                capture_output=True,
                text=True,
                timeout=10,
            )
        except (OSError, subprocess.TimeoutExpired):
            continue
        if out.returncode == 0 and out.stdout.strip() == "True":
            return exe
    return None


def java() -> str:
    exe = shutil.which("java")
    if not exe:
        raise Missing(
            "Java was not found; the Firestore and Pub/Sub emulators need it. "
            "Install a JRE 17+ (Debian: apt-get install openjdk-17-jre-headless)."
        )
    out = subprocess.run([exe, "-version"], capture_output=True, text=True, timeout=20)
    m = re.search(r'version "(\d+)(?:\.(\d+))?', out.stderr + out.stdout)
    major = int(m.group(1)) if m else 0
    if major == 1 and m and m.group(2):  # "1.8.0" style
        major = int(m.group(2))
    if major < MIN_JAVA:
        raise Missing(
            f"Java {major or '?'} is too old for the emulators; install a JRE 17+ "
            "(Debian: apt-get install openjdk-17-jre-headless)."
        )
    return exe


def gcloud_sdk_root() -> Path:
    exe = shutil.which("gcloud")
    if not exe:
        raise Missing(
            "gcloud was not found. Install the Google Cloud CLI with its emulators "
            "(https://cloud.google.com/sdk/docs/install; Debian packages google-cloud-cli, "
            "google-cloud-cli-firestore-emulator, google-cloud-cli-pubsub-emulator)."
        )
    # /usr/bin/gcloud -> <sdk>/bin/gcloud
    return Path(os.path.realpath(exe)).parent.parent


def emulator_components(sdk: Path) -> None:
    wanted = {
        "cloud-firestore-emulator": "google-cloud-cli-firestore-emulator",
        "pubsub-emulator": "google-cloud-cli-pubsub-emulator",
    }
    missing = [name for name in wanted if not (sdk / "platform" / name).is_dir()]
    if missing:
        pkgs = " ".join(wanted[m] for m in missing)
        comps = " ".join(missing)
        raise Missing(
            f"gcloud emulator component(s) missing: {', '.join(missing)}. Install them "
            f"(Debian: apt-get install {pkgs}; or: gcloud components install {comps})."
        )


def chromium() -> str:
    for cand in ("/usr/bin/chromium", shutil.which("chromium") or ""):
        if cand and os.access(cand, os.X_OK):
            return cand
    raise Missing(
        "Chromium was not found; the browser tests drive Debian's chromium "
        "(apt-get install chromium). No browser is downloaded."
    )


def npm() -> str:
    exe = shutil.which("npm")
    if not exe:
        raise Missing(
            "npm was not found; it installs the lab's browser libraries (TF.js, uPlot, Papa Parse). "
            "Install Node.js 20 with npm (apt-get install nodejs npm)."
        )
    return exe


# --- installing what is missing (Debian) ------------------------------------------------------------

# Google's apt repository (https://cloud.google.com/sdk/docs/install#deb) holds the gcloud packages;
# it is not in Debian, so this is printed rather than configured behind the operator's back.
GOOGLE_APT = (
    "Add Google's apt repository for the Google Cloud CLI (https://cloud.google.com/sdk/docs/install#deb):\n"
    "  curl -fsSL https://packages.cloud.google.com/apt/doc/apt-key.gpg | "
    "gpg --dearmor -o /usr/share/keyrings/cloud.google.gpg\n"
    "  echo 'deb [signed-by=/usr/share/keyrings/cloud.google.gpg] https://packages.cloud.google.com/apt "
    "cloud-sdk main' > /etc/apt/sources.list.d/google-cloud-sdk.list\n"
    "then run make again (it installs google-cloud-cli and the two emulators from there)."
)


def _missing(check: Callable[[], object]) -> bool:
    try:
        check()
    except Missing:
        return True
    return False


def needed_packages(test: bool) -> list[str]:
    """The Debian packages whose programs this machine lacks, in install order."""
    need = []
    if not find_python(12):
        need += ["python3.12", "python3.12-venv"]
    if _missing(java):
        need.append("openjdk-17-jre-headless")
    if not shutil.which("gcloud"):
        need += ["google-cloud-cli", "google-cloud-cli-firestore-emulator", "google-cloud-cli-pubsub-emulator"]
    else:
        sdk = gcloud_sdk_root()
        need += [
            pkg
            for name, pkg in (
                ("cloud-firestore-emulator", "google-cloud-cli-firestore-emulator"),
                ("pubsub-emulator", "google-cloud-cli-pubsub-emulator"),
            )
            if not (sdk / "platform" / name).is_dir()
        ]
    if not shutil.which("npm"):
        need += ["nodejs", "npm"]
    if test and _missing(chromium):
        need.append("chromium")
    return need


@dataclass(frozen=True)
class Setup:
    """What `--install` does: apt-get installs `install`; `unavailable` have no apt source here."""

    install: tuple[str, ...]
    unavailable: tuple[str, ...]
    as_root: bool

    def command(self) -> str:
        return f"apt-get install -y {' '.join(self.install)}"


def decide(needed: Sequence[str], *, as_root: bool, available: Callable[[str], bool]) -> Setup:
    """Which missing packages apt can install here (the others need another source, said below)."""
    return Setup(tuple(p for p in needed if available(p)), tuple(p for p in needed if not available(p)), as_root)


Run = Callable[[Sequence[str]], int]


def _run(argv: Sequence[str]) -> int:
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    return subprocess.run(list(argv), env=env, check=False).returncode


def _apt_knows(package: str) -> bool:
    done = subprocess.run(
        ["apt-cache", "show", "--no-all-versions", package], capture_output=True, text=True, check=False
    )
    return done.returncode == 0 and "Package:" in done.stdout


def install(
    test: bool,
    *,
    as_root: bool | None = None,
    run: Run = _run,
    available: Callable[[str], bool] | None = None,
    say: Callable[[str], None] = print,
) -> bool:
    """Install the missing Debian packages when root, or print the one line to run. False: not done."""
    needed = needed_packages(test)
    if not needed:
        return True
    if not shutil.which("apt-get") and available is None:
        say(f"preflight: missing {' '.join(needed)} (not a Debian system: install their equivalents)")
        return False
    root = os.geteuid() == 0 if as_root is None else as_root
    if root and run(["apt-get", "update", "-qq"]) != 0:
        say("preflight: apt-get update failed")
        return False
    setup = decide(needed, as_root=root, available=available or _apt_knows)
    if setup.install and not root:
        say(f"preflight: missing Debian packages; as root run:\n  {setup.command()}")
    elif setup.install:
        say(f"preflight: installing {' '.join(setup.install)} (apt-get)")
        if run(["apt-get", "install", "-y", "-qq", *setup.install]) != 0:
            say(f"preflight: `{setup.command()}` failed")
            return False
    for package in setup.unavailable:
        if package.startswith("google-cloud-cli"):
            say(f"preflight: {package} is not in any apt source here. {GOOGLE_APT}")
            break
    if {"python3.12", "python3.12-venv"} & set(setup.unavailable):
        say(
            "preflight: this Debian has no python3.12 package: install Python 3.12 with pyenv "
            "(pyenv install 3.12) or from python.org, or set PYTHON312=/path/to/python3.12"
        )
    return not setup.unavailable and (root or not setup.install)


def check_stack() -> None:
    """Everything `make dev` and the emulator tests need beyond `.venv`."""
    java()
    emulator_components(gcloud_sdk_root())
    npm()


def main(argv: list[str]) -> int:
    try:
        if "--python312" in argv:
            print(python312())
            return 0
        if "--python311" in argv:  # optional: prints nothing when absent
            print(find_python(11) or "")
            return 0
        if "--install" in argv and not install("--test" in argv):
            return 1
        python312()
        check_stack()
        if "--test" in argv:
            chromium()
    except Missing as exc:
        print(f"preflight: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
