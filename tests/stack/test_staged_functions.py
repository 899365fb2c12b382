"""Each function as it is deployed: staged by infra/stage.py, installed into a fresh Python 3.12
virtualenv from only its staged requirements.txt (pip, no index, from wheels built once per lock),
started under functions-framework from its staged folder with the environment the local stack gives
its functions, and sent a first real request against the emulators."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from packaging.utils import canonicalize_name

from mllab.api import routes
from mllab.files import objects, recorder
from mllab.identity import oauth, sessions, tokens, users
from mllab.platform import clients, clock, config
from mllab_dev import preflight
from mllab_dev.stack import BUCKET, PROJECT, PURGE_TOPIC, RECONCILE_TOPIC, ROOT, TOPIC, Stack
from tests import pins

from .billing_support import signed_webhook

WHEELS = ROOT / ".dev" / "wheels"  # ignored; one folder per (interpreter, requirements, lock)
PIP = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input"]
START_TIMEOUT_S = 90.0
PROBLEM_JSON = "application/problem+json"


# --- wheels, virtualenvs, processes --------------------------------------------------------------


def python312() -> str:
    python = preflight.python312()
    version = subprocess.run(
        [python, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"], capture_output=True, text=True, timeout=30
    ).stdout.strip()
    assert version == "3.12", f"{python} is Python {version}; the runtime is python312"
    return python


def wheel_cache(python: str) -> Path:
    """Wheels of every function's requirements under the lock, built once and reused while the
    interpreter, the requirements and constraints.txt stay the same."""
    union = sorted(
        {
            line.strip()
            for p in (ROOT / "functions").glob("*/requirements.txt")
            for line in p.read_text().splitlines()
            if line.strip() and not line.startswith("#")
        }
    )
    lock = (ROOT / "constraints.txt").read_text()
    key = hashlib.sha256("\n".join([python, *union, lock]).encode()).hexdigest()[:16]
    target = WHEELS / key
    if (target / ".complete").is_file():
        return target
    building = WHEELS / f".{key}.{os.getpid()}"
    shutil.rmtree(building, ignore_errors=True)
    building.mkdir(parents=True)
    (building / "requirements.txt").write_text("\n".join(union) + "\n")
    done = subprocess.run(
        [
            *PIP,
            "wheel",
            "--quiet",
            "--wheel-dir",
            str(building),
            "-c",
            str(ROOT / "constraints.txt"),
            "-r",
            str(building / "requirements.txt"),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    (building / ".complete").write_text("")
    try:
        building.rename(target)
    except OSError:  # another run finished the same cache first
        shutil.rmtree(building, ignore_errors=True)
    for old in WHEELS.iterdir():  # caches of earlier locks, unused for an hour
        if old != target and time.time() - old.stat().st_mtime > 3600:
            shutil.rmtree(old, ignore_errors=True)
    return target


def install(python: str, wheels: Path, staged: Path, venv: Path) -> None:
    """A fresh virtualenv holding only what the staged requirements.txt asks for, installed the way the
    buildpack does it (--no-compile; it compiles afterwards), from the local wheels only."""
    subprocess.run([python, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=60)
    done = subprocess.run(
        [
            *PIP,
            "--python",
            str(venv / "bin" / "python"),
            "install",
            "--quiet",
            "--no-index",
            "--find-links",
            str(wheels),
            "--no-compile",
            "--no-warn-script-location",
            "-r",
            str(staged / "requirements.txt"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=staged,
    )
    assert done.returncode == 0, f"{staged.name}: {done.stderr[-3000:]}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def base_env(venv: Path) -> dict[str, str]:
    """Nothing of the test's interpreter: no PYTHONPATH, no .venv on PATH."""
    return {
        "PATH": f"{venv / 'bin'}:/usr/bin:/bin",
        "HOME": os.environ.get("HOME", "/tmp"),
        "LANG": "C.UTF-8",
        "PYTHONUNBUFFERED": "1",
    }


@dataclass
class Served:
    name: str
    folder: Path
    venv: Path
    port: int
    proc: subprocess.Popen
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


def _wait_until_serving(fns: list[Served]) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    pending = list(fns)
    while pending:
        for fn in list(pending):
            assert fn.proc.poll() is None, f"{fn.name} exited {fn.proc.returncode}:\n{fn.log_text()[-3000:]}"
            try:
                httpx.get(f"{fn.url}/__staged_ready", timeout=2)  # any answer: the app is loaded
                pending.remove(fn)
            except httpx.HTTPError:
                pass
        assert not pending or time.monotonic() < deadline, f"not serving: {[f.name for f in pending]}"
        time.sleep(0.1)


@pytest.fixture(scope="module")
def staged(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Served]]:
    started = time.monotonic()
    root = tmp_path_factory.mktemp("staged")
    python = python312()
    wheels = wheel_cache(python)
    names = [fn.name for fn in routes.FUNCTIONS]
    done = subprocess.run(
        [sys.executable, str(ROOT / "infra" / "stage.py"), "--out", str(root / "build"), *names],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    # pip is mostly unpacking and waiting on files: three at once keeps two cores busy.
    with ThreadPoolExecutor(max_workers=3) as pool:
        list(pool.map(lambda n: install(python, wheels, root / "build" / n, root / "venvs" / n), names))
    installed = time.monotonic()
    served: dict[str, Served] = {}
    try:
        for name in names:
            folder, venv, log = root / "build" / name, root / "venvs" / name, root / f"{name}.log"
            port = free_port()
            with open(log, "wb") as out:
                proc = subprocess.Popen(
                    [
                        str(venv / "bin" / "functions-framework"),
                        "--target",
                        name,
                        "--source",
                        "main.py",
                        "--host",
                        "127.0.0.1",
                        "--port",
                        str(port),
                    ],
                    cwd=folder,
                    env={**base_env(venv), **stack.env()},
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            served[name] = Served(name, folder, venv, port, proc, log)
        _wait_until_serving(list(served.values()))
        print(
            f"\nstaged functions: wheels + 15 installs {installed - started:.1f}s, "
            f"serving after {time.monotonic() - started:.1f}s",
            file=sys.stderr,
        )
        yield served
    finally:
        for fn in served.values():
            if fn.proc.poll() is None:
                os.killpg(fn.proc.pid, signal.SIGTERM)  # its own group: functions-framework and gunicorn workers
        for fn in served.values():
            try:
                fn.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(fn.proc.pid, signal.SIGKILL)
                fn.proc.wait(timeout=10)


# --- helpers for the first requests --------------------------------------------------------------


def signed_in() -> tuple[str, dict[str, str]]:
    """A Google user with a live session: (uid, access token + CSRF headers)."""
    sub = uuid.uuid4().hex[:12]
    uid = users.create_google_user("https://accounts.google.com", sub, f"staged-{sub}@example.com", "Staged")
    s, _ = sessions.create(uid, "google", user_agent="staged", ip="203.0.113.1")
    return uid, {
        "Authorization": "Bearer " + tokens.issue_access_token(uid, s.id).token,
        "X-CSRF-Token": sessions.csrf_token(s.id),
    }


def cookie_headers(stack: Stack, refresh_token: str) -> dict[str, str]:
    return {
        "Origin": stack.gateway_url,
        "X-CSRF-Token": "1",
        "Content-Type": "application/json",
        "Cookie": f"__Host-rt={refresh_token}",
    }


def push(topic: str, data: dict, attributes: dict[str, str] | None = None) -> dict:
    """What the Pub/Sub emulator's push subscription posts (the stack's delivery to event functions)."""
    return {
        "subscription": f"projects/{PROJECT}/subscriptions/staged",
        "message": {
            "data": base64.b64encode(json.dumps(data).encode()).decode(),
            "messageId": uuid.uuid4().hex,
            "attributes": attributes or {},
        },
    }


def assert_problem(r: httpx.Response, status: int) -> None:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith(PROBLEM_JSON)
    assert r.json()["status"] == status


# --- one first request per function --------------------------------------------------------------


def jwks(c: httpx.Client, stack: Stack, records) -> None:
    r = c.get("/.well-known/jwks.json")
    assert r.status_code == 200, r.text
    assert r.json() == tokens.public_jwks() and r.json()["keys"]


def auth_google_login(c: httpx.Client, stack: Stack, records) -> None:
    r = c.get("/auth/google/login", params={"return_to": "/lab"})
    assert r.status_code == 302, r.text
    assert r.headers["location"].startswith(f"http://127.0.0.1:{stack.ports.oidc}/")  # discovery over httpx
    assert "__Host-oauth_tx=" in r.headers["set-cookie"]  # the transaction stored in Firestore


def auth_google_callback(c: httpx.Client, stack: Stack, records) -> None:
    tx_id, url = oauth.begin("/lab")
    back = urlsplit(httpx.post(url, data={"sub": "alice-google-0001"}, timeout=20).headers["location"])
    r = c.get(f"{back.path}?{back.query}", headers={"Cookie": f"__Host-oauth_tx={tx_id}"})
    assert r.status_code == 302, r.text
    assert r.headers["location"].startswith(stack.gateway_url)
    assert "__Host-rt=" in ";".join(r.headers.get_list("set-cookie"))  # code exchanged, ID token verified


def auth_password(c: httpx.Client, stack: Stack, records) -> None:
    # an unknown email costs a dummy Argon2 verify: argon2-cffi is installed and loads
    r = c.post(
        "/auth/login",
        json={"email": f"nobody-{uuid.uuid4().hex[:6]}@example.com", "password": "x" * 12},
        headers={"Origin": stack.gateway_url, "X-CSRF-Token": "1"},
    )
    assert_problem(r, 401)


def auth_refresh(c: httpx.Client, stack: Stack, records) -> None:
    uid = signed_in()[0]
    _, refresh_token = sessions.create(uid, "google", user_agent="staged", ip="203.0.113.1")
    r = c.post("/auth/refresh", headers=cookie_headers(stack, refresh_token))
    assert r.status_code == 200, r.text
    assert tokens.verify_access_token(r.json()["access_token"])["sub"] == uid


def auth_logout(c: httpx.Client, stack: Stack, records) -> None:
    uid = signed_in()[0]
    session, refresh_token = sessions.create(uid, "google", user_agent="staged", ip="203.0.113.1")
    r = c.post("/auth/logout", json={"scope": "local"}, headers=cookie_headers(stack, refresh_token))
    assert r.status_code == 204, r.text
    assert clients.firestore().collection("sessions").document(session.id).get().get("revoked_at") is not None


def account(c: httpx.Client, stack: Stack, records) -> None:
    uid, h = signed_in()
    r = c.get("/me", headers=h)
    assert r.status_code == 200, r.text
    assert r.json()["uid"] == uid
    assert_problem(c.get("/me"), 401)


def catalog(c: httpx.Client, stack: Stack, records) -> None:
    _, h = signed_in()
    r = c.post("/projects", json={"name": "staged"}, headers=h)
    assert r.status_code == 201, r.text
    r = c.delete(f"/projects/{r.json()['id']}", headers=h)  # deletes its objects: the storage client
    assert r.status_code == 204, r.text


def signed_urls(c: httpx.Client, stack: Stack, records) -> None:
    uid, h = signed_in()
    ids = records(uid)
    clients.firestore().collection("entitlements").document(uid).set(
        {"uid": uid, "admin_until": clock.now() + timedelta(days=1)}
    )
    r = c.post(
        "/signed/upload", json={"kind": "weights", "model_id": ids["model_id"], "version": 1, "size": 10}, headers=h
    )
    assert r.status_code == 200, r.text
    assert urlsplit(r.json()["url"]).netloc == f"127.0.0.1:{stack.ports.gcs}"
    assert "X-Goog-Signature=" in r.json()["url"]


def on_object_finalized(c: httpx.Client, stack: Stack, records) -> None:
    from google.cloud.firestore_v1.base_query import FieldFilter

    ids = records()
    name = str(objects.model_file(ids["uid"], ids["project_id"], ids["model_id"], 1, "weights"))
    resource = {
        "kind": "storage#object",
        "bucket": BUCKET,
        "name": name,
        "generation": "1700000000000007",
        "metageneration": "1",
        "contentType": "application/octet-stream",
        "size": "42",
    }
    attributes = {
        "bucketId": BUCKET,
        "objectId": name,
        "objectGeneration": "1700000000000007",
        "eventType": "OBJECT_FINALIZE",
        "payloadFormat": "JSON_API_V1",
    }
    r = c.post(f"/projects/{PROJECT}/topics/{TOPIC}", json=push(TOPIC, resource, attributes))
    assert r.status_code == 200, r.text
    query = clients.firestore().collection(recorder.ARTIFACTS).where(filter=FieldFilter("object", "==", name))
    assert [d.to_dict()["size"] for d in query.get()] == [42]


def purge_accounts(c: httpx.Client, stack: Stack, records) -> None:
    uid = signed_in()[0]
    users.update(uid, deleted_at=clock.now() - timedelta(days=31))
    r = c.post(f"/projects/{PROJECT}/topics/{PURGE_TOPIC}", json=push(PURGE_TOPIC, {}))
    assert r.status_code == 200, r.text
    assert users.get(uid) is None


def billing(c: httpx.Client, stack: Stack, records) -> None:
    r = c.get("/billing/plans")
    assert r.status_code == 200 and r.json(), r.text
    _, h = signed_in()
    r = c.post("/billing/paypal/subscribe", headers=h)  # PayPal (the stand-in) over httpx
    assert r.status_code == 200, r.text
    assert r.json()["approve_url"].startswith(stack.paypal_url)


def paypal_webhook(c: httpx.Client, stack: Stack, records) -> None:
    event = {
        "id": f"WH-STAGED-{uuid.uuid4().hex[:8]}",
        "event_type": "BILLING.PLAN.UPDATED",
        "resource_type": "plan",
        "resource": {},
    }
    body, headers = signed_webhook(stack, event)  # the certificate is fetched and the signature checked
    r = c.post("/payments/paypal/webhook", content=body, headers=headers)
    assert r.status_code == 200, r.text
    assert r.json()["outcome"] == "ignored"
    body, headers = signed_webhook(stack, {**event, "id": event["id"] + "-x"})
    assert_problem(c.post("/payments/paypal/webhook", content=body + b" ", headers=headers), 400)


def promo_apply(c: httpx.Client, stack: Stack, records) -> None:
    _, h = signed_in()
    assert_problem(c.post("/promo/apply", json={"code": "NO-SUCH-CODE"}, headers=h), 422)


def reconcile_subscriptions(c: httpx.Client, stack: Stack, records) -> None:
    r = c.post(f"/projects/{PROJECT}/topics/{RECONCILE_TOPIC}", json=push(RECONCILE_TOPIC, {}))
    assert r.status_code == 200, r.text


def deployments(c: httpx.Client, stack: Stack, records) -> None:
    _, h = signed_in()
    r = c.get("/deployments", headers=h)
    assert r.status_code == 200 and r.json() == {"items": []}, r.text
    r = c.post("/api-keys", json={"name": "staged", "scopes": ["predict"]}, headers=h)
    assert r.status_code == 201 and r.json()["key"].startswith("mlk_"), r.text
    assert_problem(c.get("/public/deployments/nosuchmodel"), 404)


def predict(c: httpx.Client, stack: Stack, records) -> None:
    guessed = "mlk_" + "a" * 16 + "_" + "b" * 43  # well formed: looked up in Firestore, refused
    r = c.post("/predict/nosuchmodel", json={"instances": [{"x": 1}]}, headers={"Authorization": f"Bearer {guessed}"})
    assert_problem(r, 401)
    assert r.headers["Access-Control-Allow-Origin"] == "*"


FIRST_REQUEST: dict[str, Callable[[httpx.Client, Stack, Callable], None]] = {
    f.__name__: f
    for f in (
        jwks,
        auth_google_login,
        auth_google_callback,
        auth_password,
        auth_refresh,
        auth_logout,
        account,
        catalog,
        signed_urls,
        on_object_finalized,
        purge_accounts,
        billing,
        paypal_webhook,
        promo_apply,
        reconcile_subscriptions,
        deployments,
        predict,
    )
}


def test_every_function_has_a_first_request() -> None:
    assert set(FIRST_REQUEST) == {fn.name for fn in routes.for_store("gcs")}


@pytest.mark.parametrize("fn", routes.for_store("gcs"), ids=lambda f: f.name)
def test_staged_function_serves_its_first_request(
    staged: dict[str, Served], stack: Stack, records, fn: routes.Function
) -> None:
    served = staged[fn.name]
    with httpx.Client(base_url=served.url, timeout=30, follow_redirects=False) as client:
        try:
            FIRST_REQUEST[fn.name](client, stack, records)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n--- {fn.name} log ---\n{served.log_text()[-3000:]}") from None
    assert "Traceback" not in served.log_text(), served.log_text()[-3000:]


INSPECT = """
import importlib.util, json, sys
from importlib import metadata
print(json.dumps({"mllab": importlib.util.find_spec("mllab") is not None, "path": sys.path,
                  "version": list(sys.version_info[:2]),
                  "dists": {d.metadata["Name"].lower().replace("_", "-"): d.version
                            for d in metadata.distributions()}}))
"""


@pytest.mark.parametrize("fn", routes.for_store("gcs"), ids=lambda f: f.name)
def test_staged_venv_holds_only_its_requirements(
    staged: dict[str, Served], tmp_path: Path, fn: routes.Function
) -> None:
    """Outside its staged folder the venv cannot import mllab (nothing of the repo or .venv leaks in);
    it runs 3.12; every installed version is the lock's; a cloud client it does not use is absent."""
    served = staged[fn.name]
    out = subprocess.run(
        [str(served.venv / "bin" / "python"), "-c", INSPECT],
        cwd=tmp_path,
        env=base_env(served.venv),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    seen = json.loads(out.stdout)
    assert seen["version"] == [3, 12]
    assert seen["mllab"] is False
    assert not [p for p in seen["path"] if p.startswith(str(ROOT))]
    pinned = pins.lock()  # as the functions' 3.12 runtime sees it
    assert {d: v for d, v in seen["dists"].items() if pinned.get(canonicalize_name(d)) != v} == {}
    for use, dist in (("firestore", "google-cloud-firestore"), ("storage", "google-cloud-storage")):
        assert (dist in seen["dists"]) == (use in fn.uses), f"{fn.name}: {dist}"
    for dist in ("google-cloud-pubsub", "google-cloud-secret-manager", "pytest", "mllab"):
        assert dist not in seen["dists"]


# --- staged for a deployment on an S3-compatible store ------------------------------------------------

S3_ENDPOINT_HOST = "0123abcd.r2.cloudflarestorage.com"
PRESIGN = """
from mllab.files import objects, store
name = str(objects.model_file("a" * 32, "b" * 32, "c" * 32, 1, "weights"))
print(store.signed_upload_url(name, "application/octet-stream", 10).url)
"""


def _s3_settings(folder: Path) -> dict[str, str]:
    """The S3 store's settings, with its token mounted as a Cloud Run secret volume would be."""
    mounted = folder / "secrets" / config.S3_CREDENTIALS
    mounted.mkdir(parents=True)
    (mounted / config.S3_CREDENTIALS).write_text(json.dumps({"access_key_id": "AK", "secret_access_key": "not-real"}))
    return {
        "MLLAB_ENV": "test",
        "MLLAB_DEV_DIR": str(folder / "dev"),
        "MLLAB_SECRETS_DIR": str(folder / "secrets"),
        "MLLAB_STORAGE": "s3",
        "MLLAB_S3_ENDPOINT": f"https://{S3_ENDPOINT_HOST}",
        "MLLAB_BUCKET": "mllab-models",
    }


def test_a_store_function_staged_with_the_s3_extra_presigns_and_one_staged_without_it_cannot(tmp_path: Path) -> None:
    """What `make deploy-plan STORAGE=s3` stages (infra/stage.py --extra=s3:...): the extra's pins make the
    S3 path work from the staged requirements alone; a GCS deployment's staging has no botocore."""
    python = python312()
    wheels = wheel_cache(python)
    answers = {}
    for label, extra in (("s3", ["--extra=s3:signed_urls"]), ("gcs", [])):
        out = tmp_path / label
        done = subprocess.run(
            [sys.executable, str(ROOT / "infra" / "stage.py"), "--out", str(out), *extra, "signed_urls"],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
        install(python, wheels, out / "signed_urls", tmp_path / f"venv-{label}")
        answers[label] = subprocess.run(
            [str(tmp_path / f"venv-{label}" / "bin" / "python"), "-c", PRESIGN],
            cwd=out / "signed_urls",
            env={**base_env(tmp_path / f"venv-{label}"), **_s3_settings(tmp_path / f"run-{label}")},
            capture_output=True,
            text=True,
            timeout=120,
        )
    url = answers["s3"].stdout.strip()
    assert answers["s3"].returncode == 0, answers["s3"].stderr[-3000:]
    assert urlsplit(url).netloc == S3_ENDPOINT_HOST and "X-Amz-Signature=" in url and "not-real" not in url
    assert answers["gcs"].returncode != 0 and "No module named 'botocore'" in answers["gcs"].stderr
