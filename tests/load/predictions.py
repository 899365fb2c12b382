"""`make load`'s prediction mix: the deployments its virtual users call, and the metering check after it.

Setup, before the ramp (run.py): per owner, a PRO account (run.prepare_users), the lab model kept in
tests/golden/lab_model saved as a new version through the real upload path (signed PUTs to the
bucket, whose finalize events go through Pub/Sub to the recorder, which makes the version ready),
DEPLOYMENTS_EACH deployments of that version and one API key with the predict scope.
locustfile.PredictUser calls them: POST /predict/{id} with 1 and with BATCH instances.

The metering check compares, per owner and per deployment, the predictions counted in Firestore
(the month's SHARDS `prediction_usage` documents of the owner, summed: their `count` per owner, their
`by_deployment.<id>` per deployment) with the instances of the predict calls that answered 200
(locustfile.PREDICTIONS). A call that got no answer or a 5xx may or may not have been counted
(a 4xx is refused before anything is counted), so it widens the bound upwards only:

    instances answered 200  <=  counted  <=  instances answered 200 + instances of uncertain calls

It is checked after the predict function has exited (SIGTERM, as Cloud Run stops an instance: its
exit handler writes what it buffered), where the count must be exact up to the uncertain calls.
Before that exit the process still buffers what it served since its last write (docs/serving.md,
"Metering: the error bound"): the undercount then is at most the instances of the calls that ended
less than FLUSH_S before the last call started (the last second: a call is counted between its start
and its end, and the process wrote within FLUSH_S of the last count it took, so what it holds ended
after that). More missing there is a NOTE, not a failure: a write that failed keeps its counts in the
process for the next one, and the check after the exit decides. The bound is one process's: the local
stack runs one predict worker."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "lab_model"  # a model the lab saved
DEPLOYMENTS_EACH = 2  # so that the per-deployment counts are checked apart from the owner's total
BATCH = 100  # the larger predict call's instances
# Virtual users are lab users and predict users in this ratio (locust's class weights).
LAB_WEIGHT = 9
PREDICT_WEIGHT = int(os.environ.get("MLLAB_LOAD_PREDICT_WEIGHT", "1"))
READY_TIMEOUT_S = 90.0
PREDICT_FUNCTION = "predict"


def golden_rows() -> list[dict[str, Any]]:
    """The raw rows TF.js predicted for with the golden model (feature values as the lab's form takes them)."""
    rows: list[dict[str, Any]] = json.loads((GOLDEN / "tfjs_predictions.json").read_text())["rows"]
    return rows


def prepare_owner(account: dict[str, str]) -> dict[str, Any]:
    """`account` (a PRO user) with a ready version of the golden model, its deployments and a key:
    {"uid", "deployments": [ids], "key", "model_id", "version"}. Needs the stack's environment in
    os.environ."""
    import httpx

    from mllab.files import catalog, objects, schemas
    from mllab.files import store as file_store
    from mllab.serving import apikeys, deployments

    uid = account["uid"]
    project = catalog.create_project(uid, schemas.CreateProject(name="load predictions"))
    model = catalog.create_model(uid, schemas.CreateModel(project_id=project["id"], name="churn"))
    n = int(catalog.allocate_version(uid, model["id"])["version"])
    with httpx.Client(timeout=30) as client:
        for kind, filename in (("weights", "weights.bin"), ("model", "model.json")):
            data = (GOLDEN / filename).read_bytes()
            name = str(objects.model_file(uid, project["id"], model["id"], n, kind))
            signed = file_store.signed_upload_url(name, objects.KINDS[kind].content_type, len(data))
            r = client.put(signed.url, content=data, headers=signed.headers)
            if r.status_code != 200:
                raise RuntimeError(f"prediction setup: the PUT of {filename} answered {r.status_code}: {r.text[:200]}")
    deadline = time.monotonic() + READY_TIMEOUT_S
    while (catalog.version_ref(model["id"], n).get().to_dict() or {}).get("status") != "ready":
        if time.monotonic() > deadline:
            raise RuntimeError(f"prediction setup: version {n} of {model['id']} not ready in {READY_TIMEOUT_S:.0f} s")
        time.sleep(0.2)
    deps = [deployments.create(uid, model["id"], n)["id"] for _ in range(DEPLOYMENTS_EACH)]
    key = apikeys.create(uid, "load", ["predict"])["key"]
    return {"uid": uid, "deployments": deps, "key": key, "model_id": model["id"], "version": n}


def owners_needed(users: int, weight: int, lab_weight: int) -> int:
    """Owners to prepare for `users` virtual users: one per predict user locust may spawn (its share by
    weight, rounded up, plus one); users beyond it share owners round robin."""
    if weight <= 0:
        return 0
    return -(-users * weight // (weight + lab_weight)) + 1


def new_calls() -> dict[str, Any]:
    """What predict calls did, as locustfile.PREDICTIONS keeps it: per owner and deployment the calls
    and instances answered 200 and those uncertain (no answer, 5xx), and [start, end, instances] of
    each 200 (time.time())."""
    return {"by_owner": {}, "ended": []}


def note_call(calls: dict[str, Any], uid: str, dep: str, n: int, status: int, started: float) -> None:
    """Adds one predict call of `n` instances that answered `status` (0: no answer) to `calls`."""
    c = (
        calls["by_owner"]
        .setdefault(uid, {})
        .setdefault(dep, {"calls": 0, "instances": 0, "uncertain_calls": 0, "uncertain_instances": 0})
    )
    if status == 200:  # counted by the server
        c["calls"] += 1
        c["instances"] += n
        calls["ended"].append([round(started, 3), round(time.time(), 3), n])
    elif not status or status >= 500:  # refused calls (4xx) count nothing; these may have counted
        c["uncertain_calls"] += 1
        c["uncertain_instances"] += n


def warm_up(base_url: str, owner: dict[str, Any], rows: list[dict[str, Any]], rounds: int = 2) -> dict[str, Any]:
    """The predict function's first calls, before the ramp (its cold start is `make bench`'s subject):
    each of the owner's deployments with 1 and BATCH instances, `rounds` times. Returns them as
    new_calls() holds them, so that the metering check counts them too."""
    import httpx

    calls = new_calls()
    headers = {"Authorization": f"Bearer {owner['key']}"}
    with httpx.Client(base_url=base_url, timeout=60) as c:
        for _ in range(rounds):
            for dep in owner["deployments"]:
                for n in (1, BATCH):
                    started = time.time()
                    body = {"instances": [rows[i % len(rows)] for i in range(n)]}
                    r = c.post(f"/predict/{dep}", json=body, headers=headers)
                    note_call(calls, owner["uid"], dep, n, r.status_code, started)
                    if r.status_code != 200:
                        raise RuntimeError(f"warm-up: POST /predict/{dep} answered {r.status_code}: {r.text[:300]}")
    return calls


def merge_calls(into: dict[str, Any], more: dict[str, Any]) -> None:
    for uid, per in more["by_owner"].items():
        for dep, c in per.items():
            mine = into["by_owner"].setdefault(uid, {}).setdefault(dep, dict.fromkeys(c, 0))
            for k, v in c.items():
                mine[k] = mine.get(k, 0) + v
    into["ended"].extend(more["ended"])


# --- the metering check ------------------------------------------------------------------------------


def _made(calls: dict[str, dict[str, dict[str, int]]]) -> dict[str, dict[str, dict[str, int]]]:
    """uid -> deployment -> {"ok", "uncertain"} instances, from locustfile.PREDICTIONS."""
    return {
        uid: {d: {"ok": c.get("instances", 0), "uncertain": c.get("uncertain_instances", 0)} for d, c in per.items()}
        for uid, per in calls.items()
    }


def last_second(ended: list[list[float]], flush_s: float) -> int:
    """Instances of the 200 calls [start, end, n] that ended less than flush_s before the last of them
    started: all a single process can still hold unwritten (docs/serving.md, the error bound)."""
    if not ended:
        return 0
    latest_start = max(start for start, _, _ in ended)
    return int(sum(n for _, end, n in ended if end > latest_start - flush_s))


def counted(uids: list[str], months: list[str]) -> dict[str, tuple[int, dict[str, int]]]:
    """uid -> (the month's count over its shards, by deployment), summed over `months`."""
    from mllab.serving import metering

    out: dict[str, tuple[int, dict[str, int]]] = {}
    for uid in uids:
        total, per_dep = 0, dict[str, int]()
        for month in months:
            u = metering.usage(uid, month)
            total += u["predictions"]
            for d, n in u["by_deployment"].items():
                per_dep[d] = per_dep.get(d, 0) + n
        out[uid] = (total, per_dep)
    return out


def _mismatches(
    made: dict[str, dict[str, dict[str, int]]], found: dict[str, tuple[int, dict[str, int]]], slack: int
) -> tuple[list[str], list[str]]:
    """(over, under): owners and deployments counted above `ok + uncertain`, and below `ok - slack`."""
    over: list[str] = []
    under: list[str] = []

    def judge(what: str, got: int, ok: int, unsure: int) -> None:
        line = f"{what}: {got} counted, {ok} answered" + (f" (+{unsure} uncertain)" if unsure else "")
        if got > ok + unsure:
            over.append(line)
        elif got < ok - slack:
            under.append(line)

    for uid, per in made.items():
        total, per_dep = found.get(uid, (0, {}))
        judge(f"owner {uid}", total, sum(c["ok"] for c in per.values()), sum(c["uncertain"] for c in per.values()))
        for dep, c in per.items():
            judge(f"deployment {dep}", per_dep.get(dep, 0), c["ok"], c["uncertain"])
        for dep in set(per_dep) - set(per):
            judge(f"deployment {dep} (never called)", per_dep[dep], 0, 0)
    return over, under


def check_metering(
    calls: dict[str, Any],
    before_exit: dict[str, tuple[int, dict[str, int]]],
    after_exit: dict[str, tuple[int, dict[str, int]]],
    flush_s: float,
    echo: Callable[[str], None] = print,
) -> bool:
    """Two lines (module docstring). Before the predict function exited: PASS with at most the last
    second's instances missing, FAIL when more were counted than made, NOTE when more are missing (a
    write that failed keeps its counts in the process for the next one: the line after the exit
    decides). After it exited: PASS when exact up to the uncertain calls, else FAIL. True when both hold."""
    made = _made(calls.get("by_owner", {}))
    ok = sum(c["ok"] for per in made.values() for c in per.values())
    unsure = sum(c["uncertain"] for per in made.values() for c in per.values())
    deps = sum(len(per) for per in made.values())
    tail = last_second(calls.get("ended", []), flush_s)
    total = {k: sum(t for t, _ in v.values()) for k, v in (("before", before_exit), ("after", after_exit))}
    uncertain = f" + up to {unsure} of calls with no answer or a 5xx" if unsure else ""
    what = f"{ok} instances answered 200{uncertain}, {deps} deployments of {len(made)} owners"
    over, under = _mismatches(made, before_exit, tail)
    verdict = "FAIL" if over else "NOTE" if under else "PASS"
    echo(
        f"{verdict} predictions metered while the predict function ran: {total['before']} counted; "
        f"{what}; the last second's calls ({tail} instances) may still be buffered"
        + (f": {len(over)} counted more than made" if over else "")
        + (f": {len(under)} missing more (a failed write waits in the process: see its log)" if under else "")
    )
    for example in (over + under)[:5]:
        echo(f"       {example}")
    wrong = [line for part in _mismatches(made, after_exit, 0) for line in part]
    echo(
        f"{'FAIL' if wrong else 'PASS'} predictions metered after the predict function exited equal the calls "
        f"made: {total['after']} counted (sum of the owners' shards, and per deployment); {what}"
        + (f": {len(wrong)} mismatches" if wrong else "")
    )
    for example in wrong[:5]:
        echo(f"       {example}")
    return not over and not wrong
