"""The load generator process of `make load`: locust, headless, through its Python API.

run.py starts this in a process of its own (locust monkey-patches the interpreter with gevent on
import, which a Firestore gRPC client in the same process would not survive). It ramps the users of
locustfile.py up step by step (StepShape), keeps the statistics of each step apart, stops at the
first step whose p95 or error rate passes the limit, at the user target, or at the time bound, and
writes everything (steps, totals, errors, what each user uploaded and predicted, its own CPU time) as JSON to --out.
"""

from __future__ import annotations

from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import json  # noqa: E402
import resource  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import gevent  # noqa: E402
from locust.env import Environment  # noqa: E402
from locust.runners import STATE_STOPPED  # noqa: E402
from locust.shape import LoadTestShape  # noqa: E402
from locust.stats import calculate_response_time_percentile  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import locustfile  # noqa: E402

AGGREGATED = "Aggregated"
MIX = "Mix (without sign-in)"


def _percentiles(times: dict[int, int], count: int) -> dict[str, float]:
    if not count:
        return {"p50": 0, "p95": 0, "p99": 0, "max": 0}
    return {
        "p50": calculate_response_time_percentile(times, count, 0.50),
        "p95": calculate_response_time_percentile(times, count, 0.95),
        "p99": calculate_response_time_percentile(times, count, 0.99),
        "max": max(times),
    }


class Window:
    """Requests of one stretch of time, per request type, mergeable into the run's totals."""

    def __init__(self) -> None:
        self.types: dict[str, dict[str, Any]] = {}
        self.errors: dict[str, int] = {}
        self.seconds = 0.0

    def add_stats(self, stats: Any, seconds: float) -> None:
        self.seconds += seconds
        for entry in stats.entries.values():
            t = self.types.setdefault(entry.name, {"requests": 0, "failures": 0, "times": {}})
            t["requests"] += entry.num_requests
            t["failures"] += entry.num_failures
            for ms, n in entry.response_times.items():
                t["times"][ms] = t["times"].get(ms, 0) + n
        for err in stats.errors.values():
            key = f"{err.name}: {err.error}"
            self.errors[key] = self.errors.get(key, 0) + err.occurrences

    def merge(self, other: Window) -> None:
        self.seconds += other.seconds
        for name, o in other.types.items():
            t = self.types.setdefault(name, {"requests": 0, "failures": 0, "times": {}})
            t["requests"] += o["requests"]
            t["failures"] += o["failures"]
            for ms, n in o["times"].items():
                t["times"][ms] = t["times"].get(ms, 0) + n
        for key, n in other.errors.items():
            self.errors[key] = self.errors.get(key, 0) + n

    def summary(self) -> dict[str, Any]:
        rows = {name: self._row(t["requests"], t["failures"], t["times"]) for name, t in sorted(self.types.items())}
        rows[MIX] = self._merged([t for name, t in self.types.items() if name not in locustfile.SIGN_IN_REQUESTS])
        rows[AGGREGATED] = self._merged(list(self.types.values()))
        return {
            "seconds": round(self.seconds, 2),
            "types": rows,
            "errors": dict(sorted(self.errors.items(), key=lambda kv: -kv[1])),
        }

    def _merged(self, types: list[dict[str, Any]]) -> dict[str, Any]:
        times: dict[int, int] = {}
        for t in types:
            for ms, n in t["times"].items():
                times[ms] = times.get(ms, 0) + n
        return self._row(sum(t["requests"] for t in types), sum(t["failures"] for t in types), times)

    def _row(self, requests: int, failures: int, times: dict[int, int]) -> dict[str, Any]:
        return {
            "requests": requests,
            "failures": failures,
            "error_pct": round(100.0 * failures / requests, 3) if requests else 0.0,
            "rps": round(requests / self.seconds, 2) if self.seconds else 0.0,
            **_percentiles(times, sum(times.values())),
        }


class StepShape(LoadTestShape):
    """Users step through `schedule` (a list of user counts), one step every step_seconds, each step's
    new users arriving evenly over spawn_seconds. Stops after the first step that bends (p95 of the
    `bend_on` requests over p95_limit_ms, or errors of all requests over error_limit_pct), after a
    full step at the last count, or at the time bound."""

    def __init__(
        self,
        *,
        schedule: list[int],
        step_seconds: float,
        seconds: float,
        p95_limit_ms: float,
        error_limit_pct: float,
        spawn_seconds: float,
        bend_on: str = "mix",
        progress: bool = True,
    ) -> None:
        super().__init__()
        self.schedule, self.step_seconds, self.seconds = schedule, step_seconds, seconds
        self.p95_limit_ms, self.error_limit_pct = p95_limit_ms, error_limit_pct
        self.spawn_seconds, self.progress = spawn_seconds, progress
        self.bend_row = MIX if bend_on == "mix" else AGGREGATED
        self.steps: list[dict[str, Any]] = []
        self.totals = Window()
        self.bent: dict[str, Any] | None = None
        self.stop_reason: str | None = None
        self._step = 0
        self._step_started = 0.0

    def target(self, step: int) -> int:
        return self.schedule[min(step, len(self.schedule) - 1)]

    def spawn_rate(self, step: int) -> float:
        new = self.target(step) - (self.target(step - 1) if step else 0)
        return max(new, 1) / max(0.1, self.spawn_seconds)

    def _close_step(self, now: float) -> dict[str, Any]:
        stats = self.runner.environment.stats
        window = Window()
        window.add_stats(stats, now - self._step_started)
        stats.reset_all()
        self.totals.merge(window)
        step = {
            "step": self._step + 1,
            "target_users": self.target(self._step),
            "users": self.runner.user_count,
            **window.summary(),
        }
        self.steps.append(step)
        self._step_started = now
        agg = step["types"][AGGREGATED]
        if self.progress:
            print(
                f"load: step {step['step']:>2}  {step['users']:>5} users  {agg['rps']:>7.1f} req/s  "
                f"p50 {agg['p50']:>5.0f}  p95 {agg['p95']:>5.0f}  p99 {agg['p99']:>5.0f} ms  "
                f"errors {agg['error_pct']:.2f}%  (mix p95 {step['types'][MIX]['p95']:.0f} ms)",
                flush=True,
            )
        return step

    def _over(self, step: dict[str, Any]) -> list[str]:
        agg, basis = step["types"][AGGREGATED], step["types"][self.bend_row]
        over = []
        if basis["p95"] > self.p95_limit_ms:
            slow = [
                f"{name} {row['p95']:.0f} ms"
                for name, row in step["types"].items()
                if name not in (AGGREGATED, MIX)
                and row["p95"] > self.p95_limit_ms
                and (self.bend_row == AGGREGATED or name not in locustfile.SIGN_IN_REQUESTS)
            ]
            what = "p95" if self.bend_row == AGGREGATED else "p95 of the mix"
            over.append(
                f"{what} {basis['p95']:.0f} ms > {self.p95_limit_ms:.0f} ms"
                + (f" (over the limit: {', '.join(slow)})" if slow else "")
            )
        if agg["error_pct"] > self.error_limit_pct:
            over.append(f"errors {agg['error_pct']:.2f}% > {self.error_limit_pct:g}%")
        return over

    def tick(self) -> tuple[int, float] | None:
        if self.stop_reason:
            return None
        now = self.get_run_time()
        timed_out = now >= self.seconds
        step = int(now // self.step_seconds)
        if timed_out or step != self._step:
            if now - self._step_started >= 1.0:  # a last stretch shorter than a second says nothing
                closed = self._close_step(now)
                over = self._over(closed)
                if over:
                    self.bent = {"step": closed["step"], "users": closed["users"], "why": "; ".join(over)}
                    self.stop_reason = f"bent at step {closed['step']} ({closed['users']} users): {'; '.join(over)}"
                    return None
            if timed_out:
                self.stop_reason = f"time bound ({self.seconds:.0f} s) reached"
                return None
            if self._step >= len(self.schedule) - 1:
                self.stop_reason = f"reached {self.schedule[-1]} users and held them for a step without bending"
                return None
            self._step = step
        return self.target(self._step), self.spawn_rate(self._step)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", required=True, help="the gateway, e.g. http://127.0.0.1:8080")
    ap.add_argument("--users-file", required=True, help="JSON list of {uid, email, password}")
    ap.add_argument("--out", required=True, help="where to write the results (JSON)")
    ap.add_argument(
        "--schedule", default="10,25,50,100,150,200,300,400,500,650,800,1000", help="user counts, one per step"
    )
    ap.add_argument("--step-seconds", type=float, default=20.0)
    ap.add_argument("--seconds", type=float, default=300.0, help="time bound of the whole ramp")
    ap.add_argument("--p95-ms", type=float, default=500.0)
    ap.add_argument("--error-pct", type=float, default=1.0)
    ap.add_argument(
        "--spawn-seconds",
        type=float,
        default=None,
        help="each step's new users arrive evenly over this (default: 80%% of a step)",
    )
    ap.add_argument(
        "--bend-on",
        choices=("mix", "all"),
        default="mix",
        help="whose p95 decides the bend: the repeated mix, or all requests with sign-ins too",
    )
    ap.add_argument(
        "--predictors-file", default=None, help="the prediction mix's deployments and keys (JSON; predictions.py)"
    )
    ap.add_argument("--stop-timeout", type=float, default=60.0, help="time users get to finish their task")
    args = ap.parse_args(argv)

    locustfile.load_accounts(args.users_file)
    user_classes: list[type] = [locustfile.LabUser]
    if locustfile.load_predictors(args.predictors_file) and locustfile.PREDICT_WEIGHT > 0:
        user_classes.append(locustfile.PredictUser)
    schedule = [int(x) for x in args.schedule.split(",") if x.strip()]
    if not schedule or any(b <= a for a, b in zip(schedule, schedule[1:], strict=False)) or schedule[0] < 1:
        ap.error("--schedule: user counts, rising, from 1")
    shape = StepShape(
        schedule=schedule,
        step_seconds=args.step_seconds,
        seconds=args.seconds,
        p95_limit_ms=args.p95_ms,
        error_limit_pct=args.error_pct,
        bend_on=args.bend_on,
        spawn_seconds=args.spawn_seconds or 0.8 * args.step_seconds,
    )
    # stop_timeout: a stopping user finishes its task first, so no upload is cut off between its PUT
    # and the note of it that the Firestore check relies on.
    env = Environment(user_classes=user_classes, shape_class=shape, host=args.host, stop_timeout=args.stop_timeout)
    runner = env.create_local_runner()
    started = time.time()
    runner.start_shape()
    hard_stop = time.monotonic() + args.seconds + args.stop_timeout + 60
    gevent.sleep(1)
    while runner.state != STATE_STOPPED and time.monotonic() < hard_stop:
        gevent.sleep(0.5)
    if runner.state != STATE_STOPPED:
        shape.stop_reason = (shape.stop_reason or "") + " (stopped by the hard time limit)"
        runner.stop()
    # Requests that finished while the users stopped: part of the totals, not of any step.
    tail = Window()
    tail.add_stats(env.stats, 0.0)
    shape.totals.merge(tail)
    runner.quit()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    result = {
        "started_at": started,
        "finished_at": time.time(),
        "stop_reason": shape.stop_reason,
        "bent": shape.bent,
        "steps": shape.steps,
        "totals": shape.totals.summary(),
        "max_users_reached": max((s["users"] for s in shape.steps), default=0),
        "settings": {k: v for k, v in vars(args).items() if k not in ("out", "users_file")},
        "locust_cpu_s": usage.ru_utime + usage.ru_stime,
        "uploads": dict(locustfile.UPLOADS),
        "predictions": locustfile.PREDICTIONS,
    }
    Path(args.out).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
