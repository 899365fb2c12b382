"""Server-side inference, measured: plain Python against numpy for the lab's networks at 1 to 1,000
instances (the figures behind mllab.serving.network's PYTHON_MAX_MACS), what numpy costs a cold
start, and whole predictions (encode + network + decode) of the issue's 3x64 network.

Run alone: `.venv/bin/python tests/bench/predict_bench.py` (about a minute). Numbers only; nothing
here passes or fails."""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # for tests.unit.serving_support, when run as a script

from mllab.serving import network  # noqa: E402
from mllab.serving.predictor import Model  # noqa: E402
from tests.unit.serving_support import categorical, files, numeric  # noqa: E402

RUNS = int(os.environ.get("BENCH_RUNS", "5"))
BATCHES = (1, 10, 100, 1000)

# (name, features, hidden layers, task): the XOR demo, a small tabular model, the 3x64, a wide one
NETWORKS = [
    ("xor 2-8-1", [numeric("x1"), numeric("x2")], [(8, "tanh")], "binary"),
    ("tabular 15-12-6-4-1", [numeric(f"n{i}", missing_indicator=True) for i in range(3)]
     + [categorical("c", [f"v{i}" for i in range(8)])], [(12, "tanh"), (6, "sigmoid"), (4, "linear")], "binary"),
    ("3x64 (20 in, 3 out)", [numeric(f"x{i}") for i in range(20)], [(64, "relu")] * 3, "multiclass"),
    ("wide 200-256x3-1", [numeric(f"x{i}") for i in range(200)], [(256, "relu")] * 3, "regression"),
]  # fmt: skip


def best_ms(fn: Callable[[], object], runs: int) -> float:
    """CPU milliseconds per call (this process, all threads): the median of `runs` timings, each the
    mean over enough calls to last >= 20 ms. CPU time, not wall time: the machine is shared, and
    what a function instance pays for is its CPU."""
    calls = 1
    while True:
        t0 = time.process_time()
        for _ in range(calls):
            fn()
        if time.process_time() - t0 >= 0.02 or calls >= 1 << 14:
            break
        calls *= 2
    samples = []
    for _ in range(runs):
        t0 = time.process_time()
        for _ in range(calls):
            fn()
        samples.append((time.process_time() - t0) / calls * 1000)
    return statistics.median(samples)


def fresh_import_ms(statement: str) -> float:
    """Median CPU time of `statement` in fresh interpreters (disk cache warm)."""
    code = f"import time; t0 = time.process_time(); {statement}; print((time.process_time() - t0) * 1000)"
    out = [float(subprocess.check_output([sys.executable, "-c", code], text=True)) for _ in range(RUNS)]
    return statistics.median(out)


def cold_start_section() -> None:
    print(f"\n== cold start: what inference adds to a fresh interpreter (median of {RUNS})")
    serving = fresh_import_ms("import mllab.serving.predictor")
    numpy = fresh_import_ms("import numpy")
    left = subprocess.check_output(
        [sys.executable, "-c", "import sys, mllab.serving.predictor; print('numpy' in sys.modules)"], text=True
    ).strip()
    print(f"import mllab.serving.predictor      {serving:7.1f} ms   (numpy loaded by it: {left})")
    print(f"import numpy                        {numpy:7.1f} ms   (paid only by the first request above the cut-off)")


def engines_section() -> list[tuple[int, float, float]]:
    print(f"\n== the network alone: plain Python vs numpy, CPU ms per call (median of {RUNS})")
    print(f"{'network':<22} {'weights':>8} {'batch':>6} {'macs':>10} {'python':>9} {'numpy':>9}  faster")
    seen = []
    for name, features, hidden, task in NETWORKS:
        model = Model.from_files(*files(features, hidden, task))
        net = model.network
        for batch in BATCHES:
            rows = model.preprocessor.encode([dict.fromkeys(model.preprocessor.names, 0.5)] * batch)
            macs = batch * net.params
            py = best_ms(lambda n=net, r=rows: n.forward_python(r), RUNS) if macs <= 3_000_000 else float("nan")
            np_ = best_ms(lambda n=net, r=rows: n.forward_numpy(r), RUNS)
            faster = "numpy" if not py <= np_ else "python"
            print(f"{name:<22} {net.params:>8} {batch:>6} {macs:>10} {py:>9.3f} {np_:>9.3f}  {faster}")
            seen.append((macs, py, np_))
    return seen


def predict_section() -> None:
    print(f"\n== whole predictions of the 3x64 network (encode + network + decode), median of {RUNS}")
    name, features, hidden, task = NETWORKS[2]
    model = Model.from_files(*files(features, hidden, task))
    instance = {f"x{i}": i / 10 for i in range(20)}
    for batch in (1, 1000):
        ms = best_ms(lambda b=batch: model.predict([instance] * b), RUNS)
        path = "numpy" if "numpy" in sys.modules or batch * model.network.params > network.PYTHON_MAX_MACS else "python"
        print(
            f"{batch:>5} instance{'s' if batch > 1 else ' '}: {ms:8.3f} ms  ({path}; {ms / batch * 1000:.1f} µs each)"
        )
    rows = model.preprocessor.encode([instance] * 1000)
    computed = best_ms(lambda: model.network.forward_numpy(rows), RUNS)
    print(f"1,000 instances of the 3x64 network computed: {computed:.2f} ms (the network alone; goal: at most 20 ms)")


def main() -> int:
    print(f"predict bench: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}; CPU ms, not wall ms")
    cold_start_section()
    seen = engines_section()
    crossover = min((m for m, py, np_ in seen if np_ < py), default=None)
    slowest_py_win = max((m for m, py, np_ in seen if py <= np_), default=None)
    print(f"\nnumpy first faster at {crossover} multiply-adds; plain Python still faster up to {slowest_py_win}")
    print(f"the engine: plain Python up to {network.PYTHON_MAX_MACS} multiply-adds per request until numpy is loaded")
    predict_section()
    return 0


if __name__ == "__main__":
    sys.exit(main())
