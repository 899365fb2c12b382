"""`make bench`: cold starts per function beside a bare function, token signing/verification, URL
signing, the object-event pipeline (upload-to-record latency, recorder throughput), and the lab in
headless Chromium (first-load weight, time to interactive, small and medium model training per backend:
lab_bench.py), the lab's Lighthouse scores (lighthouse_bench.py), and server-side inference (plain Python
vs numpy, whole predictions: predict_bench.py).

Cold start = process start to the first *real* response (for jwks a 200 with keys; for the event
function an event recorded in the Firestore emulator), median of RUNS fresh processes.
Import CPU = CPU seconds a fresh interpreter spends loading the function (functions-framework
included) and the Google client modules it uses. Cold CPU = CPU seconds the function's processes
(server and worker) spent from start to the first real response: unlike wall-clock time it does not
move with the machine's load. Each function is compared with its floor (tests/bench/floor): a bare
function importing the same Google client(s) and making the same first call, measured in the same run.
Finalize -> record = a signed PUT to fake-gcs-server returning, until its `artifacts` document
exists in Firestore (fake-gcs-server -> Pub/Sub emulator -> push -> on_object_finalized -> Firestore).
Recorder throughput = OBJECT_FINALIZE notifications published straight to the Pub/Sub emulator, until
every one is recorded, beside the emulator's push delivery to a bare endpoint that only acknowledges.
signed_urls per file store = its cold start to a signed upload URL on a stack of each store (GCS:
fake-gcs-server and the development key; S3: moto's server, botocore loaded on the way).
Every process starts from compiled bytecode, ours as the libraries' (pip compiles theirs when it
installs them): a deployment ships ours (infra/stage.py --bytecode-for), and a machine that sets
PYTHONDONTWRITEBYTECODE would otherwise make each cold start compile our sources.
Numbers only; nothing here passes or fails.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx

from mllab.api import routes
from mllab.files import catalog, events, objects, recorder, storage
from mllab.identity import passwords, sessions, tokens, users
from mllab.platform import audit, clients, clock, config, log, transactions
from mllab_dev.stack import BUCKET, PROJECT, ROOT, TOPIC, Ports, Stack

if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # tests.load.predictions (the predict setup), when run as a script

RUNS = int(os.environ.get("BENCH_RUNS", "5"))
WARM_CALLS = int(os.environ.get("BENCH_WARM_CALLS", "200"))
WARM_ROUNDS = 10  # the warm rows are measured interleaved, WARM_CALLS / WARM_ROUNDS calls a row a round
TOKEN_CALLS = int(os.environ.get("BENCH_TOKEN_CALLS", "2000"))
SIGN_CALLS = int(os.environ.get("BENCH_SIGN_CALLS", "500"))
WEBHOOK_CALLS = int(os.environ.get("BENCH_WEBHOOK_CALLS", "2000"))
UPLOADS = int(os.environ.get("BENCH_UPLOADS", "50"))
EVENTS = int(os.environ.get("BENCH_EVENTS", "200"))
# All on one version document: the Firestore emulator's lock manager serialises these at roughly one
# per its ~2 s lock timeout, so this count is kept small.
CONTENTION_EVENTS = int(os.environ.get("BENCH_CONTENTION_EVENTS", "10"))
EVENTS_TIMEOUT_S = 120.0
PUBLISH_BATCH = 100
POLL_WINDOW = 20
HERE = Path(__file__).parent


def _free_port() -> int:
    return Ports.free().gateway


def _first_jwks(client: httpx.Client, port: int) -> bool:
    r = client.get(f"http://127.0.0.1:{port}/.well-known/jwks.json")
    return r.status_code == 200 and bool(r.json()["keys"])


def _first_bare(client: httpx.Client, port: int) -> bool:
    return client.get(f"http://127.0.0.1:{port}/").text == "ok"


def _first_floor_event(client: httpx.Client, port: int) -> bool:
    body = {
        "subscription": f"projects/{PROJECT}/subscriptions/bench",
        "message": {"data": "e30=", "messageId": uuid.uuid4().hex, "attributes": {}},
    }
    return client.post(f"http://127.0.0.1:{port}/projects/{PROJECT}/topics/floor", json=body).status_code in (200, 204)


def _first_event(client: httpx.Client, port: int) -> bool:
    name = f"users/bench/{uuid.uuid4().hex}.json"
    res = {"bucket": "mllab-local", "name": name, "generation": "1", "size": "2"}
    body = {
        "subscription": f"projects/{PROJECT}/subscriptions/bench",
        "message": {
            "data": base64.b64encode(json.dumps(res).encode()).decode(),
            "messageId": uuid.uuid4().hex,
            "attributes": {
                "bucketId": "mllab-local",
                "objectId": name,
                "objectGeneration": "1",
                "eventType": "OBJECT_FINALIZE",
                "payloadFormat": "JSON_API_V1",
            },
        },
    }
    r = client.post(f"http://127.0.0.1:{port}/projects/{PROJECT}/topics/{TOPIC}", json=body)
    return r.status_code in (200, 204)


def _cookie_headers(stack_url: str, cookie: str) -> dict[str, str]:
    return {
        "Origin": stack_url,
        "X-CSRF-Token": "1",
        "Content-Type": "application/json",
        "Cookie": f"__Host-rt={cookie}",
    }


UNKNOWN_RT = "rt1." + "A" * 75  # well-formed, unknown session: a real Firestore lookup


def _first_login(client: httpx.Client, port: int) -> bool:
    r = client.post(
        f"http://127.0.0.1:{port}/auth/login",
        headers=_cookie_headers(CTX["url"], ""),
        json={"email": f"nobody-{uuid.uuid4().hex[:8]}@example.com", "password": "not a password"},
    )
    return r.status_code == 401 and r.json()["type"].endswith("bad-credentials")


def _first_refresh(client: httpx.Client, port: int) -> bool:
    r = client.post(f"http://127.0.0.1:{port}/auth/refresh", headers=_cookie_headers(CTX["url"], UNKNOWN_RT))
    return r.status_code == 401 and r.json()["type"].endswith("session-ended")


def _first_logout(client: httpx.Client, port: int) -> bool:
    r = client.post(
        f"http://127.0.0.1:{port}/auth/logout",
        headers=_cookie_headers(CTX["url"], UNKNOWN_RT),
        json={"scope": "global"},
    )
    return r.status_code == 401  # a real session lookup that finds nothing


def _first_me(client: httpx.Client, port: int) -> bool:
    r = client.get(f"http://127.0.0.1:{port}/me", headers={"Authorization": f"Bearer {CTX['access']}"})
    return r.status_code == 200


def _first_catalog(client: httpx.Client, port: int) -> bool:
    r = client.get(f"http://127.0.0.1:{port}/projects", headers={"Authorization": f"Bearer {CTX['access']}"})
    return r.status_code == 200 and "items" in r.json()


def _first_signed_urls(client: httpx.Client, port: int) -> bool:
    # A well-formed name of the caller's that was never recorded: a real Firestore query, then 404.
    name = str(objects.model_file(CTX["uid"], uuid.uuid4().hex, uuid.uuid4().hex, 1, "model"))
    r = client.get(
        f"http://127.0.0.1:{port}/signed/download",
        params={"object": name},
        headers={"Authorization": f"Bearer {CTX['access']}"},
    )
    return r.status_code == 404 and "no saved file" in r.json().get("detail", "")


def _first_signed_upload(client: httpx.Client, port: int) -> bool:
    # A real upload URL (plan, ownership and quota checks, then the store's signer).
    r = client.post(
        f"http://127.0.0.1:{port}/signed/upload",
        json={"kind": "weights", "model_id": CTX["model_id"], "version": 1, "size": 10},
        headers={"Authorization": f"Bearer {CTX['access']}", "X-CSRF-Token": CTX["csrf"]},
    )
    return r.status_code == 200 and "url" in r.json()


def _pending_version(uid: str) -> str:
    """A PRO user's model with version 1 pending (what the lab allocates before an upload)."""
    from datetime import timedelta

    db, now, pid, mid = clients.firestore(), clock.now(), uuid.uuid4().hex, uuid.uuid4().hex
    db.collection("projects").document(pid).set({"uid": uid, "name": "p", "created_at": now, "updated_at": now})
    db.collection("models").document(mid).set(
        {"uid": uid, "project_id": pid, "name": "m", "config_json": "{}", "latest_version": None, "next_version": 2}
        | {"created_at": now, "updated_at": now}
    )
    db.collection("models").document(mid).collection("versions").document("000000001").set(
        {"uid": uid, "model_id": mid, "project_id": pid, "version": 1, "status": "pending", "files": {}}
        | {"size_bytes": 0, "created_at": now, "updated_at": now}
    )
    db.collection("entitlements").document(uid).set({"uid": uid, "admin_until": now + timedelta(days=1)})
    return mid


def store_cold_starts() -> None:
    """signed_urls' cold start to a signed upload URL, on a stack of each file store."""
    print(f"\n{'signed_urls, upload URL':28} {'cold start ms':>15} {'min-max':>13} {'import CPU ms':>14}")
    source = ROOT / "functions" / "signed_urls" / "main.py"
    for backend in ("gcs", "s3"):
        with tempfile.TemporaryDirectory() as tmp:
            stack = Stack(Ports.free(), Path(tmp), storage=backend)
            stack.start()
            saved = dict(os.environ)
            try:
                for var in ("STORAGE_EMULATOR_HOST", "MLLAB_STORAGE", "MLLAB_S3_ENDPOINT"):
                    os.environ.pop(var, None)
                os.environ.update(stack.env())
                config.reload()
                clients.reset()
                sessions.reset_caches()
                tokens.reset_caches()  # this stack's dev dir has its own signing keys
                uid = users.create_password_user(
                    f"bench-{uuid.uuid4().hex[:8]}@example.com", passwords.DUMMY_HASH, verified=True
                )
                session, _ = sessions.create(uid, "password", user_agent="bench", ip="127.0.0.1")
                CTX.update(
                    uid=uid,
                    access=tokens.issue_access_token(uid, session.id).token,
                    csrf=sessions.csrf_token(session.id),
                    model_id=_pending_version(uid),
                )
                env = {**os.environ}
                row = _cold_row(source, "signed_urls", _first_signed_upload, env, ())
                label = f"on {backend}"
                print(f"{label:28} {row['wall']:15.0f} {row['min']:6.0f}-{row['max']:<6.0f} {row['import']:14.0f}")
            finally:
                stack.stop()
                os.environ.clear()
                os.environ.update(saved)
                config.reload()
                clients.reset()


def _first_google_login(client: httpx.Client, port: int) -> bool:
    r = client.get(f"http://127.0.0.1:{port}/auth/google/login?return_to=/lab")
    return r.status_code == 302 and "code_challenge=" in r.headers["location"]


def _first_google_callback(client: httpx.Client, port: int) -> bool:
    from urllib.parse import urlsplit

    from mllab.identity import oauth

    tx_id, url = oauth.begin("/lab")
    loc = urlsplit(client.post(url, data={"sub": "alice-google-0001"}).headers["location"])
    r = client.get(f"http://127.0.0.1:{port}{loc.path}?{loc.query}", headers={"Cookie": f"__Host-oauth_tx={tx_id}"})
    return r.status_code == 302 and "__Host-rt=rt1." in r.headers.get("set-cookie", "")


def _first_purge(client: httpx.Client, port: int) -> bool:
    body = {
        "subscription": f"projects/{PROJECT}/subscriptions/bench",
        "message": {"data": "e30=", "messageId": uuid.uuid4().hex, "attributes": {}},
    }
    return client.post(f"http://127.0.0.1:{port}/projects/{PROJECT}/topics/account-purge", json=body).status_code == 200


CTX: dict[str, str] = {}


def _session_headers() -> dict[str, str]:
    return {"Authorization": f"Bearer {CTX['access']}", "X-CSRF-Token": CTX["csrf"], "Content-Type": "application/json"}


def _first_billing(client: httpx.Client, port: int) -> bool:
    # No subscription to cancel: the liveness check and a Firestore query, then 409.
    r = client.post(f"http://127.0.0.1:{port}/billing/cancel", headers=_session_headers(), content=b"{}")
    return r.status_code == 409 and r.json()["type"].endswith("no-subscription")


def _first_promo(client: httpx.Client, port: int) -> bool:
    r = client.post(f"http://127.0.0.1:{port}/promo/apply", headers=_session_headers(), json={"code": "NO-SUCH-CODE"})
    return r.status_code == 422 and r.json()["type"].endswith("promo-unknown")


def _signed_event(event_type: str) -> tuple[bytes, dict[str, str]]:
    """A webhook signed like the PayPal stand-in signs it (its development key and certificate)."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding

    from mllab.billing import subscriptions
    from mllab_dev import devca
    from mllab_dev.paypal_standin import CERT_ID

    body = json.dumps(
        {"id": f"WH-BENCH-{uuid.uuid4().hex}", "event_type": event_type, "resource_type": "plan", "resource": {}}
    ).encode()
    tid, when = str(uuid.uuid4()), "2026-11-22T10:00:00Z"
    msg = f"{tid}|{when}|{subscriptions.paypal_ids()['webhook_id']}|{zlib.crc32(body)}".encode()
    sig = devca.paths(Path(CTX["dev"])).load_signing_key().sign(msg, padding.PKCS1v15(), hashes.SHA256())
    return body, {
        "PAYPAL-TRANSMISSION-ID": tid,
        "PAYPAL-TRANSMISSION-TIME": when,
        "PAYPAL-AUTH-ALGO": "SHA256withRSA",
        "PAYPAL-CERT-URL": f"{CTX['paypal']}/v1/notifications/certs/{CERT_ID}",
        "PAYPAL-TRANSMISSION-SIG": base64.b64encode(sig).decode(),
        "Content-Type": "application/json",
    }


def _first_webhook(client: httpx.Client, port: int) -> bool:
    # Verified (the certificate fetched over TLS on this first call), claimed in Firestore, ignored.
    body, headers = _signed_event("BILLING.PLAN.UPDATED")
    r = client.post(f"http://127.0.0.1:{port}/payments/paypal/webhook", content=body, headers=headers)
    return r.status_code == 200 and r.json()["outcome"] == "ignored"


def _first_reconcile(client: httpx.Client, port: int) -> bool:
    body = {
        "subscription": f"projects/{PROJECT}/subscriptions/bench",
        "message": {"data": "e30=", "messageId": uuid.uuid4().hex, "attributes": {}},
    }
    return (
        client.post(f"http://127.0.0.1:{port}/projects/{PROJECT}/topics/billing-reconcile", json=body).status_code
        == 200
    )


def _first_deployments(client: httpx.Client, port: int) -> bool:
    r = client.get(f"http://127.0.0.1:{port}/deployments", headers={"Authorization": f"Bearer {CTX['access']}"})
    return r.status_code == 200 and "items" in r.json()


def _first_predict(client: httpx.Client, port: int) -> bool:
    # A real prediction: the key and deployment read, the owner's plan and usage, the model's two files
    # read from the bucket (a fresh process has none cached), the network run, the count buffered.
    r = client.post(
        f"http://127.0.0.1:{port}/predict/{CTX['predict_dep']}",
        json={"instances": [PREDICT_ROW]},
        headers={"Authorization": f"Bearer {CTX['predict_key']}"},
    )
    return r.status_code == 200 and len(r.json()["predictions"]) == 1


PREDICT_ROW: dict[str, Any] = {}  # one raw row of tests/golden/lab_model's, set with CTX's deployment


def predict_setup() -> None:
    """A PRO owner with a ready version of tests/golden/lab_model (saved through the real upload path),
    a deployment and an API key, in CTX; the version's two files as the predict floor reads them."""
    from mllab.billing import entitlements, subscriptions
    from mllab.files import catalog
    from tests.load import predictions

    uid = users.create_password_user(f"bench-{uuid.uuid4().hex[:8]}@example.com", passwords.DUMMY_HASH, verified=True)
    subscriptions.set_grant(uid, lambda doc, now: entitlements.with_grant(doc, None, now), actor="bench")
    owner = predictions.prepare_owner({"uid": uid})
    files = (catalog.version_ref(owner["model_id"], owner["version"]).get().to_dict() or {})["files"]
    CTX.update(
        predict_dep=owner["deployments"][0],
        predict_key=owner["key"],
        predict_objects=";".join(f"{f['object']}@{f['generation']}" for f in files.values()),
    )
    PREDICT_ROW.update(predictions.golden_rows()[0])


PROBES = {
    "jwks": _first_jwks,
    "auth_google_login": _first_google_login,
    "auth_google_callback": _first_google_callback,
    "auth_password": _first_login,
    "auth_refresh": _first_refresh,
    "auth_logout": _first_logout,
    "account": _first_me,
    "catalog": _first_catalog,
    "signed_urls": _first_signed_urls,
    "on_object_finalized": _first_event,
    "purge_accounts": _first_purge,
    "billing": _first_billing,
    "paypal_webhook": _first_webhook,
    "promo_apply": _first_promo,
    "reconcile_subscriptions": _first_reconcile,
    "deployments": _first_deployments,
    "predict": _first_predict,
}
FLOOR = HERE / "floor" / "main.py"
# The Google client modules each client getter (mllab.platform.clients) imports.
CLIENT_MODULES = {"firestore": "google.cloud.firestore", "storage": "google.cloud.storage"}


def floor_of(fn: routes.Function) -> tuple[str, str, Any, dict[str, str]]:
    """(label, target, probe, extra env) of the function's floor; predict's also reads the model's two
    files from the bucket, as its first prediction does."""
    uses = sorted(u for u in fn.uses if u in CLIENT_MODULES)
    label = "floor: " + ("+".join(uses) or "bare") + (" event" if fn.trigger is routes.Trigger.PUBSUB else "")
    env = {"BENCH_FLOOR_CLIENTS": ",".join(uses)}
    if fn.trigger is routes.Trigger.PUBSUB:
        return label, "floor_event", _first_floor_event, env
    if fn.name == "predict":
        return label + "+read", "floor_http", _first_bare, {**env, "BENCH_FLOOR_OBJECTS": CTX["predict_objects"]}
    return label, "floor_http", _first_bare, env


def tree_cpu(pid: int) -> float:
    """CPU seconds (user + system) of a process and its live descendants (gunicorn's worker)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total, todo = 0.0, [pid]
    while todo:
        p = todo.pop()
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / ticks
            for task in Path(f"/proc/{p}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
        except (FileNotFoundError, ProcessLookupError):
            continue
    return total


# What "never import a cloud client at module top level" saves: the same function with every client
# the code base uses imported eagerly, as a naive main.py would.
EAGER_IMPORTS = """\
import google.auth.transport.requests  # noqa: F401  (bench: eager imports on purpose)
import google.cloud.firestore  # noqa: F401
import google.cloud.pubsub_v1  # noqa: F401
import google.cloud.secretmanager  # noqa: F401
import google.cloud.storage  # noqa: F401
"""


def eager_copy(source: Path, into: Path) -> Path:
    """functions/<name>/main.py with EAGER_IMPORTS on top, in a folder of its own."""
    folder = into / source.parent.name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "main.py").write_text(EAGER_IMPORTS + source.read_text())
    return folder / "main.py"


@contextlib.contextmanager
def serving(source: Path, target: str, env: dict[str, str]) -> Iterator[str]:
    """A function under functions-framework on a free port while the block runs: its URL."""
    port = _free_port()
    argv = [str(Path(sys.executable).parent / "functions-framework"), "--source", str(source), "--target", target,
            "--host", "127.0.0.1", "--port", str(port)]  # fmt: skip
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                httpx.get(f"http://127.0.0.1:{port}/", timeout=2)
                break
            except httpx.TransportError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"{target} did not start") from None
                time.sleep(0.05)
        yield f"http://127.0.0.1:{port}/"
    finally:
        proc.terminate()
        proc.wait(10)


def cold_start(source: Path, target: str, probe, env: dict[str, str]) -> tuple[float, float]:
    """(wall seconds, CPU seconds of the function's processes) from start to the first real response."""
    port = _free_port()
    argv = [
        str(Path(sys.executable).parent / "functions-framework"),
        "--source",
        str(source),
        "--target",
        target,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    started = time.perf_counter()
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        with httpx.Client(timeout=30) as client:
            while True:
                if time.perf_counter() - started > 60:
                    raise RuntimeError(f"{target}: no real answer within 60 s")
                try:
                    if probe(client, port):
                        return time.perf_counter() - started, tree_cpu(proc.pid)
                except httpx.TransportError:
                    pass
                if proc.poll() is not None:
                    raise RuntimeError(f"{target} exited with {proc.returncode}")
                time.sleep(0.005)
    finally:
        proc.terminate()
        proc.wait(10)


def import_cpu(source: Path, target: str, env: dict[str, str], clients_used: tuple[str, ...] = ()) -> float:
    preload = "".join(f"import {CLIENT_MODULES[c]}; " for c in clients_used)
    code = (
        f"import time, functions_framework; {preload}"
        f"functions_framework.create_app({target!r}, {str(source)!r}); "
        "print(time.process_time())"
    )
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def per_call_us(fn, calls: int) -> float:
    batches = []
    per = max(1, calls // 5)
    for _ in range(5):
        t = time.perf_counter()
        for _ in range(per):
            fn()
        batches.append((time.perf_counter() - t) / per * 1e6)
    return statistics.median(batches)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def interleaved(calls: list[tuple[str, Callable[[], Any]]]) -> dict[str, list[float]]:
    """Each call's latencies (ms), WARM_CALLS of each after 10 of each to warm up, taken in WARM_ROUNDS
    rounds of every call in turn: drift in the machine's load (other work, the emulator's garbage
    collection) falls on every row alike, so each row's ratio to another's is fair."""
    samples: dict[str, list[float]] = {label: [] for label, _ in calls}
    for _ in range(10):
        for _, call in calls:
            call()
    for _ in range(WARM_ROUNDS):
        for label, call in calls:
            for _ in range(WARM_CALLS // WARM_ROUNDS):
                t = time.perf_counter()
                call()
                samples[label].append((time.perf_counter() - t) * 1000)
    return samples


def warm_latencies(stack: Stack) -> list[tuple[str, list[float]]]:
    """Warm request latency (client side, ms) against the running functions and the emulator."""
    from google.cloud import firestore

    uid = users.create_password_user(f"bench-{uuid.uuid4().hex[:8]}@example.com", passwords.DUMMY_HASH, verified=True)
    session, cookie = sessions.create(uid, "password", user_agent="bench", ip="127.0.0.1")
    access = tokens.issue_access_token(uid, session.id).token
    refresh_url = f"http://127.0.0.1:{stack.ports.functions['auth_refresh']}/auth/refresh"
    me_url = f"http://127.0.0.1:{stack.ports.functions['account']}/me"
    projects_url = f"http://127.0.0.1:{stack.ports.functions['catalog']}/projects?limit=20"
    headers = {"Origin": stack.gateway_url, "X-CSRF-Token": "1", "Content-Type": "application/json"}
    out: list[tuple[str, list[float]]] = []
    with httpx.Client(timeout=30) as client:
        state = {"cookie": cookie}

        def refresh() -> None:
            r = client.post(refresh_url, headers={**headers, "Cookie": f"__Host-rt={state['cookie']}"})
            assert r.status_code == 200, r.text
            state["cookie"] = r.headers["set-cookie"].split(";", 1)[0].split("=", 1)[1]

        def me() -> None:
            r = client.get(me_url, headers={"Authorization": f"Bearer {access}"})
            assert r.status_code == 200, r.text

        def projects() -> None:
            r = client.get(projects_url, headers={"Authorization": f"Bearer {access}"})
            assert r.status_code == 200, r.text

        claims = tokens.verify_access_token(access)

        db = clients.firestore()
        ref = db.collection("bench").document(uuid.uuid4().hex)
        ref.set({"n": 0})

        @firestore.transactional
        def bump(tx) -> None:
            n = ref.get(transaction=tx).get("n")
            tx.update(ref, {"n": n + 1})

        def bump_begun(tx, snaps) -> None:
            tx.update(ref, {"n": snaps[ref.path].get("n") + 1})

        with serving(FLOOR, "floor_transaction", {**os.environ, "BENCH_FLOOR_CLIENTS": "firestore"}) as url:
            calls: list[tuple[str, Callable[[], Any]]] = [
                ("bare Firestore transaction", lambda: bump(db.transaction())),
                # The same begun by its read (transactions.run, as a refresh does): read and commit, no begin.
                ("bare, begun by its read", lambda: transactions.run([ref], bump_begun)),
                # The same behind a bare function: the HTTP hop every function's call makes, on both sides.
                ("bare, behind a bare function", lambda: client.post(url).raise_for_status()),
                ("POST /auth/refresh", refresh),
                ("GET /me", me),
                # Every token route checks its session first (docs/security.md): the check alone, in-process,
                # is what that costs each read, beside a whole catalog read that includes it.
                ("session liveness check", lambda: sessions.check_live(claims)),
                ("GET /projects (incl. check)", projects),
            ]
            out.extend(interleaved(calls).items())
    return out


# --- webhooks: offline PayPal signature verification ---------------------------------------------


def webhook_section() -> None:
    """Per-event cost of `webhooks.verify` once the certificate is cached (the steady state: PayPal
    signs with one certificate for months). No stack and no network: a self-signed RSA-2048
    certificate and key are made in a temp dir and the "fetch" reads the PEM from there."""
    from datetime import timedelta

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import padding, rsa
    from cryptography.x509.oid import NameOID

    from mllab.billing import webhooks

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "messageverificationcerts.sandbox.paypal.com")])
    now = clock.now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=30))
        .sign(key, hashes.SHA256())
    )
    webhook_id = "8PT597110X687430LKGECATA"
    body = json.dumps(
        {
            "id": "WH-BENCH",
            "event_type": "BILLING.SUBSCRIPTION.ACTIVATED",
            "resource": {
                "id": "I-BW452GLLEP1G",
                "status": "ACTIVE",
                "custom_id": "x" * 28,
                "billing_info": {"pad": "y" * 900},
            },
        }
    ).encode()
    tid, ttime = "b2384410-f8d2-11ec-8c5b-4b8d4f6d5e0b", "2026-03-01T10:00:00Z"
    message = f"{tid}|{ttime}|{webhook_id}|{zlib.crc32(body)}".encode()
    signature = key.sign(message, padding.PKCS1v15(), hashes.SHA256())
    url = "https://api.sandbox.paypal.com/v1/notifications/certs/CERT-bench"
    headers = {
        "paypal-transmission-id": tid,
        "paypal-transmission-time": ttime,
        "paypal-cert-url": url,
        "paypal-transmission-sig": base64.b64encode(signature).decode(),
        "paypal-auth-algo": "SHA256withRSA",
    }
    allowed = config.PAYPAL_CERT_ORIGINS[config.PAYPAL_SANDBOX_API]
    fetches = []
    with tempfile.TemporaryDirectory() as tmp:
        pem = Path(tmp) / "cert.pem"
        pem.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        (Path(tmp) / "key.pem").write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )

        def fetch(cert_url: str) -> x509.Certificate:
            fetches.append(cert_url)
            return x509.load_pem_x509_certificate(pem.read_bytes())

        def verify() -> None:
            webhooks.verify(headers, body, webhook_id=webhook_id, allowed=allowed, fetch=fetch)

        webhooks.reset_cache()
        try:
            verify()  # the one fetch; every later call hits the cache
            per_event = per_call_us(verify, WEBHOOK_CALLS)
            public = cert.public_key()
            rsa_only = per_call_us(
                lambda: public.verify(signature, message, padding.PKCS1v15(), hashes.SHA256()), WEBHOOK_CALLS
            )
        finally:
            webhooks.reset_cache()
    if len(fetches) != 1:
        raise RuntimeError(f"the certificate was fetched {len(fetches)} times, expected once")
    print(f"\nwebhook verification per event (cached certificate), {len(body)} B body")
    print(f"{'':28} {'us per call':>15}")
    print(f"{'webhooks.verify':28} {per_event:15.1f}")
    print(f"{'  RSA-2048 verify alone':28} {rsa_only:15.1f}")


# --- storage: URL signing and the object-event pipeline ------------------------------------------


def _catalog_writes(batch, uid: str, project_id: str, model_id: str) -> None:
    """A user, a project, a model and its version 1 (pending), as sign-up and the catalog make them (4
    writes): the recorder drops events of an account that does not exist."""
    db, now = clients.firestore(), clock.now()
    base = {"uid": uid, "created_at": now, "updated_at": now}
    batch.set(db.collection(users.USERS).document(uid), {"email": f"{uid}@example.com", "created_at": now})
    batch.set(db.collection("projects").document(project_id), {**base, "name": "bench"})
    model = db.collection("models").document(model_id)
    batch.set(
        model,
        {
            **base,
            "project_id": project_id,
            "name": "bench",
            "config_json": "{}",
            "latest_version": None,
            "next_version": 2,
        },
    )
    batch.set(
        model.collection("versions").document("000000001"),
        {
            **base,
            "model_id": model_id,
            "project_id": project_id,
            "version": 1,
            "status": "pending",
            "files": {},
            "size_bytes": 0,
        },
    )


def _new_versions(count: int, *, shared: bool = False, one_user: bool = False) -> list[objects.ObjectName]:
    """`count` weights.bin names of fresh versions, written in batches (<= 400 writes each). Distinct:
    each its own user, project, model and version (no shared version or usage document). Shared: one
    version of one user's model, `count` times. One user: `count` versions of one user's model (they
    share the user's usage and daily count, and the model)."""
    db = clients.firestore()
    ids = [(uuid.uuid4().hex, uuid.uuid4().hex, uuid.uuid4().hex) for _ in range(1 if shared or one_user else count)]
    for start in range(0, len(ids), 100):
        batch = db.batch()
        for uid, pid, mid in ids[start : start + 100]:
            _catalog_writes(batch, uid, pid, mid)
        batch.commit()
    if one_user:
        (uid, pid, mid), now = ids[0], clock.now()
        versions = db.collection("models").document(mid).collection("versions")
        batch = db.batch()
        for v in range(2, count + 1):  # version 1 is _catalog_writes'
            doc = {"uid": uid, "project_id": pid, "model_id": mid, "version": v, "status": "pending", "files": {}}
            batch.set(
                versions.document(catalog.version_id(v)), {**doc, "size_bytes": 0, "created_at": now, "updated_at": now}
            )
        batch.commit()
        return [objects.model_file(uid, pid, mid, v, "weights") for v in range(1, count + 1)]
    names = [objects.model_file(uid, pid, mid, 1, "weights") for uid, pid, mid in ids]
    return names * count if shared else names


def _artifact_by_object(name: str) -> str | None:
    from google.cloud.firestore_v1.base_query import FieldFilter

    docs = clients.firestore().collection(recorder.ARTIFACTS).where(filter=FieldFilter("object", "==", name)).get()
    return docs[0].id if docs else None


def finalize_latencies(count: int) -> tuple[list[float], list[float], int]:
    """(PUT ms, PUT-returned -> artifacts doc ms, uploads whose generation was not in the PUT response)."""
    db = clients.firestore()
    kind = objects.KINDS["model"]
    puts: list[float] = []
    latencies: list[float] = []
    no_generation = 0
    with httpx.Client(timeout=30) as client:
        for i in range(count + 2):  # the first two warm the function's recorder path; not counted
            uid, pid, mid = uuid.uuid4().hex, uuid.uuid4().hex, uuid.uuid4().hex
            batch = db.batch()
            _catalog_writes(batch, uid, pid, mid)
            batch.commit()
            name = str(objects.model_file(uid, pid, mid, 1, "model"))
            body = json.dumps({"format": "layers-model", "id": mid, "n": i}).encode()
            signed = storage.signed_upload_url(name, kind.content_type, kind.max_bytes)
            t0 = time.perf_counter()
            r = client.put(signed.url, content=body, headers=signed.headers)
            started = time.perf_counter()
            if r.status_code != 200:
                raise RuntimeError(f"signed PUT answered {r.status_code}: {r.text[:200]}")
            try:
                generation = int(r.json()["generation"])
            except (ValueError, KeyError, TypeError):
                generation = None
            ref = (
                db.collection(recorder.ARTIFACTS).document(events.object_key(BUCKET, name, generation))
                if generation is not None
                else None
            )
            deadline = started + 30
            while not (ref.get().exists if ref is not None else _artifact_by_object(name)):
                if time.perf_counter() > deadline:
                    raise RuntimeError(f"{name} was not recorded within 30 s")
                time.sleep(0.01)
            if i >= 2:
                puts.append((started - t0) * 1000)
                latencies.append((time.perf_counter() - started) * 1000)
                no_generation += generation is None
    return puts, latencies, no_generation


def _notification(name: str, generation: int, size: int) -> dict:
    resource = {
        "kind": "storage#object",
        "bucket": BUCKET,
        "name": name,
        "generation": str(generation),
        "metageneration": "1",
        "contentType": "application/octet-stream",
        "size": str(size),
        "crc32c": "AAAAAA==",
        "md5Hash": "AAAAAAAAAAAAAAAAAAAAAA==",
        "timeCreated": clock.rfc3339(clock.now()),
    }
    return {
        "data": base64.b64encode(json.dumps(resource).encode()).decode(),
        "attributes": {
            "bucketId": BUCKET,
            "objectId": name,
            "objectGeneration": str(generation),
            "eventType": "OBJECT_FINALIZE",
            "payloadFormat": "JSON_API_V1",
        },
    }


def recorder_throughput(
    stack: Stack, names: list[objects.ObjectName], timeout: float = EVENTS_TIMEOUT_S
) -> tuple[int, float]:
    """Publish one OBJECT_FINALIZE per name (generation 1, 2, ... so repeated names stay distinct
    generations) and wait until every event is settled: recorded, or (one name repeated) refused.
    (settled, seconds from the first publish). The wait reads the oldest POLL_WINDOW unsettled records
    per poll (the next ones at once when all of those are there), not every unsettled one: reading
    them all every 50 ms cost the shared Firestore emulator about 1 ms of CPU per event, which the
    recorder then did not have."""
    db = clients.firestore()
    base = int(time.time() * 1e6)  # fresh generations per run, like GCS's microsecond generations
    messages = [_notification(str(n), base + i, 1024) for i, n in enumerate(names)]
    pending = [
        db.collection(recorder.ARTIFACTS).document(events.object_key(BUCKET, str(n), base + i))
        for i, n in enumerate(names)
    ]
    url = f"http://127.0.0.1:{stack.ports.pubsub}/v1/projects/{PROJECT}/topics/{TOPIC}:publish"
    with httpx.Client(timeout=30) as client:
        started = time.perf_counter()
        for i in range(0, len(messages), PUBLISH_BATCH):
            r = client.post(url, json={"messages": messages[i : i + PUBLISH_BATCH]})
            if r.status_code != 200:
                raise RuntimeError(f"publish answered {r.status_code}: {r.text[:200]}")
        deadline = started + timeout
        done_at = started
        refused = 0
        while len(pending) > refused and time.perf_counter() < deadline:
            window = pending[:POLL_WINDOW] if not refused else pending
            found = {snap.reference.path for snap in db.get_all(window) if snap.exists}
            if found:
                done_at = time.perf_counter()
                pending = [ref for ref in pending if ref.path not in found]
                if len(found) == len(window):
                    continue  # the next ones may be there already
            # On one version the first generation is recorded and the later ones are refused (a recorded
            # file is never replaced): a refusal settles its event too, and leaves an audit entry.
            now_refused = _refusals(names[0]) if len(set(map(str, names))) == 1 else 0
            if now_refused > refused:
                refused, done_at = now_refused, time.perf_counter()
            if len(pending) > refused:
                time.sleep(0.05)
    settled = len(names) - len(pending) + refused
    return settled, (done_at if settled == len(names) else time.perf_counter()) - started


def _refusals(name: objects.ObjectName) -> int:
    return sum(1 for e in audit.for_actor(name.uid) if e["action"] == "object.rejected" and e["target"] == str(name))


def push_ceiling(stack: Stack, count: int, timeout: float = EVENTS_TIMEOUT_S) -> tuple[int, float]:
    """The recorder's baseline from the same run: the Pub/Sub emulator pushing `count` messages to a bare
    endpoint that only acknowledges (a threaded HTTP server in this process). Push delivery is the
    emulator's; no recorder can go faster locally than this. (delivered, seconds from the first publish)."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    delivered: list[float] = []
    lock = threading.Lock()

    class Ack(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's handler name
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            with lock:
                delivered.append(time.perf_counter())
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: Any) -> None:  # quiet
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Ack)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    topic = f"bench-ceiling-{uuid.uuid4().hex[:8]}"
    base = f"http://127.0.0.1:{stack.ports.pubsub}/v1/projects/{PROJECT}"
    try:
        with httpx.Client(timeout=30) as client:
            client.put(f"{base}/topics/{topic}").raise_for_status()
            push = {"pushEndpoint": f"http://127.0.0.1:{server.server_address[1]}/"}
            sub = {"topic": f"projects/{PROJECT}/topics/{topic}", "ackDeadlineSeconds": 60, "pushConfig": push}
            client.put(f"{base}/subscriptions/{topic}", json=sub).raise_for_status()
            messages = [_notification(f"ceiling/{i}", i + 1, 1024) for i in range(count)]
            started = time.perf_counter()
            for i in range(0, count, PUBLISH_BATCH):
                client.post(f"{base}/topics/{topic}:publish", json={"messages": messages[i : i + PUBLISH_BATCH]})
            deadline = started + timeout
            while len(delivered) < count and time.perf_counter() < deadline:
                time.sleep(0.05)
            client.delete(f"{base}/subscriptions/{topic}")
            client.delete(f"{base}/topics/{topic}")
    finally:
        server.shutdown()
    got = min(len(delivered), count)
    return got, ((delivered[got - 1] if got else time.perf_counter()) - started)


def storage_sections(stack: Stack) -> None:
    kind = objects.KINDS["model"]
    name = str(objects.model_file(uuid.uuid4().hex, uuid.uuid4().hex, uuid.uuid4().hex, 1, "model"))
    storage.signed_upload_url(name, kind.content_type, kind.max_bytes)  # load the key and the client
    sign = per_call_us(lambda: storage.signed_upload_url(name, kind.content_type, kind.max_bytes), SIGN_CALLS)
    print(f"\n{'URL signing (V4, dev key)':28} {'us per call':>15}")
    print(f"{'signed_upload_url model.json':28} {sign:15.1f}")

    if UPLOADS > 0:
        puts, latencies, no_gen = finalize_latencies(UPLOADS)
        print(f"\n{'finalize, ' + str(UPLOADS) + ' uploads':28} {'p50 ms':>8} {'p95 ms':>8} {'min-max':>13}")
        for label, samples in (("signed PUT (model.json)", puts), ("PUT returned -> record", latencies)):
            print(
                f"{label:28} {pct(samples, 50):8.1f} {pct(samples, 95):8.1f} {min(samples):6.0f}-{max(samples):<6.0f}"
            )
        if no_gen:
            print(f"  ({no_gen} PUT responses had no generation: found by querying artifacts.object)")

    print(f"\n{'recorder, Pub/Sub -> record':28} {'events':>8} {'seconds':>8} {'events/s':>9}")
    if EVENTS > 0:
        delivered, seconds = push_ceiling(stack, EVENTS)
        note = "" if delivered == EVENTS else f"  only {delivered} delivered within {EVENTS_TIMEOUT_S:.0f} s"
        print(f"{'baseline: push to a bare ack':28} {EVENTS:8d} {seconds:8.2f} {delivered / seconds:9.1f}{note}")
    for label, count, shared, one_user in (
        ("distinct versions", EVENTS, False, False),
        ("one user, distinct versions", CONTENTION_EVENTS, False, True),
        ("one version (contention)", CONTENTION_EVENTS, True, False),
    ):
        if count <= 0:
            continue
        names = _new_versions(count, shared=shared, one_user=one_user)
        recorded, seconds = recorder_throughput(stack, names)
        note = "" if recorded == len(names) else f"  only {recorded} settled within {EVENTS_TIMEOUT_S:.0f} s"
        print(f"{label:28} {len(names):8d} {seconds:8.2f} {recorded / seconds:9.1f}{note}")


def _cold_row(source: Path, target: str, probe, env: dict[str, str], uses: tuple[str, ...]) -> dict[str, float]:
    runs = [cold_start(source, target, probe, env) for _ in range(RUNS)]
    walls = [w * 1000 for w, _ in runs]
    return {
        "wall": statistics.median(walls),
        "min": min(walls),
        "max": max(walls),
        "cpu": statistics.median(c * 1000 for _, c in runs),
        "import": statistics.median(import_cpu(source, target, env, uses) * 1000 for _ in range(3)),
    }


def _cells(label: str, row: dict[str, float]) -> str:
    spread = f"{row['min']:.0f}-{row['max']:.0f}"
    return f"{label:34} {row['wall']:8.0f} {spread:>11} {row['cpu']:9.0f} {row['import']:11.0f}"


def cold_start_section(env: dict[str, str], tmp: Path) -> None:
    """Each function beside its floor (measured just before it, so both see the same machine load).
    Goal: cold start and cold CPU within 1.15x the floor, import CPU within 50 ms of the floor's.
    BENCH_EAGER=1 adds the same function with every cloud client imported eagerly."""
    eager_too = os.environ.get("BENCH_EAGER") == "1"
    only = set(filter(None, os.environ.get("BENCH_FUNCTIONS", "").split(",")))
    print(
        f"{'function':34} {'cold ms':>8} {'min-max':>11} {'cold CPU':>9} {'import CPU':>11}"
        f" {'x floor':>8} {'CPU x fl':>9} {'import-fl':>10} {'cold-fl ms':>11}"
        + (f" {'eager ms':>9} {'eager CPU':>10}" if eager_too else "")
    )
    bare = _cold_row(HERE / "bare" / "main.py", "bare", _first_bare, env, ())
    print(_cells("bare functions-framework", bare))
    for fn in routes.for_store("gcs"):
        if only and fn.name not in only:
            continue
        label, target, probe, extra = floor_of(fn)
        uses = tuple(sorted(u for u in fn.uses if u in CLIENT_MODULES))
        floor = _cold_row(FLOOR, target, probe, {**env, **extra}, ())  # again for each: the load moves
        row = _cold_row(ROOT / "functions" / fn.name / "main.py", fn.name, PROBES[fn.name], env, uses)
        eager = ""
        if eager_too:
            copy = eager_copy(ROOT / "functions" / fn.name / "main.py", tmp / "eager")
            runs = [cold_start(copy, fn.name, PROBES[fn.name], env) for _ in range(RUNS)]
            wall, cpu = (statistics.median(run[i] for run in runs) * 1000 for i in (0, 1))
            eager = f" {wall:9.0f} {cpu:10.0f}"
        print(_cells("  " + label, floor))
        ratios = (
            f" {row['wall'] / floor['wall']:8.2f} {row['cpu'] / floor['cpu']:9.2f}"
            f" {row['import'] - floor['import']:+10.0f} {row['wall'] - floor['wall']:+11.0f}"
        )
        print(_cells(fn.name, row) + ratios + eager)
        if fn.name == "predict":
            print(f"  predict to its first prediction: {row['wall'] - floor['wall']:+.0f} ms over its floor (goal 150)")


def compile_bytecode() -> None:
    """Bytecode for our sources and the bench's own functions, as a deployment ships it (see above)."""
    import compileall

    for folder in (ROOT / "shared" / "mllab", ROOT / "functions", HERE / "bare", HERE / "floor"):
        compileall.compile_dir(folder, quiet=1)


def main() -> int:
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}; {RUNS} runs each (median; min-max); bytecode compiled, as deployed\n"
    )
    compile_bytecode()
    with tempfile.TemporaryDirectory() as tmp:
        stack = Stack(Ports.free(), Path(tmp))
        stack.start()
        try:
            env = {**os.environ, **stack.env()}
            os.environ.update(stack.env())
            config.reload()
            clients.reset()
            tokens.reset_caches()
            sessions.reset_caches()
            log.min_level = "WARNING"
            uid = users.create_password_user(
                f"bench-{uuid.uuid4().hex[:8]}@example.com", passwords.DUMMY_HASH, verified=True
            )
            session, _ = sessions.create(uid, "password", user_agent="bench", ip="127.0.0.1")
            CTX.update(
                url=stack.gateway_url,
                uid=uid,
                access=tokens.issue_access_token(uid, session.id).token,
                csrf=sessions.csrf_token(session.id),
                dev=str(stack.dev_dir),
                paypal=stack.paypal_url,
            )
            stack_sections(stack, env, Path(tmp))
        finally:
            stack.stop()
    if want("stores"):
        store_cold_starts()
    return 0


def stack_sections(stack: Stack, env: dict[str, str], tmp: Path) -> None:
    """The sections that run against the one stack main() started (BENCH_SECTIONS chooses)."""
    if want("cold") or want("predict"):
        predict_setup()
    if want("cold"):
        cold_start_section(env, tmp)
    if want("warm"):
        warm_section(stack)
    if want("tokens"):
        token_section()
    if want("webhooks"):
        webhook_section()
    if want("storage"):
        storage_sections(stack)
    if want("lab"):
        from lab_bench import lab_section  # tests/bench/ is on sys.path: this file runs as a script

        lab_section(stack.gateway_url)
    if want("lighthouse"):
        from lighthouse_bench import lighthouse_section

        lighthouse_section(stack.gateway_url)
    if want("predict"):
        from predict_bench import main as predict_section  # server-side inference: the engine's figures

        warm_predict_section(stack)
        predict_section()


def want(section: str) -> bool:
    """BENCH_SECTIONS=cold,warm runs only those (cold, warm, tokens, webhooks, storage, lab, lighthouse,
    predict, stores); default all."""
    chosen = set(filter(None, os.environ.get("BENCH_SECTIONS", "").split(",")))
    return not chosen or section in chosen


def warm_section(stack: Stack) -> None:
    """Each call's p50 against the bare transaction in-process, and against the same behind a bare
    function (the HTTP hop to a function counted on both sides)."""
    print(
        f"\n{'warm, ' + str(WARM_CALLS) + ' calls':30} {'p50 ms':>8} {'p95 ms':>8} {'x bare p50':>11}"
        f" {'x bare behind a fn':>19}"
    )
    rows = warm_latencies(stack)
    bare = pct(rows[0][1], 50)
    behind = pct(dict(rows)["bare, behind a bare function"], 50)
    for label, samples in rows:
        p50 = pct(samples, 50)
        print(f"{label:30} {p50:8.1f} {pct(samples, 95):8.1f} {p50 / bare:11.2f} {p50 / behind:19.2f}")


def warm_predict_section(stack: Stack) -> None:
    """Warm POST /predict/{id} with one instance through the gateway, beside the gateway alone (a file it
    answers itself) and the gateway with the predict function refusing a call without a key (the router,
    before any Firestore read), and beside the same prediction sent to the function directly."""
    dep, key = CTX["predict_dep"], CTX["predict_key"]
    body = json.dumps({"instances": [PREDICT_ROW]}).encode()
    fn_url = f"http://127.0.0.1:{stack.ports.functions['predict']}"
    json_h = {"Content-Type": "application/json"}
    calls: list[tuple[str, str, str, dict[str, str], bytes | None, int]] = [
        ("gateway alone (GET /config.json)", "GET", f"{stack.gateway_url}/config.json", {}, None, 200),
        ("gateway + predict, no key (401)", "POST", f"{stack.gateway_url}/predict/{dep}", json_h, body, 401),
        ("predict 1 instance, direct", "POST", f"{fn_url}/predict/{dep}", {**json_h, "Authorization": f"Bearer {key}"},
         body, 200),
        ("predict 1 instance, gateway", "POST", f"{stack.gateway_url}/predict/{dep}",
         {**json_h, "Authorization": f"Bearer {key}"}, body, 200),
    ]  # fmt: skip
    print(f"\n{'warm predict, ' + str(WARM_CALLS) + ' calls':34} {'p50 ms':>8} {'p95 ms':>8} {'- gateway p50':>14}")
    rows = []
    with httpx.Client(timeout=30) as client:
        for label, method, url, headers, content, status in calls:
            samples = []
            for i in range(WARM_CALLS + 10):  # the first 10 warm up
                t = time.perf_counter()
                r = client.request(method, url, headers=headers, content=content)
                if i >= 10:
                    samples.append((time.perf_counter() - t) * 1000)
                if r.status_code != status:
                    raise RuntimeError(f"{label}: {r.status_code}, expected {status}: {r.text[:200]}")
            rows.append((label, samples))
    base = pct(rows[0][1], 50)
    for label, samples in rows:
        print(f"{label:34} {pct(samples, 50):8.1f} {pct(samples, 95):8.1f} {pct(samples, 50) - base:+14.1f}")
    print(f"  (goal: warm single-instance p50 through the gateway at most 10 ms: {pct(rows[-1][1], 50):.1f} ms)")


def token_section() -> None:
    hashes = []
    for _ in range(10):
        t = time.perf_counter()
        passwords.hash_password("benchmark password 123")
        hashes.append((time.perf_counter() - t) * 1000)
    print(f"\n{'Argon2id (m=19 MiB, t=2, p=1)':28} {statistics.median(hashes):8.1f} ms per hash")

    issued = tokens.issue_access_token("bench-user", "bench-session")
    sign = per_call_us(lambda: tokens.issue_access_token("bench-user", "bench-session"), TOKEN_CALLS)
    verify = per_call_us(lambda: tokens.verify_access_token(issued.token), TOKEN_CALLS)
    print(f"\n{'access token (ES256)':28} {'us per call':>15}")
    print(f"{'sign':28} {sign:15.1f}")
    print(f"{'verify':28} {verify:15.1f}")


if __name__ == "__main__":
    sys.exit(main())
