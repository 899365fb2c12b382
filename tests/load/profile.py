"""`MLLAB_LOAD_PROFILE=<seconds> make load`: where each function's Python CPU goes under the load mix.

py-spy samples each function's gunicorn worker and the gateway's worker from the ramp's start for the
given seconds, with `--gil`: only the thread holding the GIL, i.e. Python running, not a thread waiting
on Firestore or for a request. Raw collapsed stacks go to .dev/load/profile/<process>.txt (flamegraph
input); the report prints, per process, how many samples it took and the share of them spent (inclusive)
in each of our functions and, by library, where the leaf frames were (self). The samplers use CPU
themselves: a profiled run measures where the time goes, an unprofiled one how much there is.
"""

from __future__ import annotations

import collections
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

RATE_HZ = 50
# Leaf frames are grouped by the library whose file they are in; the first of these a path contains names it.
LIBRARIES = (
    "mllab",
    "grpc",
    "google/cloud/firestore",
    "google/api_core",
    "google/protobuf",
    "proto",
    "flask",
    "werkzeug",
    "gunicorn",
    "functions_framework",
    "pydantic",
    "jwt",
    "cryptography",
    "http/client",
    "json",
    "threading",
    "concurrent",
    "copy",
    "logging",
)
_FRAME = re.compile(r"(?P<func>\S+) \((?P<file>[^():]+)(?::\d+)?\)")


def workers(stack: Any, pids_of: Callable[[], Iterable[tuple[int, int, int]]]) -> dict[str, int]:
    """The worker process of each function and of the gateway: the child of the process the stack
    started (gunicorn's master). `pids_of()` yields (pid, parent pid, process group) of every process."""
    leaders = {
        c.proc.pid: c.name for c in stack.children if c.proc and (c.name.startswith("fn:") or c.name == "gateway")
    }
    return {leaders[ppid]: pid for pid, ppid, _ in pids_of() if ppid in leaders}


def proc_pids() -> Iterable[tuple[int, int, int]]:
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        yield int(stat.parent.name), int(fields[1]), int(fields[2])


def start(targets: dict[str, int], seconds: float, out_dir: Path) -> list[tuple[str, Path, subprocess.Popen]]:
    """One py-spy per process, recording for `seconds` into out_dir/<name>.txt."""
    spy = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which("py-spy")
    if spy is None:
        raise RuntimeError("py-spy is not installed: `make .venv/.installed` installs the pinned one")
    out_dir.mkdir(parents=True, exist_ok=True)
    runs = []
    for name, pid in sorted(targets.items()):
        out = out_dir / f"{name.replace(':', '-')}.txt"
        argv = [spy, "record", "--gil", "--nonblocking", "-r", str(RATE_HZ), "-d", str(int(seconds))]
        argv += ["-f", "raw", "-o", str(out), "-p", str(pid)]
        runs.append((name, out, subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)))
    return runs


def _file(frame: str) -> tuple[str, str]:
    m = _FRAME.fullmatch(frame.strip())
    if not m:
        return frame, ""
    path = m.group("file").split("site-packages/")[-1]
    for ours in ("/shared/mllab/", "/mllab_dev/"):  # the package, and the local stack's gateway
        if ours in path:
            path = path[path.index(ours) + 1 :].removeprefix("shared/")
    return m.group("func"), path


def summarize(raw: str, top: int = 12) -> tuple[int, list[tuple[str, float]], list[tuple[str, float]]]:
    """(samples, [(our function, inclusive share)], [(library, self share)]) of py-spy's raw output:
    one line a stack, `frame;frame;... count`, outermost first."""
    ours: collections.Counter[str] = collections.Counter()
    libraries: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = [_file(f) for f in stack.split(";")]
        seen = {
            f"{path.removesuffix('.py')}.{func}" for func, path in frames if path.startswith(("mllab/", "mllab_dev/"))
        }
        for name in seen:
            ours[name.replace("/", ".")] += n
        leaf = frames[-1][1]
        libraries[next((lib for lib in LIBRARIES if lib in leaf), "other")] += n
    if not total:
        return 0, [], []
    share = [(k, v / total) for k, v in ours.most_common(top)]
    return total, share, [(k, v / total) for k, v in libraries.most_common(top)]


def report(runs: list[tuple[str, Path, subprocess.Popen]], echo: Callable[[str], None] = print) -> None:
    for _, _, proc in runs:
        proc.wait()
    echo(f"\nPython CPU profile under the load (py-spy --gil, {RATE_HZ} Hz; raw stacks in {runs[0][1].parent}):")
    idle = []
    for name, out, _ in runs:
        total, ours, libraries = summarize(out.read_text() if out.exists() else "")
        if not total:
            idle.append(name)
            continue
        echo(f"  {name}: {total} samples")
        echo("    ours, inclusive: " + ", ".join(f"{k} {v:.0%}" for k, v in ours[:8]))
        echo("    leaf frames by library: " + ", ".join(f"{k} {v:.0%}" for k, v in libraries[:8]))
    if idle:
        echo(f"  no samples (no Python ran): {', '.join(idle)}")
