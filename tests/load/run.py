"""`make load`: a locust ramp against the local stack, then a check that Firestore matches what was done.

1. Starts the local stack (infra/local/mllab_dev/stack.py) on free ports, each function under
   functions-framework with as many gunicorn threads as its deployed concurrency (infra/deployment/
   sizing.py; one worker, i.e. one instance per function) and the gateway with enough threads not to
   be the limit.
2. Creates the accounts in bulk, straight in Firestore (one Argon2id hash shared by all), each with an
   operator grant of PRO so uploads are allowed.
3. Runs locust headless in a process of its own (drive.py; the behaviour is locustfile.py): the users
   step through a schedule (10, 25, 50, 100, 150, 200, 300, ... 1000 by default), each step's new users
   signing in evenly over it, and stops at the first step whose p95 passes P95_MS or whose errors pass
   ERROR_PCT, or at the time bound. The p95 that decides is the repeated mix's (refresh, /me, versions,
   signed uploads, PUTs) unless BEND_ON=all: how fast users arrive to sign in is the ramp's choice, not
   the system's capacity; sign-in latency is reported per step either way, and errors always count all.
4. Prints a table per step (users, req/s, p50/p95/p99 per request type, errors), the step where it
   bent, and the CPU seconds per request of the functions, the gateway, the emulators and locust
   (from /proc, before and after).
5. Waits for the object-event pipeline to drain, then checks in Firestore that every upload was
   recorded exactly once, that each user's storage usage equals the bytes they uploaded, that the
   daily upload counters match the URLs signed, and that versions with both files are ready.
6. The metering check (predictions.py): the predictions counted in Firestore, per owner and per
   deployment, against the instances of the predict calls answered 200, while the predict function
   still runs (at most the last second's missing) and after it exits (exact).
   Prints PASS/FAIL lines; exits 1 on any mismatch (bending is a measurement, not a failure).

The prediction mix: beside the lab users (refresh, /me, saves), one virtual user in ten
(MLLAB_LOAD_PREDICT_WEIGHT against 9; 0 for none) is a program calling a deployment with an API key,
1 instance or 100 a call; their owners, each with a ready version of tests/golden/lab_model, two
deployments and a key, are made before the ramp.

Settings (environment): MLLAB_LOAD_SECONDS (time bound of the ramp, 300), MLLAB_LOAD_USERS (the last
step, 1000), MLLAB_LOAD_STEPS (user counts, e.g. "5,10,20") or MLLAB_LOAD_STEP_USERS (+N a step instead
of the default schedule), MLLAB_LOAD_STEP_SECONDS (20), MLLAB_LOAD_P95_MS (500), MLLAB_LOAD_ERROR_PCT
(1), MLLAB_LOAD_BEND_ON (mix | all), MLLAB_LOAD_PROFILE (seconds of py-spy profiles of each function's
and the gateway's Python CPU from the ramp's start, tests/load/profile.py; 0: none), MLLAB_LOAD_WAIT
(think time between a user's tasks, "min,max" seconds, "1,5"), MLLAB_LOAD_DRAIN_SECONDS (180).
"""

from __future__ import annotations

import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # for tests.load.predictions, when run as a script
DRIVER = HERE / "drive.py"
PASSWORD = "load test passphrase, not secret"
GATEWAY_THREADS = 200  # the load balancer's stand-in must not be what limits the functions
PREPARE_THREADS = 16
RESULT_FILE = ROOT / ".dev" / "load" / "last-run.json"
DEFAULT_STEPS = (10, 25, 50, 100, 150, 200, 300, 400, 500, 650, 800, 1000)
IDLE_SAMPLE_S = 5.0  # how long each process's idle CPU rate is measured before the ramp
AGGREGATED, MIX = "Aggregated", "Mix (without sign-in)"  # drive.py's summary rows
LOGIN = "POST /auth/login"


def _env_num(name: str, default: float) -> float:
    raw = os.environ.get(name, "").strip()
    return float(raw) if raw else default


def deploy_function_env() -> dict[str, dict[str, str]]:
    """functions-framework's gunicorn (WORKERS, THREADS) per function, from the deploy's sizing table:
    one worker and one thread per request the deployed instance accepts at once."""
    infra = str(ROOT / "infra")
    if infra not in sys.path:
        sys.path.insert(0, infra)
    from deployment import sizing

    return {name: {"WORKERS": "1", "THREADS": str(s.concurrency)} for name, s in sizing.SIZING.items()}


def ramp_schedule(max_users: int, steps: str = "", step_users: int = 0) -> list[int]:
    """User counts, one per step: MLLAB_LOAD_STEPS as given, or +step_users a step, or (default) finer
    steps first, where a small machine bends, then coarser ones up to max_users."""
    if steps.strip():
        return [int(x) for x in steps.split(",") if x.strip()]
    if step_users > 0:
        return list(range(step_users, max_users, step_users)) + [max_users]
    return [n for n in DEFAULT_STEPS if n < max_users] + [max_users]


# --- accounts --------------------------------------------------------------------------------------


def prepare_users(count: int, *, tag: str | None = None, password: str = PASSWORD) -> list[dict[str, str]]:
    """`count` verified password users with PRO (an operator grant), written straight to Firestore.
    Needs the stack's environment in os.environ (FIRESTORE_EMULATOR_HOST, ...)."""
    from mllab.billing import entitlements, subscriptions
    from mllab.identity import passwords, users

    tag = tag or uuid.uuid4().hex[:8]
    hashed = passwords.hash_password(password)  # one hash for all: Argon2id costs ~56 ms each

    def grant(doc: dict[str, Any], now: Any) -> dict[str, Any]:
        return entitlements.with_grant(doc, None, now)

    def one(i: int) -> dict[str, str]:
        email = users.normalize_email(f"load-{tag}-{i}@example.com")
        # An emulator busy on a shared machine may miss a deadline: retry; a create that did land
        # the first time answers None the second, and the identity then names the uid.
        uid = _retried(
            lambda: (
                users.create_password_user(email, hashed, name=f"Load {i}", verified=True)
                or (users.password_identity(email) or {}).get("uid")
            )
        )
        if not uid:
            raise RuntimeError(f"{email} could not be created")
        _retried(lambda: subscriptions.set_grant(uid, grant, actor="load-test"))  # idempotent: PRO with no end
        return {"uid": uid, "email": email, "password": password}

    with ThreadPoolExecutor(PREPARE_THREADS) as pool:
        return list(pool.map(one, range(count)))


def prepare_predictors(accounts: list[dict[str, str]]) -> dict[str, Any]:
    """The prediction mix's owners (predictions.prepare_owner for each account) and the rows they send:
    {"rows", "owners"}, as drive.py's --predictors-file takes it."""
    from tests.load import predictions

    def one(account: dict[str, str]) -> dict[str, Any]:
        result: dict[str, Any] = _retried(lambda: predictions.prepare_owner(account))
        return result

    with ThreadPoolExecutor(PREPARE_THREADS) as pool:
        owners = list(pool.map(one, accounts))
    return {"rows": predictions.golden_rows(), "owners": owners}


def _retried(call: Callable[[], Any], attempts: int = 5) -> Any:
    from google.api_core.exceptions import DeadlineExceeded, ServiceUnavailable

    for attempt in range(attempts):
        try:
            return call()
        except (DeadlineExceeded, ServiceUnavailable):
            if attempt == attempts - 1:
                raise
            time.sleep(1.0 + attempt)
    return None


def warm_up(base_url: str, account: dict[str, str], rounds: int = 2) -> dict[str, Any]:
    """Every function of the mix serves a few requests before the ramp (their cold starts are
    `make bench`'s subject, not this one's). Returns what it uploaded, as locustfile.UPLOADS holds it,
    so that the Firestore check covers these uploads too."""
    import httpx

    record: dict[str, Any] = {
        "model_id": None,
        "versions": [],
        "objects": {},
        "uncertain": {},
        "signed": 0,
        "sign_failed": 0,
    }
    cookie_h = {"Origin": base_url, "X-CSRF-Token": "1", "Content-Type": "application/json"}
    with httpx.Client(base_url=base_url, timeout=60) as c:

        def ok(r: httpx.Response, status: int = 200) -> httpx.Response:
            if r.status_code != status:
                raise RuntimeError(
                    f"warm-up: {r.request.method} {r.request.url.path} answered {r.status_code}: {r.text[:300]}"
                )
            return r

        def cookie(r: httpx.Response) -> str:
            return r.headers["set-cookie"].split("=", 1)[1].split(";", 1)[0]

        r = ok(
            c.post("/auth/login", headers=cookie_h, json={"email": account["email"], "password": account["password"]})
        )
        token, rt = r.json()["access_token"], cookie(r)
        for _ in range(rounds):
            r = ok(c.post("/auth/refresh", headers={**cookie_h, "Cookie": f"__Host-rt={rt}"}, content=b""))
            token, rt = r.json()["access_token"], cookie(r)
            csrf = ok(c.get("/me", headers={"Authorization": f"Bearer {token}"})).json()["csrf"]
            api = {"Authorization": f"Bearer {token}", "X-CSRF-Token": csrf, "Content-Type": "application/json"}
            if record["model_id"] is None:
                pid = ok(c.post("/projects", headers=api, json={"name": "warm-up"}), 201).json()["id"]
                record["model_id"] = ok(
                    c.post("/models", headers=api, json={"project_id": pid, "name": "warm-up"}), 201
                ).json()["id"]
            n = ok(c.post(f"/models/{record['model_id']}/versions", headers=api, content=b""), 201).json()["version"]
            record["versions"].append(n)
            for kind, data in (("weights", b"\x00" * 128), ("model", b'{"format":"layers-model"}')):
                s = ok(
                    c.post(
                        "/signed/upload",
                        headers=api,
                        json={"kind": kind, "model_id": record["model_id"], "version": n, "size": len(data)},
                    )
                ).json()
                record["signed"] += 1
                ok(httpx.put(s["url"], content=data, headers=s["headers"], timeout=60))
                record["objects"][s["object"]] = len(data)
    return record


# --- the load generator ----------------------------------------------------------------------------


def run_driver(
    host: str,
    accounts: list[dict[str, str]],
    *,
    schedule: list[int],
    step_seconds: float,
    seconds: float,
    p95_ms: float,
    error_pct: float,
    wait: str,
    spawn_seconds: float | None = None,
    bend_on: str = "mix",
    predictors: dict[str, Any] | None = None,
    echo: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Run drive.py (locust) in a child process; its progress lines go to `echo`; returns its results.
    `predictors`: the prediction mix's {"rows", "owners"} (none: lab users only)."""
    with tempfile.TemporaryDirectory(prefix="mllab-load-") as tmp:
        users_file, out = Path(tmp) / "users.json", Path(tmp) / "result.json"
        users_file.write_text(json.dumps(accounts))
        predictors_file = Path(tmp) / "predictors.json"
        predictors_file.write_text(json.dumps(predictors or {"rows": [], "owners": []}))
        cmd = [
            sys.executable,
            str(DRIVER),
            "--host",
            host,
            "--users-file",
            str(users_file),
            "--out",
            str(out),
            "--schedule",
            ",".join(map(str, schedule)),
            "--step-seconds",
            str(step_seconds),
            "--seconds",
            str(seconds),
            "--p95-ms",
            str(p95_ms),
            "--error-pct",
            str(error_pct),
            "--bend-on",
            bend_on,
            "--predictors-file",
            str(predictors_file),
        ]
        if spawn_seconds is not None:
            cmd += ["--spawn-seconds", str(spawn_seconds)]
        env = {**os.environ, "MLLAB_LOAD_WAIT": wait, "PYTHONUNBUFFERED": "1"}
        proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        log: list[str] = []
        try:
            for line in proc.stdout:  # type: ignore[union-attr]
                line = line.rstrip("\n")
                log.append(line)
                if line.startswith("load: "):
                    echo(line)
            code = proc.wait()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        if code != 0 or not out.is_file():
            raise RuntimeError(f"the load generator failed (exit {code}):\n" + "\n".join(log[-40:]))
        result = json.loads(out.read_text())
        result["log_tail"] = log[-20:]
        return result


# --- CPU time from /proc ---------------------------------------------------------------------------


def cpu_seconds(stack: Any) -> dict[str, float]:
    """CPU seconds (user + system, including reaped children) of every process in each stack child's
    process group (a child and what it spawned: gunicorn's workers, gcloud's java)."""
    tick = os.sysconf("SC_CLK_TCK")
    groups = {c.proc.pid: c.name for c in stack.children if c.proc}
    out = dict.fromkeys(groups.values(), 0.0)
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        name = groups.get(int(fields[2]))
        if name is not None:
            out[name] += sum(int(x) for x in fields[11:15]) / tick
    return out


def _part(name: str) -> str:
    if name.startswith("fn:"):
        return "functions"
    return {"gateway": "gateway", "firestore": "emulators", "pubsub": "emulators", "gcs": "emulators"}.get(
        name, "stand-ins"
    )


# --- the Firestore check ---------------------------------------------------------------------------


def wait_for_events(expected: int, timeout: float, echo: Callable[[str], None] = print) -> tuple[int, float]:
    """Wait until the `artifacts` collection holds at least `expected` documents (the recorder has
    caught up), then a little longer so that a late duplicate would show. Returns (count, seconds)."""
    from mllab.files import recorder
    from mllab.platform import clients

    coll = clients.firestore().collection(recorder.ARTIFACTS)
    started = time.monotonic()
    count, last_note = 0, started
    while True:
        count = int(coll.count().get()[0][0].value)
        if count >= expected or time.monotonic() - started > timeout:
            break
        if time.monotonic() - last_note > 10:
            echo(f"load: waiting for the event pipeline: {count}/{expected} objects recorded")
            last_note = time.monotonic()
        time.sleep(1.0)
    waited = time.monotonic() - started
    time.sleep(3.0)
    return int(coll.count().get()[0][0].value), waited


def artifacts_recorded() -> int:
    from mllab.files import recorder
    from mllab.platform import clients

    return int(clients.firestore().collection(recorder.ARTIFACTS).count().get()[0][0].value)


def check_metering(stack: Any, calls: dict[str, Any], months: list[str], echo: Callable[[str], None] = print) -> bool:
    """The metering check (predictions.py): the owners' counts read while the predict function runs,
    then again after it was stopped and started again (its exit handler writes what it buffered)."""
    from mllab.serving import metering
    from tests.load import predictions

    uids = sorted(calls["by_owner"])
    before = predictions.counted(uids, months)
    stack.restart(f"fn:{predictions.PREDICT_FUNCTION}")
    after = predictions.counted(uids, months)
    return predictions.check_metering(calls, before, after, metering.FLUSH_S, echo)


def _user_state(uid: str, model_id: str | None, versions: list[int]) -> dict[str, Any]:
    from google.cloud.firestore_v1.base_query import FieldFilter

    from mllab.files import catalog, recorder
    from mllab.platform import clients

    db = clients.firestore()
    arts = [s.to_dict() for s in db.collection(recorder.ARTIFACTS).where(filter=FieldFilter("uid", "==", uid)).stream()]
    usage = db.collection(recorder.USAGE).document(uid).get()
    days = recorder.day_ref(uid).parent.stream()
    state = {
        "artifacts": arts,
        "storage_bytes": int((usage.to_dict() or {}).get("storage_bytes", 0)) if usage.exists else 0,
        "uploads_counted": sum(int((d.to_dict() or {}).get("uploads", 0)) for d in days),
        "versions": {},
        "latest_version": None,
    }
    if model_id:
        model = db.collection(catalog.MODELS).document(model_id).get()
        state["latest_version"] = (model.to_dict() or {}).get("latest_version") if model.exists else None
        for n in versions:
            snap = catalog.version_ref(model_id, n).get()
            state["versions"][n] = snap.to_dict() if snap.exists else None
    return state


Problems = dict[str, list[str]]


def _check_once(
    uid: str,
    objects: dict[str, int],
    uncertain: dict[str, int],
    seen: dict[str, list[dict[str, Any]]],
    problems: Problems,
) -> None:
    """Each upload recorded exactly once, at its size; nothing recorded that was never uploaded."""
    for name, size in objects.items():
        got = seen.get(name, [])
        if len(got) != 1:
            problems["once"].append(f"{name}: recorded {len(got)} times")
        elif got[0].get("size") != size:
            problems["once"].append(f"{name}: recorded size {got[0].get('size')}, uploaded {size}")
    for name, got in seen.items():
        if name not in objects and name not in uncertain:
            problems["once"].append(f"{name}: recorded but never uploaded by user {uid}")
        elif name in uncertain and len(got) > 1:
            problems["once"].append(f"{name}: recorded {len(got)} times")


def _check_usage(
    uid: str,
    objects: dict[str, int],
    uncertain: dict[str, int],
    seen: dict[str, list[dict[str, Any]]],
    live: list[dict[str, Any]],
    st: dict[str, Any],
    problems: Problems,
) -> None:
    """The user's storage usage and their live artifacts both add up to the bytes they uploaded."""
    expected_bytes = sum(objects.values()) + sum(uncertain[n] for n in uncertain if n in seen)
    recorded_bytes = sum(int(a.get("size") or 0) for a in live)
    if st["storage_bytes"] != expected_bytes or recorded_bytes != expected_bytes:
        problems["usage"].append(
            f"user {uid}: usage {st['storage_bytes']} B, artifacts {recorded_bytes} B, uploaded {expected_bytes} B"
        )


def _check_counter(uid: str, rec: dict[str, Any], st: dict[str, Any], problems: Problems) -> None:
    """The daily upload counters count every URL signed, plus at most those whose answer failed."""
    signed, maybe = rec.get("signed", 0), rec.get("sign_failed", 0)
    if not signed <= st["uploads_counted"] <= signed + maybe:
        problems["counter"].append(
            f"user {uid}: uploads counted {st['uploads_counted']}, URLs signed {signed}"
            + (f" (+{maybe} whose answer failed)" if maybe else "")
        )


def _check_versions(
    uid: str, rec: dict[str, Any], objects: dict[str, int], st: dict[str, Any], problems: Problems
) -> int:
    """Every version allocated exists; those with both files are ready and counted in latest_version.
    Returns how many versions were checked."""
    ready = []
    versions = rec.get("versions", [])
    for n in versions:
        doc = st["versions"].get(n)
        if doc is None:
            problems["versions"].append(f"user {uid}: version {n} was allocated but does not exist")
            continue
        files = [o for o in objects if f"/versions/{n}/" in o]
        if len(files) == 2:
            ready.append(n)
            size = sum(objects[o] for o in files)
            if doc.get("status") != "ready" or doc.get("size_bytes") != size:
                problems["versions"].append(
                    f"user {uid}: version {n} is {doc.get('status')} with "
                    f"{doc.get('size_bytes')} B; both files ({size} B) were uploaded"
                )
    if ready and (st["latest_version"] or 0) < max(ready):
        problems["versions"].append(
            f"user {uid}: latest_version {st['latest_version']}, but version {max(ready)} is complete"
        )
    return len(versions)


def _check_user(uid: str, rec: dict[str, Any], st: dict[str, Any], problems: Problems, totals: dict[str, int]) -> None:
    objects: dict[str, int] = rec.get("objects", {})
    uncertain: dict[str, int] = rec.get("uncertain", {})
    totals["users"] += 1
    totals["objects"] += len(objects)
    totals["bytes"] += sum(objects.values())
    totals["signed"] += rec.get("signed", 0)
    totals["uncertain"] += len(uncertain)
    live = [a for a in st["artifacts"] if not a.get("deleted_at") and not a.get("tombstone")]
    seen: dict[str, list[dict[str, Any]]] = {}
    for a in live:
        seen.setdefault(a["object"], []).append(a)
    _check_once(uid, objects, uncertain, seen, problems)
    _check_usage(uid, objects, uncertain, seen, live, st, problems)
    _check_counter(uid, rec, st, problems)
    totals["versions"] += _check_versions(uid, rec, objects, st, problems)


def _echo_verdicts(problems: Problems, totals: dict[str, int], echo: Callable[[str], None]) -> bool:
    """One PASS/FAIL line per property, with up to five examples of each mismatch; True when all pass."""
    lines = {
        "once": f"every upload recorded exactly once ({totals['objects']} objects of {totals['users']} users"
        + (f"; {totals['uncertain']} PUTs with no answer allowed either way" if totals["uncertain"] else "")
        + ")",
        "usage": f"each user's storage usage equals the bytes they uploaded ({totals['bytes']} bytes in all)",
        "counter": f"daily upload counters equal the upload URLs signed ({totals['signed']})",
        "versions": f"every version allocated exists; those with both files are ready ({totals['versions']} versions)",
    }
    ok = True
    for key, line in lines.items():
        bad = problems[key]
        ok &= not bad
        echo(f"{'PASS' if not bad else 'FAIL'} {line}" + (f": {len(bad)} mismatches" if bad else ""))
        for example in bad[:5]:
            echo(f"       {example}")
    return ok


def check_consistency(uploads: dict[str, dict[str, Any]], echo: Callable[[str], None] = print) -> bool:
    """Firestore against what the virtual users did (locustfile.UPLOADS). Prints one PASS/FAIL line per
    property, with a few examples of any mismatch; True when all pass."""
    problems: Problems = {"once": [], "usage": [], "counter": [], "versions": []}
    totals = {"objects": 0, "bytes": 0, "users": 0, "signed": 0, "versions": 0, "uncertain": 0}

    def one(item: tuple[str, dict[str, Any]]) -> tuple[str, dict[str, Any], dict[str, Any]]:
        uid, rec = item
        return uid, rec, _user_state(uid, rec.get("model_id"), rec.get("versions", []))

    with ThreadPoolExecutor(PREPARE_THREADS) as pool:
        states = list(pool.map(one, uploads.items()))
    for uid, rec, st in states:
        _check_user(uid, rec, st, problems, totals)
    return _echo_verdicts(problems, totals, echo)


# --- the report ------------------------------------------------------------------------------------


def _ms(v: float) -> str:
    return f"{v:,.0f}"


def _echo_steps(steps: list[dict[str, Any]], echo: Callable[[str], None]) -> None:
    echo("\nPer step, all requests (each step's new users arrive and sign in evenly over it); then the p95 of")
    echo("the repeated mix alone (refresh, /me, versions, signed uploads and PUTs, predictions) and of the sign-ins:")
    echo(
        f"{'step':>4} {'users':>6} {'req/s':>8} {'p50 ms':>7} {'p95 ms':>7} {'p99 ms':>7} {'max ms':>7} "
        f"{'requests':>9} {'errors':>7} {'mix p95':>8} {'login p95':>10}"
    )
    for s in steps:
        a, m = s["types"][AGGREGATED], s["types"][MIX]
        login = s["types"].get(LOGIN, {}).get("p95")
        echo(
            f"{s['step']:>4} {s['users']:>6} {a['rps']:>8.1f} {_ms(a['p50']):>7} {_ms(a['p95']):>7} "
            f"{_ms(a['p99']):>7} {_ms(a['max']):>7} {a['requests']:>9} {a['error_pct']:>6.2f}% {_ms(m['p95']):>8} "
            f"{_ms(login) if login is not None else '-':>10}"
        )
    echo("\nPer step and request type:")
    echo(f"{'step':>4} {'users':>6} {'request':34} {'req/s':>7} {'p50':>6} {'p95':>6} {'p99':>6} {'errors':>7}")
    for s in steps:
        for name, t in s["types"].items():
            if name in (AGGREGATED, MIX):
                continue
            echo(
                f"{s['step']:>4} {s['users']:>6} {name:34} {t['rps']:>7.1f} {_ms(t['p50']):>6} {_ms(t['p95']):>6} "
                f"{_ms(t['p99']):>6} {t['error_pct']:>6.2f}%"
            )


def _echo_whole_run(result: dict[str, Any], echo: Callable[[str], None]) -> None:
    totals = result["totals"]
    echo(f"\nWhole run ({totals['seconds']:.0f} s of ramp, up to {result['max_users_reached']} users):")
    echo(f"{'request':34} {'requests':>9} {'req/s':>7} {'p50':>6} {'p95':>6} {'p99':>6} {'max':>7} {'failures':>9}")
    for name, t in totals["types"].items():
        echo(
            f"{name:34} {t['requests']:>9} {t['rps']:>7.1f} {_ms(t['p50']):>6} {_ms(t['p95']):>6} {_ms(t['p99']):>6} "
            f"{_ms(t['max']):>7} {t['failures']:>9}"
        )
    if totals["errors"]:
        echo("\nErrors:")
        for what, n in list(totals["errors"].items())[:10]:
            echo(f"  {n:>6}  {what[:150]}")


def _echo_bend(result: dict[str, Any], echo: Callable[[str], None]) -> None:
    bent = result.get("bent")
    echo("")
    if not bent:
        echo(f"Did not bend: {result['stop_reason']}.")
        return
    good = [s for s in result["steps"] if s["step"] < bent["step"]]
    echo(
        f"Bent at step {bent['step']}, {bent['users']} users: {bent['why']}. "
        + (
            f"Last step within the limits: {good[-1]['users']} users at "
            f"{good[-1]['types'][AGGREGATED]['rps']:.1f} req/s."
            if good
            else "The first step was already over."
        )
    )


def _echo_cpu(
    result: dict[str, Any], cpu: dict[str, float], idle: dict[str, float], echo: Callable[[str], None]
) -> None:
    requests = result["totals"]["types"][AGGREGATED]["requests"] or 1
    parts: dict[str, list[float]] = {}
    for name, secs in cpu.items():
        row = parts.setdefault(_part(name), [0.0, 0.0])
        row[0] += secs
        row[1] += max(0.0, secs - idle.get(name, 0.0))
    locust_cpu = result.get("locust_cpu_s", 0.0)
    parts["load generator (locust)"] = [locust_cpu, locust_cpu]
    fg = [parts.get("functions", [0.0, 0.0])[i] + parts.get("gateway", [0.0, 0.0])[i] for i in (0, 1)]
    echo(f"\nCPU per request ({requests} requests; from the ramp's start until the events were recorded;")
    echo("'above idle' subtracts what each process spends with no traffic, measured before the ramp):")
    echo(f"{'part':28} {'CPU s':>8} {'ms/request':>11} {'above idle':>11}")
    for name, row in [
        *(
            (n, parts[n])
            for n in ("functions", "gateway", "emulators", "stand-ins", "load generator (locust)")
            if n in parts
        ),
        ("functions + gateway", fg),
    ]:
        echo(f"{name:28} {row[0]:>8.1f} {1000 * row[0] / requests:>11.2f} {1000 * row[1] / requests:>11.2f}")
    busiest = sorted(((v, k) for k, v in cpu.items() if k.startswith("fn:")), reverse=True)[:6]
    echo("  busiest functions: " + ", ".join(f"{k[3:]} {v:.1f} s" for v, k in busiest if v >= 0.05))
    _echo_cpu_by_type(result, cpu, idle, echo)


# The upload's PUT goes to the bucket, whose notification runs the recorder once per file.
UPLOAD_PUT = "PUT signed URL (GCS)"


def function_of(request_type: str) -> str | None:
    """The function that serves a request type of the mix ("POST /projects"), by the route table."""
    from mllab.api import routes

    if request_type == UPLOAD_PUT:
        return "on_object_finalized"
    method, _, path = request_type.partition(" ")
    path = path.split(" ", 1)[0].replace("{id}", "x")  # "POST /predict/{id} (1 instance)": the route
    found = [r for r, _ in routes.match_path(path) if r.method == method]
    return found[0].function if found else None


def _echo_cpu_by_type(
    result: dict[str, Any], cpu: dict[str, float], idle: dict[str, float], echo: Callable[[str], None]
) -> None:
    """Per request type: its function's CPU above idle per request it served (a function serving several
    types shares its CPU among them by count), plus the gateway's per request."""
    types = {n: t["requests"] for n, t in result["totals"]["types"].items() if n not in (AGGREGATED, MIX) and t}
    served_by = {name: fn for name in types if (fn := function_of(name))}
    by_fn: dict[str, int] = {}
    for name, fn in served_by.items():
        by_fn[fn] = by_fn.get(fn, 0) + types[name]
    through_gateway = sum(c for n, c in types.items() if n != UPLOAD_PUT) or 1
    gw = 1000 * max(0.0, cpu.get("gateway", 0.0) - idle.get("gateway", 0.0)) / through_gateway
    echo(f"\nCPU per request type, above idle (gateway {gw:.2f} ms per request it routes; the types one function")
    echo("serves share its CPU by their counts: both predict sizes get the predict function's mean):")
    echo(f"{'request':34} {'requests':>9} {'function':>22} {'fn ms/request':>14} {'+ gateway':>10}")
    for name, fn in sorted(served_by.items()):
        count = types[name]
        above = max(0.0, cpu.get(f"fn:{fn}", 0.0) - idle.get(f"fn:{fn}", 0.0))
        per = 1000 * above / max(1, by_fn[fn])
        echo(f"{name:34} {count:>9} {fn:>22} {per:>14.2f} {per + (gw if name != UPLOAD_PUT else 0.0):>10.2f}")


def print_report(
    result: dict[str, Any],
    cpu: dict[str, float],
    idle: dict[str, float] | None = None,
    echo: Callable[[str], None] = print,
) -> None:
    """`cpu`: CPU seconds per stack child over the measured window; `idle`: what each would have spent
    idle over the same window (its rate measured before the ramp), subtracted in the last column."""
    _echo_steps(result["steps"], echo)
    _echo_whole_run(result, echo)
    _echo_bend(result, echo)
    _echo_cpu(result, cpu, idle or {}, echo)


def main() -> int:
    from mllab.identity import sessions, tokens
    from mllab.platform import clients, config, log
    from mllab.serving import metering
    from mllab_dev.stack import Ports, Stack, StackError
    from tests.load import predictions, profile

    log.min_level = "WARNING"  # the operator-grant audit lines of the account setup are noise here

    seconds = _env_num("MLLAB_LOAD_SECONDS", 300)
    profile_s = _env_num("MLLAB_LOAD_PROFILE", 0)
    schedule = ramp_schedule(
        int(_env_num("MLLAB_LOAD_USERS", 1000)),
        os.environ.get("MLLAB_LOAD_STEPS", ""),
        int(_env_num("MLLAB_LOAD_STEP_USERS", 0)),
    )
    step_seconds = _env_num("MLLAB_LOAD_STEP_SECONDS", 20)
    bend_on = os.environ.get("MLLAB_LOAD_BEND_ON", "mix")
    p95_ms = _env_num("MLLAB_LOAD_P95_MS", 500)
    error_pct = _env_num("MLLAB_LOAD_ERROR_PCT", 1.0)
    wait = os.environ.get("MLLAB_LOAD_WAIT", "1,5")
    drain_s = _env_num("MLLAB_LOAD_DRAIN_SECONDS", 180)
    # The most users the time bound lets the ramp reach: no need to prepare more.
    accounts_needed = schedule[min(len(schedule), math.ceil(seconds / step_seconds)) - 1]
    owners_needed = predictions.owners_needed(accounts_needed, predictions.PREDICT_WEIGHT, predictions.LAB_WEIGHT)

    fn_env = deploy_function_env()
    load1 = os.getloadavg()[0]
    print(
        f"make load: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"load average {load1:.1f} at start (anything else running shares these cores)"
    )
    print(
        f"  ramp: {', '.join(map(str, schedule))} users, {step_seconds:g} s a step, at most {seconds:g} s; "
        f"stops when the p95 of {'the repeated mix' if bend_on == 'mix' else 'all requests'} passes {p95_ms:g} ms "
        f"or errors pass {error_pct:g}%; think time {wait} s"
    )
    print(
        "  functions at the deploy's concurrency (gunicorn threads, one worker = one instance each): "
        + ", ".join(f"{k} {v['THREADS']}" for k, v in fn_env.items())
    )

    dev_dir = ROOT / ".dev" / "load"
    t0 = time.monotonic()
    for attempt in range(3):  # free ports are picked at random: another stack may take one meanwhile
        stack = Stack(Ports.free(), dev_dir, function_env=fn_env, gateway_threads=GATEWAY_THREADS)
        try:
            stack.start()
            break
        except StackError as exc:
            if attempt == 2 or "is held by" not in str(exc):
                print(f"make load: the stack did not start: {exc}", file=sys.stderr)
                return 1
    try:
        os.environ.update(stack.env())
        config.reload()
        clients.reset()
        tokens.reset_caches()
        sessions.reset_caches()
        print(f"  stack up in {time.monotonic() - t0:.1f} s at {stack.gateway_url} (logs: {stack.log_dir})")
        t1 = time.monotonic()
        accounts = prepare_users(accounts_needed + 1 + owners_needed)
        warm_account, owner_accounts, accounts = (
            accounts[0],
            accounts[1 : 1 + owners_needed],
            accounts[1 + owners_needed :],
        )
        print(
            f"  {len(accounts) + len(owner_accounts)} PRO accounts created in Firestore "
            f"in {time.monotonic() - t1:.1f} s"
        )
        t1 = time.monotonic()
        predictors = prepare_predictors(owner_accounts) if owner_accounts else None
        setup_objects = artifacts_recorded()  # the owners' model files, recorded before their versions were ready
        if predictors:
            print(
                f"  prediction mix: {len(owner_accounts)} owners, each with a ready version, "
                f"{predictions.DEPLOYMENTS_EACH} deployments and an API key, in {time.monotonic() - t1:.1f} s"
            )
        months = [metering.month_of()]
        t1 = time.monotonic()
        warm = warm_up(stack.gateway_url, warm_account)
        warm_calls = (
            predictions.warm_up(stack.gateway_url, predictors["owners"][0], predictors["rows"]) if predictors else None
        )
        print(f"  warm-up (one user, every request of the mix twice) took {time.monotonic() - t1:.1f} s\n")

        idle_a, idle_t = cpu_seconds(stack), time.monotonic()
        time.sleep(IDLE_SAMPLE_S)
        cpu_before, started = cpu_seconds(stack), time.monotonic()
        idle_rate = {k: (cpu_before[k] - idle_a.get(k, 0.0)) / (started - idle_t) for k in cpu_before}
        spies = (
            profile.start(profile.workers(stack, profile.proc_pids), profile_s, RESULT_FILE.parent / "profile")
            if profile_s
            else []
        )
        result = run_driver(
            stack.gateway_url,
            accounts,
            schedule=schedule,
            step_seconds=step_seconds,
            seconds=seconds,
            p95_ms=p95_ms,
            error_pct=error_pct,
            wait=wait,
            bend_on=bend_on,
            predictors=predictors,
        )
        if warm_calls:
            predictions.merge_calls(result["predictions"], warm_calls)
        uploads = {**result["uploads"], warm_account["uid"]: warm}
        expected = setup_objects + sum(len(r["objects"]) for r in uploads.values())
        count, waited = wait_for_events(expected, drain_s)
        cpu_after, window = cpu_seconds(stack), time.monotonic() - started
        cpu = {k: cpu_after.get(k, 0.0) - cpu_before.get(k, 0.0) for k in cpu_after}
        print_report(result, cpu, {k: rate * window for k, rate in idle_rate.items()})
        if spies:
            profile.report(spies)
        print(
            f"\nEvent pipeline: {count} objects recorded of {expected} uploaded; "
            f"{waited:.1f} s after the load stopped until the recorder had caught up."
        )
        print(f"Load average now {os.getloadavg()[0]:.1f} (at start {load1:.1f}); raw results: {RESULT_FILE}\n")
        RESULT_FILE.parent.mkdir(parents=True, exist_ok=True)
        RESULT_FILE.write_text(json.dumps({**result, "cpu_s": cpu, "idle_cpu_rate": idle_rate}, indent=1))
        ok = check_consistency(uploads)
        if predictors:
            months = sorted({*months, metering.month_of()})
            ok &= check_metering(stack, result["predictions"], months)
    finally:
        stack.stop()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
