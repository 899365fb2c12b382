"""Headless Chromium for the lab's tests and benchmarks: Debian's build (no browser is ever
downloaded) with the flags that make it behave on a machine without a GPU."""

from __future__ import annotations

import os
import shutil

CHROMIUM = "/usr/bin/chromium"
# SwiftShader asked for explicitly: Chrome 144+ no longer falls back to it for WebGL on its own.
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--use-angle=swiftshader",
    "--enable-unsafe-swiftshader",
]


def executable() -> str:
    """Debian's chromium, or a clear message saying how to install it."""
    path = shutil.which("chromium") or (CHROMIUM if os.path.exists(CHROMIUM) else None)
    if not path:
        raise SystemExit("chromium is missing: install Debian's package (sudo apt-get install chromium)")
    return path
