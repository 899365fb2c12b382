"""Fuzzing: schemathesis against the local stack, from the OpenAPI document the gateway serves.

Every operation of GET /openapi.json gets generated cases, positive and negative, from a fixed seed
per operation (derandomized, so CI sends the same cases every run), through the gateway as real
users: the access token in Authorization, the session's CSRF token (what GET /me answers) in
X-CSRF-Token, the refresh cookie on the cookie routes and an allow-listed Origin. Every 10th case keeps
schemathesis's own (invalid or missing) credentials and every 20th goes without Origin, so the
refusals are fuzzed too. In two cases of three, what generated input cannot guess is the caller's
own: ids in paths, bodies and queries, the password, a promo code, a mailed one-time token, the
fields an upload kind needs; so cases reach the handlers instead of stopping at a 404.

The main user signs in through POST /auth/login (the `member` fixture) and gets PRO, a project, a
model with an uploaded version (a model the lab saved, so it can be served), a dataset, a job, a
deployment of that version, a second one shared publicly, and an API key. Predictions are sent with
that key and, in two cases of three, rows the model takes; a version in a path is that version.
Operations that end a session or an account, or change it for good, get a fresh user per case
(FRESH_USER), signed in in-process by the same calls POST /auth/login makes (a session and its
refresh token, an access token): signing each in over HTTP would trip the per-IP failure budget that
fuzzing POST /auth/login spends. A real DELETE of a catalog record, a deployment or an API key gets
one made for it, and what a successful POST /deployments or /api-keys made is deleted again (an
account holds at most 20 of each).

Nothing is excluded. Three operations cannot succeed from generated input and are fuzzed for their
refusals (NEVER_SUCCEED): the Google callback needs the provider's code for this browser's sign-in
attempt, PayPal's webhook needs PayPal's signature (every case must be a 4xx, never a 5xx), and a
cancel needs a subscription PayPal has activated. Every other operation must succeed at least once.

Every response must pass not_a_server_error, status_code_conformance, content_type_conformance,
response_schema_conformance and response_headers_conformance. A failure is a defect of the library
or of the document, never of this test.
"""

from __future__ import annotations

import json
import threading
import time
import zlib
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, seed, settings
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup
from schemathesis.generation import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from mllab.api import routes
from mllab.billing import entitlements, promo, subscriptions
from mllab.files import catalog, schemas
from mllab.identity import passwords, sessions, tokens, users
from mllab.serving import apikeys, deployments
from mllab_dev.stack import Stack

from .conftest import PASSWORD, Browser

pytestmark = pytest.mark.stack

SEED = 20260808
POSITIVE_CASES = 24  # per operation (fewer when an operation has fewer distinct inputs)
NEGATIVE_CASES = 8
MIN_CASES = 1000
WORKERS = 4
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
]
# A fresh user per case: operations that end the session or the account they are called with (a
# refresh retires the cookie it was given; a password reset signs out every device), and a promo
# code, which each account redeems once.
FRESH_USER = {
    "DELETE /account",
    "POST /auth/logout",
    "DELETE /sessions/{id}",
    "POST /auth/password-change",
    "POST /auth/refresh",
    "POST /auth/password-reset/confirm",
    "POST /promo/apply",
}
# What generated input cannot bring to success even with a real user (each is still fuzzed for its
# refusals): the Google callback needs the provider's code for this browser's sign-in attempt,
# PayPal's webhook needs PayPal's signature, and a cancel needs a subscription PayPal has activated.
NEVER_SUCCEED = {"GET /auth/google/callback", "POST /payments/paypal/webhook", "POST /billing/cancel"}
FRESH_ON_DELETE = (*catalog.COLLECTIONS, deployments.COLLECTION, "api-keys")  # path collections
ID_FIELDS = ("project_id", "model_id", "dataset_id", "job_id")
ID_OF = {
    catalog.PROJECTS: "project_id",
    catalog.MODELS: "model_id",
    catalog.DATASETS: "dataset_id",
    catalog.JOBS: "job_id",
}
PROMO_CODE = "FUZZ-TRIAL"
UPLOAD_FIELDS = ("model", "weights", "dataset", "metrics")
GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "lab_model"  # a model the lab saved
MODEL_JSON = (GOLDEN / "model.json").read_bytes()
WEIGHTS = (GOLDEN / "weights.bin").read_bytes()
ROWS = json.loads((GOLDEN / "tfjs_predictions.json").read_text())["rows"][:3]  # rows the model takes
# Fields a body names that only the caller knows: a live promo code, the served version (model_id is
# the main model's already, as an id field), rows the model takes.
OWN_FIELDS: dict[str, dict[str, Any]] = {
    "/promo/apply": {"code": PROMO_CODE},
    "/deployments": {"version": 1},
    "/predict/{id}": {"instances": ROWS},
}


@dataclass
class Identity:
    uid: str
    email: str
    sid: str
    access: str
    csrf: str
    refresh: str


@dataclass
class Owned:
    """Records of the main user, for real ids in generated cases."""

    ids: dict[str, str] = field(default_factory=dict)
    object: str = ""
    deployment: str = ""  # for GET, PATCH and predictions
    shared: str = ""  # public, and never patched, for GET /public/deployments/{id}
    key: str = ""  # an API key for POST /predict/{id}


class Harness:
    def __init__(self, stack: Stack, password_hash: str, main: Identity) -> None:
        self.base = stack.gateway_url
        self.hash = password_hash
        self.made = 0
        self.lock = threading.Lock()
        self.counts: Counter[str] = Counter()
        self.statuses: Counter[tuple[str, int]] = Counter()
        self.details: Counter[tuple[str, int, str]] = Counter()  # what the refusals said, for the summary
        self.seen: Counter[str] = Counter()
        self.unsendable: Counter[str] = Counter()
        self.failures: list[str] = []
        self.local = threading.local()
        self.main = main
        self.owned = Owned()

    # --- identities and records -------------------------------------------------------------------

    def user(self) -> Identity:
        """A verified password user, signed in (a session and its refresh token, an access token)."""
        with self.lock:
            self.made += 1
            n = self.made
        email = f"fuzz-{n}-{time.monotonic_ns()}@example.com"
        uid = users.create_password_user(users.normalize_email(email), self.hash, verified=True)
        assert uid
        session, refresh = sessions.create(uid, "password", user_agent="schemathesis", ip="127.0.0.1")
        access = tokens.issue_access_token(uid, session.id).token
        return Identity(uid, email, session.id, access, session.csrf, refresh)

    def fresh_record(self, collection: str) -> str:
        """A record of the main user made just for one DELETE."""
        uid, ids = self.main.uid, self.owned.ids
        if collection == deployments.COLLECTION:
            return deployments.create(uid, ids["model_id"], 1)["id"]
        if collection == "api-keys":
            return apikeys.create(uid, "to revoke", ["predict"])["id"]
        if collection == catalog.PROJECTS:
            return catalog.create_project(uid, schemas.CreateProject(name="to delete"))["id"]
        if collection == catalog.MODELS:
            return catalog.create_model(uid, schemas.CreateModel(project_id=ids["project_id"], name="to delete"))["id"]
        if collection == catalog.DATASETS:
            return catalog.create_dataset(uid, schemas.CreateDataset(project_id=ids["project_id"], name="x"))["id"]
        return catalog.create_job(uid, schemas.CreateJob(project_id=ids["project_id"], model_id=ids["model_id"]))["id"]

    def setup_main(self) -> None:
        """The main user: PRO for 30 days (so uploads and checkout get past the plan check), a project,
        a model with a recorded version (the lab's model.json + weights.bin through signed URLs), a
        dataset, a job, a PayPal checkout, a promo code, two deployments of the version (one shared) and
        an API key."""
        main = self.main
        subscriptions.set_grant(main.uid, lambda doc, now: entitlements.with_grant(doc, 30, now))
        promo.create(promo.NewCode(code=PROMO_CODE, kind="trial", uses=10_000, days=14, per_user=3, created_by="fuzz"))
        h = {"Authorization": f"Bearer {main.access}", "X-CSRF-Token": main.csrf, "Origin": self.base}
        with httpx.Client(base_url=self.base, headers=h, timeout=30) as c:

            def ok(r: httpx.Response, status: int = 200) -> dict:
                assert r.status_code == status, r.text
                return r.json()

            project = ok(c.post("/projects", json={"name": "fuzz"}), 201)["id"]
            model = ok(c.post("/models", json={"project_id": project, "name": "m", "config_json": {"a": 1}}), 201)["id"]
            ok(c.post(f"/models/{model}/versions"), 201)
            dataset = ok(c.post("/datasets", json={"project_id": project, "name": "d"}), 201)["id"]
            job = ok(c.post("/jobs", json={"project_id": project, "model_id": model, "version": 1}), 201)["id"]
            ok(c.post("/billing/paypal/subscribe"))  # a checkout at the stand-in, for POST /billing/sync
            for kind, data in (("weights", WEIGHTS), ("model", MODEL_JSON)):
                signed = ok(
                    c.post("/signed/upload", json={"kind": kind, "model_id": model, "version": 1, "size": len(data)})
                )
                assert httpx.put(signed["url"], content=data, headers=signed["headers"], timeout=20).status_code == 200
                if kind == "model":
                    self.owned.object = signed["object"]
            deadline = time.monotonic() + 30
            while ok(c.get(f"/models/{model}"))["versions"][0]["status"] != "ready":
                assert time.monotonic() < deadline, "the uploaded version never became ready"
                time.sleep(0.2)
            self.owned.deployment, self.owned.shared = (
                ok(c.post("/deployments", json={"model_id": model, "version": 1}), 201)["id"] for _ in range(2)
            )
            ok(c.patch(f"/deployments/{self.owned.shared}", json={"public": True}))
            self.owned.key = ok(c.post("/api-keys", json={"name": "fuzz", "scopes": ["predict"]}), 201)["key"]
        self.owned.ids = {"project_id": project, "model_id": model, "dataset_id": dataset, "job_id": job}

    # --- one case ----------------------------------------------------------------------------------

    def session(self) -> requests.Session:
        if not hasattr(self.local, "session"):
            self.local.session = requests.Session()
        return self.local.session

    def prepare(self, case: Any, route: routes.Route, label: str) -> None:
        """Real credentials (all but every 10th case), an allowed Origin (all but every 20th), and in
        two cases of three the caller's own ids, password and promo code where the case names them.
        Decided by the case's number, not drawn, so hypothesis's examples stay independent of state."""
        with self.lock:
            self.seen[label] += 1
            n = self.seen[label]
        ident = self.user() if label in FRESH_USER else self.main
        case.headers = dict(case.headers or {})
        if n % 20 != 7:
            case.headers["Origin"] = self.base
        if n % 10 == 3:
            return  # schemathesis's own (invalid or missing) credentials and CSRF token
        self.own_credentials(case, route, ident, self.owned.key)
        if n % 3 == 0:
            return  # the generated ids, passwords and codes
        self.own_path_id(case, route, ident)
        self.own_fields(case)
        if isinstance(case.body, dict):
            self.own_body(case.body, route, ident)

    @staticmethod
    def own_credentials(case: Any, route: routes.Route, ident: Identity, key: str) -> None:
        """The access token, CSRF token and refresh cookie the route asks for, of `ident` (or its API key)."""
        if route.auth is routes.Auth.ACCESS_TOKEN:
            case.headers["Authorization"] = f"Bearer {ident.access}"
        if route.auth is routes.Auth.API_KEY:
            case.headers["Authorization"] = f"Bearer {key}"
        if route.csrf is routes.Csrf.SESSION:
            case.headers["X-CSRF-Token"] = ident.csrf
        if route.auth is routes.Auth.REFRESH_COOKIE:
            case.cookies = {**(case.cookies or {}), sessions.COOKIE: ident.refresh}

    def own_path_id(self, case: Any, route: routes.Route, ident: Identity) -> None:
        """The caller's own session, record, deployment or key in the path (a fresh one for a DELETE),
        and the served version where the path names a version."""
        if not (case.path_parameters and "id" in case.path_parameters):
            return
        if "version" in case.path_parameters:
            case.path_parameters["version"] = "1"
        collection = route.path.split("/")[1]
        if collection == "sessions":
            case.path_parameters["id"] = ident.sid
        elif route.method == "DELETE" and collection in FRESH_ON_DELETE:
            case.path_parameters["id"] = self.fresh_record(collection)
        elif collection in catalog.COLLECTIONS:
            case.path_parameters["id"] = self.owned.ids[ID_OF[collection]]
        elif collection in ("deployments", "predict"):
            case.path_parameters["id"] = self.owned.deployment
        elif collection == "public":
            case.path_parameters["id"] = self.owned.shared

    def own_fields(self, case: Any) -> None:
        """The main user's ids and object wherever the body or the query names them."""
        for container in (case.body, case.query):
            if isinstance(container, dict):
                for name in ID_FIELDS:
                    if name in container:
                        container[name] = self.owned.ids[name]
                if "object" in container:
                    container["object"] = self.owned.object

    def own_body(self, body: dict[str, Any], route: routes.Route, ident: Identity) -> None:
        """What generated input cannot guess: the password, a live promo code, a mailed one-time token
        (issued as the mail would carry it), and the fields one kind of upload needs (a freshly
        allocated version, so the upload is not refused as complete)."""
        for name in ("current_password", "password"):
            if name in body and route.auth is routes.Auth.ACCESS_TOKEN:
                body[name] = PASSWORD
        if route.path == "/auth/login" and "email" in body:
            body.update(email=self.main.email, password=PASSWORD)
        purpose = {"/auth/verify-email": "verify", "/auth/password-reset/confirm": "reset"}.get(route.path)
        if purpose and "token" in body:
            body["token"] = users.issue_email_token(ident.uid, purpose, ident.email, 600)
        body.update({name: value for name, value in OWN_FIELDS.get(route.path, {}).items() if name in body})
        kind = body.get("kind")
        if route.path == "/signed/upload" and isinstance(kind, str) and kind in UPLOAD_FIELDS:
            for name in ("model_id", "version", "dataset_id", "filename", "job_id"):
                body.pop(name, None)
            ids = self.owned.ids
            if kind in ("model", "weights"):
                body["model_id"] = ids["model_id"]
                body["version"] = catalog.allocate_version(self.main.uid, ids["model_id"])["version"]
            elif kind == "dataset":
                body.update(dataset_id=ids["dataset_id"], filename="data.csv")
            else:
                body["job_id"] = ids["job_id"]

    def run(self, case: Any, route: routes.Route, label: str) -> None:
        self.prepare(case, route, label)
        try:
            response = case.call(base_url=self.base, session=self.session(), timeout=30)
        except requests.exceptions.InvalidHeader:
            with self.lock:  # requests refuses to send this generated header: nothing reached the server
                self.unsendable[label] += 1
            return
        except requests.RequestException as exc:
            self.fail(label, f"no answer: {type(exc).__name__}: {exc}")
            return
        with self.lock:
            self.counts[label] += 1
            self.statuses[(label, response.status_code)] += 1
            if response.headers.get("content-type") == ["application/problem+json"]:
                self.details[(label, response.status_code, str(response.json().get("detail"))[:90])] += 1
        try:
            case.validate_response(response, checks=CHECKS)
        except (FailureGroup, AssertionError) as exc:
            self.fail(label, str(exc))
        self.undo(label, response)

    def undo(self, label: str, response: requests.Response) -> None:
        """Deletes what a successful POST /deployments or /api-keys made: an account holds at most 20 of
        each, and the DELETE cases need room for the one made for them."""
        if response.status_code != 201:
            return
        if label == "POST /deployments":
            deployments.delete(self.main.uid, response.json()["id"])
        elif label == "POST /api-keys":
            apikeys.revoke(self.main.uid, response.json()["id"])

    def fail(self, label: str, message: str) -> None:
        with self.lock:
            self.failures.append(f"{label}: {message[:4000]}")

    def fuzz(self, operation: Any, route: routes.Route) -> None:
        label = f"{route.method} {route.path}"
        strategies = [
            operation.as_strategy(generation_mode=GenerationMode.POSITIVE),
            operation.as_strategy(generation_mode=GenerationMode.NEGATIVE),
        ]
        for mode, strategy in zip(("positive", "negative"), strategies, strict=True):
            examples = POSITIVE_CASES if mode == "positive" else NEGATIVE_CASES
            if mode == "negative" and not _negatable(operation):
                continue  # nothing to make invalid (no parameters, no body)

            @seed(SEED ^ zlib.crc32(f"{label} {mode}".encode()))
            @settings(
                max_examples=examples,
                derandomize=True,
                database=None,
                deadline=None,
                phases=[Phase.explicit, Phase.generate],
                suppress_health_check=list(HealthCheck),
            )
            @given(case=strategy)
            def one(case: Any) -> None:
                self.run(case, route, label)

            one()


def _negatable(operation: Any) -> bool:
    definition = operation.definition.raw
    return bool(definition.get("parameters") or definition.get("requestBody"))


@pytest.fixture(scope="module")
def password_hash() -> str:
    return passwords.hash_password(PASSWORD)


@pytest.fixture
def firestore_ready(stack: Stack) -> None:
    """A just-started emulator on a busy machine can miss the first call's deadline: warm it up."""
    from google.api_core.exceptions import DeadlineExceeded

    for attempt in range(3):
        try:
            users.get("warm-up")
            return
        except DeadlineExceeded:
            if attempt == 2:
                raise


def test_fuzz_every_operation_of_the_document(stack: Stack, firestore_ready: None, member, password_hash: str) -> None:
    started = time.monotonic()
    doc = httpx.get(f"{stack.gateway_url}/openapi.json", timeout=10)
    assert doc.status_code == 200 and doc.headers["content-type"].startswith("application/json")
    schema = schemathesis.openapi.from_dict(doc.json())
    schema.validate()
    by_label = {f"{r.method} {r.path}": r for r in routes.ROUTES}
    operations = [result.ok() for result in schema.get_all_operations()]
    labels = {f"{op.method.upper()} {op.path}" for op in operations}
    assert labels == set(by_label), "the document and the route table disagree"

    browser: Browser = member()  # signed in through POST /auth/login, with the CSRF token from GET /me
    assert browser.access_token and browser.csrf and browser.refresh_cookie
    sid = tokens.verify_access_token(browser.access_token)["sid"]
    main = Identity(
        browser.uid,
        browser.email,
        sid,
        browser.access_token,
        browser.csrf,  # type: ignore[attr-defined]
        browser.refresh_cookie,
    )
    harness = Harness(stack, password_hash, main)
    harness.setup_main()
    # Slow operations first, so the pool ends together.
    operations.sort(key=lambda op: f"{op.method.upper()} {op.path}" not in FRESH_USER)
    with ThreadPoolExecutor(max_workers=WORKERS) as pool:
        for future in [pool.submit(harness.fuzz, op, by_label[f"{op.method.upper()} {op.path}"]) for op in operations]:
            future.result()
    elapsed = time.monotonic() - started

    total = sum(harness.counts.values())
    summary = "\n".join(
        f"  {label}: {harness.counts[label]} cases, statuses "
        + ", ".join(f"{s}x{n}" for (lb, s), n in sorted(harness.statuses.items()) if lb == label)
        + (f" ({harness.unsendable[label]} unsendable)" if harness.unsendable[label] else "")
        for label in sorted(by_label)
    )
    print(f"\nfuzzing: {total} cases over {len(operations)} operations in {elapsed:.1f}s\n{summary}")
    assert not harness.failures, f"{len(harness.failures)} failing case(s):\n\n" + "\n\n".join(harness.failures[:20])
    assert total >= MIN_CASES, f"only {total} cases were sent:\n{summary}"
    succeeded = {label for (label, status) in harness.statuses if status < 400}
    refusals = "\n".join(
        f"  {n}x {lb} {st}: {detail}" for (lb, st, detail), n in sorted(harness.details.items()) if lb not in succeeded
    )
    assert set(by_label) - succeeded == NEVER_SUCCEED, f"operations that never succeeded:\n{refusals}"
