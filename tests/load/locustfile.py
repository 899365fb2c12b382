"""What one signed-in person does to the API, for locust (`make load`, tests/load/run.py).

Each virtual user takes one pre-created PRO account from the file named by MLLAB_LOAD_USERS_FILE
(a JSON list of {"uid", "email", "password"}), signs in once through the gateway the way the lab
does (POST /auth/login, then GET /me for the CSRF token), creates one project and one model, and
then repeats a weighted mix with a think time between tasks:

    refresh   POST /auth/refresh with the refresh cookie (rotation; the cookie changes every time)
    me        GET /me with the access token
    save      POST /models/{id}/versions, then per file (weights.bin, model.json) POST /signed/upload
              and PUT the bytes to the signed URL (fake-gcs-server), whose finalize event goes
              through Pub/Sub to on_object_finalized

Beside them, PredictUser (weight MLLAB_LOAD_PREDICT_WEIGHT against the lab users' LAB_WEIGHT; 0 for
none) calls a deployment prepared before the ramp (predictions.py; the file named by
MLLAB_LOAD_PREDICTORS_FILE) with its API key, as a client's program does:

    predict     POST /predict/{id} with 1 instance (3 times as often as the next)
    predict100  POST /predict/{id} with 100 instances

and keeps in PREDICTIONS the instances of the calls answered 200, and of those with no answer or a
5xx (which may or may not have been counted), per owner and deployment, for the metering check.

Everything a user did that must show up in Firestore is kept in UPLOADS (per uid: the versions
allocated, every object PUT with its size, the upload URLs signed, and any PUT whose answer was
lost, which may or may not have been stored) so that run.py can check the
records afterwards. Locust monkey-patches with gevent on import: load this file only in a process
of its own (run.py starts one), never inside pytest or next to a Firestore client.

Standalone: `MLLAB_LOAD_USERS_FILE=users.json locust -f tests/load/locustfile.py --host http://127.0.0.1:8080`.
"""

from __future__ import annotations

import json
import os
import random
import time
from collections import defaultdict
from typing import Any

from locust import between, task
from locust.contrib.fasthttp import FastHttpUser
from predictions import BATCH as PREDICT_BATCH  # tests/load/ is on sys.path (drive.py, locust -f)
from predictions import LAB_WEIGHT, PREDICT_WEIGHT, new_calls, note_call

REFRESH_COOKIE = "__Host-rt"
# What a virtual user does once, on arrival (the rest is the mix it repeats while signed in).
SIGN_IN_REQUESTS = frozenset({"POST /auth/login", "POST /projects", "POST /models"})
_WAIT = [float(x) for x in os.environ.get("MLLAB_LOAD_WAIT", "1,5").split(",")]
WEIGHTS_BYTES = (64, 4096)  # a small weights.bin, random size in this range
MODEL_JSON = {
    "format": "layers-model",
    "generatedBy": "mllab-load",
    "modelTopology": {"class_name": "Sequential", "config": {"layers": []}},
}

# One account per virtual user, handed out in spawn order (a single process: greenlets, no locks).
_accounts: list[dict[str, str]] = []
_next_account = 0

# uid -> what that user did that Firestore must show afterwards
UPLOADS: dict[str, dict[str, Any]] = defaultdict(
    lambda: {"model_id": None, "versions": [], "objects": {}, "uncertain": {}, "signed": 0, "sign_failed": 0}
)


# The prediction mix: {"rows": [instances], "owners": [{"uid", "deployments", "key"}]}, owners handed
# out round robin; what the calls did: per owner and deployment, and [start, end, instances] of each 200.
_predictors: dict[str, Any] = {"rows": [], "owners": []}
_next_owner = 0
PREDICTIONS: dict[str, Any] = new_calls()


def load_predictors(path: str | None = None) -> bool:
    """Reads the prediction mix's deployments; False when there are none (no PredictUser then)."""
    global _predictors, _next_owner
    path = path or os.environ.get("MLLAB_LOAD_PREDICTORS_FILE")
    if not path:
        return False
    with open(path) as fh:
        _predictors = json.load(fh)
    _next_owner = 0
    return bool(_predictors["owners"] and _predictors["rows"])


def load_accounts(path: str | None = None) -> None:
    global _accounts, _next_account
    path = path or os.environ.get("MLLAB_LOAD_USERS_FILE")
    if not path:
        raise RuntimeError("MLLAB_LOAD_USERS_FILE names no file of accounts (run.py writes it)")
    with open(path) as fh:
        _accounts = json.load(fh)
    _next_account = 0


def _take_account() -> dict[str, str]:
    global _next_account
    if not _accounts:
        load_accounts()
    if _next_account >= len(_accounts):
        raise RuntimeError(f"more virtual users than the {len(_accounts)} accounts prepared")
    account = _accounts[_next_account]
    _next_account += 1
    return account


def _problem(resp: Any) -> str:
    """A short reason for a failed request: status and the problem's title/detail."""
    try:
        body = resp.json()
        what = body.get("title") or body.get("detail") or ""
    except Exception:  # noqa: BLE001 - anything unparsable is reported by its status alone
        what = ""
    if not resp.status_code and getattr(resp, "error", None) is not None:
        what = f"no answer: {type(resp.error).__name__}: {resp.error}"  # the connection failed
    return f"HTTP {resp.status_code} {what}".strip()


class LabUser(FastHttpUser):
    weight = LAB_WEIGHT
    wait_time = between(*_WAIT)
    network_timeout = 30.0
    connection_timeout = 10.0

    def on_start(self) -> None:
        account = _take_account()
        self.uid, self.email, self.password = account["uid"], account["email"], account["password"]
        self.access_token: str | None = None
        self.refresh_cookie: str | None = None
        self.csrf: str | None = None
        self.model_id: str | None = None
        self.record = UPLOADS[self.uid]
        self.sign_in()

    # --- plumbing ---------------------------------------------------------------------------------

    def _cookie_headers(self) -> dict[str, str]:
        """The cookie routes' CSRF rules (docs/security.md): JSON, an allowed Origin, X-CSRF-Token."""
        h = {"Origin": self.host, "X-CSRF-Token": "1", "Content-Type": "application/json"}
        if self.refresh_cookie:
            h["Cookie"] = f"{REFRESH_COOKIE}={self.refresh_cookie}"
        return h

    def _api_headers(self) -> dict[str, str]:
        return {
            "Authorization": f"Bearer {self.access_token}",
            "X-CSRF-Token": self.csrf or "",
            "Content-Type": "application/json",
            "Origin": self.host,
        }

    def _absorb_cookie(self, resp: Any) -> None:
        # The refresh cookie is kept by hand, as the lab's Python clients do; locust's own jar is
        # emptied so it never sends a second, stale copy.
        for header in resp.headers.getlist("set-cookie") if resp.headers else []:
            name, _, rest = header.partition("=")
            if name.strip() == REFRESH_COOKIE:
                self.refresh_cookie = rest.split(";", 1)[0] or None
        self.client.cookiejar.clear()

    # --- sign-in, once per virtual user -----------------------------------------------------------

    def sign_in(self) -> bool:
        with self.client.post(
            "/auth/login",
            data=json.dumps({"email": self.email, "password": self.password}),
            headers=self._cookie_headers(),
            name="POST /auth/login",
            catch_response=True,
        ) as resp:
            if resp.status_code != 200:
                resp.failure(_problem(resp))
                return False
            self.access_token = resp.json()["access_token"]
            self._absorb_cookie(resp)
        if not self.me():
            return False
        return self._ensure_model()

    def _ensure_model(self) -> bool:
        if self.model_id:
            return True
        with self.client.post(
            "/projects",
            data=json.dumps({"name": "load"}),
            headers=self._api_headers(),
            name="POST /projects",
            catch_response=True,
        ) as resp:
            if resp.status_code != 201:
                resp.failure(_problem(resp))
                return False
            project_id = resp.json()["id"]
        body = {"project_id": project_id, "name": "load", "config_json": {"layers": []}}
        with self.client.post(
            "/models", data=json.dumps(body), headers=self._api_headers(), name="POST /models", catch_response=True
        ) as resp:
            if resp.status_code != 201:
                resp.failure(_problem(resp))
                return False
            self.model_id = resp.json()["id"]
            self.record["model_id"] = self.model_id
        return True

    def _ready(self) -> bool:
        """Signed in with a model to save to; a user whose sign-in failed tries again first."""
        return bool(self.access_token and self.csrf and self.model_id) or self.sign_in()

    # --- the mix -----------------------------------------------------------------------------------

    @task(2)
    def refresh(self) -> None:
        if not self._ready():
            return
        with self.client.post(
            "/auth/refresh", data="", headers=self._cookie_headers(), name="POST /auth/refresh", catch_response=True
        ) as resp:
            if resp.status_code != 200:
                resp.failure(_problem(resp))
                if resp.status_code == 401:  # the session is gone: sign in again next time
                    self.access_token = self.refresh_cookie = None
                return
            self.access_token = resp.json()["access_token"]
            self._absorb_cookie(resp)

    @task(6)
    def me(self) -> bool:
        if self.access_token is None:
            return self.sign_in()
        with self.client.get(
            "/me", headers={"Authorization": f"Bearer {self.access_token}"}, name="GET /me", catch_response=True
        ) as resp:
            if resp.status_code != 200:
                resp.failure(_problem(resp))
                return False
            body = resp.json()
            self.csrf = body["csrf"]
            if body["subscription"]["plan"] != "pro":
                resp.failure(f"plan is {body['subscription']['plan']!r}, not pro")
                return False
        return True

    @task(1)
    def save(self) -> None:
        """What the lab's "Save to cloud" does for a model: a new version, then both files."""
        if not self._ready():
            return
        with self.client.post(
            f"/models/{self.model_id}/versions",
            data="",
            headers=self._api_headers(),
            name="POST /models/{id}/versions",
            catch_response=True,
        ) as resp:
            if resp.status_code != 201:
                resp.failure(_problem(resp))
                return
            version = resp.json()["version"]
        self.record["versions"].append(version)
        weights = random.randbytes(random.randint(*WEIGHTS_BYTES))
        model_json = json.dumps({**MODEL_JSON, "version": version}).encode()
        for kind, data in (("weights", weights), ("model", model_json)):
            self._upload(kind, version, data)

    def _upload(self, kind: str, version: int, data: bytes) -> None:
        body = {"kind": kind, "model_id": self.model_id, "version": version, "size": len(data)}
        with self.client.post(
            "/signed/upload",
            data=json.dumps(body),
            headers=self._api_headers(),
            name="POST /signed/upload",
            catch_response=True,
        ) as resp:
            if resp.status_code != 200:
                resp.failure(_problem(resp))
                self.record["sign_failed"] += 1
                return
            signed = resp.json()
        self.record["signed"] += 1
        with self.client.put(
            signed["url"], data=data, headers=signed["headers"], name="PUT signed URL (GCS)", catch_response=True
        ) as resp:
            if resp.status_code != 200:
                resp.failure(f"HTTP {resp.status_code}")
                # it may still have been stored (a timeout after the bytes went): recorded 0 or 1 times
                self.record["uncertain"][signed["object"]] = len(data)
                return
        self.record["objects"][signed["object"]] = len(data)


class PredictUser(FastHttpUser):
    """A client program calling a deployment with its API key (no session, no cookie)."""

    weight = PREDICT_WEIGHT
    wait_time = between(*_WAIT)
    network_timeout = 30.0
    connection_timeout = 10.0

    def on_start(self) -> None:
        global _next_owner
        if not _predictors["owners"] and not load_predictors():
            raise RuntimeError("MLLAB_LOAD_PREDICTORS_FILE names no file of deployments (run.py writes it)")
        owners = _predictors["owners"]
        owner = owners[_next_owner % len(owners)]  # more predict users than owners share them
        _next_owner += 1
        self.uid, self.deployments, self.key = owner["uid"], owner["deployments"], owner["key"]
        self.rows: list[dict[str, Any]] = _predictors["rows"]

    def _predict(self, instances: list[dict[str, Any]], name: str) -> None:
        dep = random.choice(self.deployments)
        started = time.time()
        with self.client.post(
            f"/predict/{dep}",
            data=json.dumps({"instances": instances}),
            headers={"Authorization": f"Bearer {self.key}", "Content-Type": "application/json"},
            name=name,
            catch_response=True,
        ) as resp:
            note_call(PREDICTIONS, self.uid, dep, len(instances), resp.status_code or 0, started)
            if resp.status_code != 200:
                resp.failure(_problem(resp))
                return
            got = len(resp.json().get("predictions", []))
            if got != len(instances):
                resp.failure(f"{got} predictions for {len(instances)} instances")

    @task(3)
    def predict(self) -> None:
        self._predict([random.choice(self.rows)], "POST /predict/{id} (1 instance)")

    @task(1)
    def predict100(self) -> None:
        start = random.randrange(len(self.rows))
        batch = [self.rows[(start + i) % len(self.rows)] for i in range(PREDICT_BATCH)]
        self._predict(batch, f"POST /predict/{{id}} ({PREDICT_BATCH} instances)")
