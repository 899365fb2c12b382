"""The local gateway's CPU per proxied request (its share of `make load`'s functions + gateway figure).

The gateway runs as the stack runs it (mllab_dev.stack.gateway_argv: gunicorn gthread, one worker) in
front of a trivial function under functions-framework (tests/bench/echo: a small JSON body, two
Set-Cookie headers, a few more). CLIENTS threads send CALLS requests over keep-alive connections, half
GET /me with a bearer token and half POST /projects with a small JSON body, with a browser's headers.
CPU is read from /proc per process group (user + system, the gunicorn master and its worker), each
group's idle rate subtracted. In the same run, the same requests go straight to the function: its CPU
per request is the baseline the gateway's is set beside (both are one HTTP server answering the same
requests; the gateway also makes one); and the floor, the gateway's gunicorn (same settings) with a WSGI
app that answers at once (tests/bench/echo/wsgi.py): what no change to the gateway's code can save. Then
the gateway app alone, in this process without gunicorn, single-threaded: its CPU per request; PROFILE=1
adds cProfile's top functions by process CPU (TOP=n rows). Each run is repeated ROUNDS times (the
machine's load moves each figure), then the medians and the least of each column. Numbers only;
nothing here passes or fails.

    .venv/bin/python tests/bench/gateway_bench.py   # GATEWAY_CALLS=4000 GATEWAY_CLIENTS=4 GATEWAY_ROUNDS=3
"""

from __future__ import annotations

import cProfile
import http.client
import io
import json
import math
import os
import pstats
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
from werkzeug.test import EnvironBuilder

from mllab.platform import log
from mllab_dev.stack import ROOT, Ports, gateway_argv

HERE = Path(__file__).resolve().parent
CALLS = int(os.environ.get("GATEWAY_CALLS", "4000"))
CLIENTS = int(os.environ.get("GATEWAY_CLIENTS", "4"))
ROUNDS = int(os.environ.get("GATEWAY_ROUNDS", "3"))
THREADS = int(os.environ.get("GATEWAY_THREADS", "32"))  # the stack's default (make load runs 200)
IDLE_S = 2.0

BROWSER = {
    "User-Agent": "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0 Safari/537.36",
    "Accept": "application/json",
    "Accept-Language": "en-GB,en;q=0.9",
    "Accept-Encoding": "gzip, deflate, br",
    "Origin": "http://127.0.0.1:8080",
    "Referer": "http://127.0.0.1:8080/",
    "Authorization": "Bearer eyJhbGciOiJFUzI1NiJ9." + "p" * 220 + "." + "s" * 86,
}
REQUESTS: list[tuple[str, str, bytes | None, dict[str, str]]] = [
    ("GET", "/me", None, BROWSER),
    (
        "POST",
        "/projects",
        b'{"name": "bench project", "description": "a small JSON body"}',
        {**BROWSER, "Content-Type": "application/json", "X-CSRF-Token": "x" * 43},
    ),
]


def group_cpu(pgid: int) -> float:
    """CPU seconds (user + system, reaped children included) of every process in a process group."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == pgid:
            total += sum(int(x) for x in fields[11:15]) / tick
    return total


@contextmanager
def server(argv: list[str], env: dict[str, str], ready: str, log_path: Path) -> Iterator[int]:
    """A server in a process group of its own until the block ends; yields the group id."""
    with open(log_path, "ab") as out:
        proc = subprocess.Popen(argv, env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(ready, timeout=2).status_code < 500:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{argv[0]} did not start: {log_path.read_text()[-2000:]}")
            time.sleep(0.2)
        yield proc.pid
    finally:
        proc.terminate()
        proc.wait(timeout=15)


def drive(port: int, calls: int) -> None:
    """`calls` requests from CLIENTS threads, each over one keep-alive connection."""
    failures: list[str] = []

    def client(n: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        try:
            for i in range(n):
                method, path, body, headers = REQUESTS[i % len(REQUESTS)]
                conn.request(method, path, body=body, headers=headers)
                r = conn.getresponse()
                r.read()
                if r.status != 200:
                    failures.append(f"{method} {path}: {r.status}")
        finally:
            conn.close()

    threads = [threading.Thread(target=client, args=(calls // CLIENTS,)) for _ in range(CLIENTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if failures:
        raise RuntimeError(f"{len(failures)} requests failed, e.g. {failures[0]}")


def measured(port: int, groups: dict[str, int]) -> dict[str, float]:
    """CPU ms per request of each process group above its idle rate, and wall ms per request."""
    drive(port, 200)  # warm: connections, imports, caches
    idle0 = {name: group_cpu(pgid) for name, pgid in groups.items()}
    time.sleep(IDLE_S)
    idle = {name: (group_cpu(pgid) - idle0[name]) / IDLE_S for name, pgid in groups.items()}
    before = {name: group_cpu(pgid) for name, pgid in groups.items()}
    started = time.perf_counter()
    drive(port, CALLS)
    wall = time.perf_counter() - started
    calls = CALLS // CLIENTS * CLIENTS
    out = {
        name: max(0.0, group_cpu(pgid) - before[name] - idle[name] * wall) / calls * 1000
        for name, pgid in groups.items()
    }
    return {**out, "wall": wall / calls * 1000}


def in_process(topology: dict[str, Any], profile: bool) -> float:
    """The gateway app's own CPU per request, without gunicorn: WSGI calls from this thread."""
    from mllab_dev.gateway import Gateway

    app = Gateway(topology)
    environs = []
    for method, path, body, headers in REQUESTS:
        environ = EnvironBuilder(path=path, method=method, headers=headers, data=body or b"").get_environ()
        environ["REMOTE_ADDR"] = "127.0.0.1"
        environs.append((environ, body or b""))

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> None:
        assert status.startswith("200"), status

    def call(i: int) -> None:
        environ, body = environs[i % len(environs)]
        result = app({**environ, "wsgi.input": io.BytesIO(body)}, start_response)
        for _ in result:
            pass
        getattr(result, "close", lambda: None)()

    for i in range(200):
        call(i)
    prof = cProfile.Profile(time.process_time) if profile else None
    cpu = time.process_time()
    if prof:
        prof.enable()
    for i in range(CALLS):
        call(i)
    if prof:
        prof.disable()
    cpu = (time.process_time() - cpu) / CALLS * 1000
    if prof:
        out = io.StringIO()
        stats = pstats.Stats(prof, stream=out)
        stats.sort_stats("tottime").print_stats(int(os.environ.get("TOP", "25")))
        stats.sort_stats("cumulative").print_stats(int(os.environ.get("TOP", "25")))
        print(out.getvalue())
    return cpu


def _row(label: str, row: tuple[float, float, float]) -> None:
    print(f"{label:34} " + " ".join(f"{v:{w}.3f}" if v == v else " " * w for v, w in zip(row, (8, 9, 8), strict=True)))


def main() -> int:
    ports = Ports.free()
    gateway_port, function_port, floor_port = ports.gateway, ports.firestore, ports.pubsub
    venv_bin = Path(sys.executable).parent
    with tempfile.TemporaryDirectory() as tmp:
        topology = {
            "frontend": str(ROOT / "frontend"),
            "components": [],
            "functions": {"account": function_port, "catalog": function_port},
        }
        topo_file = Path(tmp) / "topology.json"
        topo_file.write_text(json.dumps(topology))
        env = {**os.environ, "MLLAB_DEV_TOPOLOGY": str(topo_file), "PYTHONUNBUFFERED": "1"}
        function = [str(venv_bin / "functions-framework"), "--source", str(HERE / "echo" / "main.py")]
        function += ["--target", "echo", "--host", "127.0.0.1", "--port", str(function_port)]
        logs = Path(tmp)
        # the floor: the gateway's gunicorn, same settings, with an app that answers at once
        floor = [*gateway_argv(venv_bin, floor_port, THREADS)[:-1], "--chdir", str(HERE / "echo"), "wsgi:app"]
        with (
            server(function, env, f"http://127.0.0.1:{function_port}/", logs / "function.log") as fn_group,
            server(
                gateway_argv(venv_bin, gateway_port, THREADS),
                env,
                f"http://127.0.0.1:{gateway_port}/config.json",
                logs / "gateway.log",
            ) as gw_group,
            server(floor, env, f"http://127.0.0.1:{floor_port}/", logs / "floor.log") as floor_group,
        ):
            print("load average {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))
            print(f"{CALLS} requests a run (GET /me, POST /projects), {CLIENTS} keep-alive clients, {THREADS} threads")
            print(f"{'CPU ms per request above idle':34} {'gateway':>8} {'function':>9} {'wall ms':>8}")
            runs: dict[str, list[tuple[float, float, float]]] = {}
            for n in range(1, ROUNDS + 1):
                direct = measured(function_port, {"function": fn_group})
                via = measured(gateway_port, {"gateway": gw_group, "function": fn_group})
                bare = measured(floor_port, {"floor": floor_group})
                rows = {
                    "straight to the function": (math.nan, direct["function"], direct["wall"]),
                    "through the gateway": (via["gateway"], via["function"], via["wall"]),
                    "gateway's gunicorn, bare app": (bare["floor"], math.nan, bare["wall"]),
                }
                for label, row in rows.items():
                    runs.setdefault(label, []).append(row)
                    _row(f"{n}: {label}", row)
            if ROUNDS:
                medians = {
                    label: tuple(statistics.median(col) for col in zip(*r, strict=True)) for label, r in runs.items()
                }
                for label, row in medians.items():
                    _row(f"median: {label}", row)
                for label, r in runs.items():  # the least disturbed by the machine's other work
                    _row(f"least: {label}", tuple(min(col) for col in zip(*r, strict=True)))
                ratio = medians["through the gateway"][0] / medians["straight to the function"][1]
                print(f"median gateway / function straight: {ratio:.2f}")
            log.stream = open(os.devnull, "w")  # noqa: SIM115 - the in-process app's request lines, for the run
            profile = os.environ.get("PROFILE") in ("1", "cpu")
            print(f"{'gateway app in-process':34} {in_process(topology, profile):8.3f}   (no gunicorn, one thread)")
            print("load average {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
