"""Cold start: importing any mllab module must not load a google-cloud client library."""

from __future__ import annotations

import json
import pkgutil
import subprocess
import sys

import mllab


def test_no_mllab_module_loads_google_cloud_at_import() -> None:
    modules = sorted(m.name for m in pkgutil.walk_packages(mllab.__path__, "mllab.") if not m.ispkg)
    assert {
        "mllab.platform.config",
        "mllab.platform.clients",
        "mllab.api.http",
        "mllab.platform.log",
        "mllab.identity.tokens",
        "mllab.api.routes",
        "mllab.platform.clock",
        "mllab.files.events",
        "mllab.files.storage",
    } <= set(modules)
    # functions-framework's nspkg .pth creates the empty `google.cloud` namespace at interpreter
    # start; what counts is what importing mllab adds.
    code = (
        "import importlib, json, sys\n"
        "before = set(sys.modules)\n"
        f"for name in {modules!r}: importlib.import_module(name)\n"
        "print(json.dumps(sorted(m for m in set(sys.modules) - before\n"
        "                        if m.startswith(('google.cloud', 'google.api_core', 'grpc')))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == []


def test_a_process_that_metered_nothing_exits_without_loading_firestore() -> None:
    # The metering module's exit handler writes buffered counts; with none, it must not import the
    # client on the way out (a second of CPU on a busy instance, for nothing).
    code = (
        "import atexit, sys\n"
        "atexit.register(lambda: print('google.cloud.firestore' in sys.modules))\n"  # last in, so run after
        "import mllab.serving.metering\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"
