"""Emulator-backed tests: the real local stack (Firestore and Pub/Sub emulators, fake-gcs-server,
every function under functions-framework, the gateway) is started once per run on free ports.
Firestore is emptied before each test; objects and messages are made unique per test."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from mllab.identity import sessions, tokens
from mllab.platform import clients, config
from mllab_dev.browser import CHROMIUM_ARGS
from mllab_dev.browser import executable as browser_executable
from mllab_dev.stack import PROJECT, Ports, Stack


@contextmanager
def running_stack(dev_dir: Path) -> Iterator[Stack]:
    """A whole stack on free ports, with this process's mllab pointed at it, and back afterwards.
    The suite shares one (below); a module that pauses parts of it starts its own."""
    from mllab.billing import paypal, webhooks
    from mllab.files import storage
    from mllab.identity import oauth

    def forget() -> None:
        config.reload()
        clients.reset()
        tokens.reset_caches()
        sessions.reset_caches()
        paypal.reset()
        storage.reset()
        oauth.reset_caches()
        webhooks.reset_cache()

    s = Stack(Ports.free(), dev_dir)
    s.start()
    saved = {k: os.environ.get(k) for k in s.env()}
    os.environ.update(s.env())
    forget()
    try:
        yield s
    finally:
        s.stop()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        forget()


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running_stack(tmp_path_factory.mktemp("stack")) as s:
        yield s


@pytest.fixture(autouse=True)
def clean_firestore(stack: Stack) -> None:
    # The event pipeline may still be finishing the last test's events: the emulator then answers
    # 409 "Transaction lock timeout" while a transaction holds its locks; the wipe is simply retried.
    for _ in range(3):
        r = httpx.delete(
            f"http://127.0.0.1:{stack.ports.firestore}/emulator/v1/projects/{PROJECT}/databases/(default)/documents",
            timeout=30,
        )
        if r.status_code != 409:
            break
    assert r.status_code == 200, r.text


@pytest.fixture(autouse=True)
def fresh_session_keys(stack: Stack) -> None:
    """Session keys are cached per process for 5 minutes: make sure they come from the stack's dev dir."""
    sessions.reset_caches()


@pytest.fixture
def cli(stack: Stack):
    """cli(*args, stdin=None) -> the installed `mllab` console script run against the stack."""
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith("MLLAB_")}
    env.update(stack.env())
    mllab = Path(sys.executable).parent / "mllab"

    def run(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(mllab), *args],
            input=stdin if stdin is not None else "",
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )

    return run


@pytest.fixture
def paypal(stack: Stack) -> Iterator[httpx.Client]:
    """The PayPal stand-in (its REST API and its /_standin/ control API), with no faults left over."""
    from .billing_support import standin

    client = standin(stack)
    client.delete("/_standin/faults")
    yield client
    client.delete("/_standin/faults")
    client.delete("/_standin/clock")  # a test that moved PayPal's clock leaves it at real time again
    client.close()


EXPECT_TIMEOUT_MS = 20_000  # Playwright's expectations: a full run on two cores is slow


@pytest.fixture(scope="module")
def chromium() -> Iterator:
    """Headless Chromium through Playwright, one per test module."""
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=EXPECT_TIMEOUT_MS)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=browser_executable(), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def gateway(stack: Stack) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=stack.gateway_url, timeout=20) as client:
        yield client


@pytest.fixture
def unique() -> str:
    return uuid.uuid4().hex[:12]


def function_log(stack: Stack, name: str) -> Path:
    return stack.log_dir / f"fn-{name}.log"


def wait_for_log(path: Path, needle: str, *, count: int = 1, timeout: float = 15.0) -> list[str]:
    """Lines of a child's log containing `needle`, once at least `count` have arrived (logs are
    copied from the child's pipe by a thread, so they lag the response slightly)."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        lines = [ln for ln in path.read_text().splitlines() if needle in ln] if path.exists() else []
        if len(lines) >= count or time.monotonic() > deadline:
            return lines
        time.sleep(0.05)


def docs_where(collection: str, field: str, value) -> list[dict]:
    """The documents of a top-level collection whose `field` equals `value` (a user's: field "uid"),
    each with its "id", in id order."""
    from google.cloud.firestore_v1.base_query import FieldFilter

    query = clients.firestore().collection(collection).where(filter=FieldFilter(field, "==", value))
    return [{**s.to_dict(), "id": s.id} for s in query.stream(**clients.opts())]


# --- users, browsers and in-process functions (shared by the identity tests) ---------------------

PASSWORD = "correct horse battery staple"


@pytest.fixture
def new_user(unique: str):
    """Create password users directly in Firestore: new_user(verified=True, role="user") -> dict."""
    from mllab.identity import passwords, users

    made = []

    def make(
        *, email: str | None = None, password: str = PASSWORD, verified: bool = True, role: str = "user", name: str = ""
    ) -> dict:
        email = email or f"user-{unique}-{len(made)}@example.com"
        uid = users.create_password_user(
            users.normalize_email(email), passwords.hash_password(password), name=name, verified=verified, role=role
        )
        assert uid, f"{email} already exists"
        made.append(uid)
        return {"uid": uid, "email": users.normalize_email(email), "password": password}

    return make


class Browser:
    """What the lab page does, over plain http: Origin and X-CSRF-Token on every call, the refresh
    cookie kept by hand (a cookie jar will not send a Secure cookie over http; Chromium does to
    127.0.0.1), the access token and CSRF token in memory."""

    def __init__(self, base_url: str, origin: str | None = None) -> None:
        self.client = httpx.Client(base_url=base_url, timeout=30, follow_redirects=False)
        self.origin = origin or base_url
        self.refresh_cookie: str | None = None
        self.access_token: str | None = None
        self.csrf: str | None = None
        self.user_agent = "pytest-browser/1.0"

    def _absorb(self, r: httpx.Response) -> httpx.Response:
        for header in r.headers.get_list("set-cookie"):
            name, _, rest = header.partition("=")
            if name == "__Host-rt":
                value = rest.split(";", 1)[0]
                self.refresh_cookie = value or None
        return r

    def request(
        self,
        method: str,
        path: str,
        *,
        json_body=None,
        auth: bool = True,
        cookie: bool = True,
        headers: dict | None = None,
        **kw,
    ) -> httpx.Response:
        h = {"Origin": self.origin, "X-CSRF-Token": self.csrf or "1", "User-Agent": self.user_agent}
        if auth and self.access_token:
            h["Authorization"] = f"Bearer {self.access_token}"
        if cookie and self.refresh_cookie:
            h["Cookie"] = f"__Host-rt={self.refresh_cookie}"
        if method == "POST" and json_body is None and "content" not in kw:
            h["Content-Type"] = "application/json"  # the lab always posts JSON, even with no body
            kw["content"] = b""
        h.update(headers or {})
        return self._absorb(self.client.request(method, path, json=json_body, headers=h, **kw))

    def login(self, email: str, password: str) -> httpx.Response:
        r = self.request("POST", "/auth/login", json_body={"email": email, "password": password})
        if r.status_code == 200:
            self.access_token = r.json()["access_token"]
            me = self.request("GET", "/me")
            if me.status_code == 200:
                self.csrf = me.json()["csrf"]
        return r

    def refresh(self) -> httpx.Response:
        r = self.request("POST", "/auth/refresh", auth=False)
        if r.status_code == 200:
            self.access_token = r.json()["access_token"]
        return r


@pytest.fixture
def member(stack: Stack, new_user):
    """member() -> a Browser signed in through the gateway as a new verified user (.uid, .email)."""
    made: list[Browser] = []

    def make() -> Browser:
        user = new_user(verified=True)
        b = Browser(stack.gateway_url)
        assert b.login(user["email"], user["password"]).status_code == 200
        assert b.csrf, "GET /me gave no CSRF token"
        b.uid, b.email = user["uid"], user["email"]  # type: ignore[attr-defined]
        made.append(b)
        return b

    yield make
    for b in made:
        b.client.close()


@pytest.fixture
def browser(stack: Stack):
    b = Browser(stack.gateway_url)
    yield b
    b.client.close()


@pytest.fixture(scope="session")
def function_client(stack: Stack):
    """In-process test clients of the functions, against the emulators, so tests can move
    mllab.platform.clock (which cannot reach the separate function processes)."""
    import functions_framework

    from mllab_dev.stack import ROOT

    cache: dict = {}

    def get(name: str):
        if name not in cache:
            cache[name] = functions_framework.create_app(name, str(ROOT / "functions" / name / "main.py")).test_client()
        return cache[name]

    return get


@pytest.fixture
def records(new_user):
    """Catalog records written straight to Firestore (for tests below the HTTP layer):
    records() -> {uid, project_id, model_id, version, dataset_id, job_id}."""
    import uuid as _uuid

    from mllab.platform import clients, clock

    def make(uid: str | None = None) -> dict:
        uid = uid or new_user()["uid"]
        db, now = clients.firestore(), clock.now()
        ids = {
            "uid": uid,
            "project_id": _uuid.uuid4().hex,
            "model_id": _uuid.uuid4().hex,
            "version": 1,
            "dataset_id": _uuid.uuid4().hex,
            "job_id": _uuid.uuid4().hex,
        }
        base = {"uid": uid, "created_at": now, "updated_at": now}
        db.collection("projects").document(ids["project_id"]).set({**base, "name": "p"})
        db.collection("models").document(ids["model_id"]).set(
            {
                **base,
                "project_id": ids["project_id"],
                "name": "m",
                "config_json": "{}",
                "latest_version": None,
                "next_version": 2,
            }
        )
        db.collection("models").document(ids["model_id"]).collection("versions").document("000000001").set(
            {
                **base,
                "model_id": ids["model_id"],
                "project_id": ids["project_id"],
                "version": 1,
                "status": "pending",
                "files": {},
                "size_bytes": 0,
            }
        )
        db.collection("datasets").document(ids["dataset_id"]).set(
            {
                **base,
                "project_id": ids["project_id"],
                "name": "d",
                "schema_json": "{}",
                "status": "pending",
                "object": None,
                "size_bytes": 0,
                "columns": [],
                "row_count": None,
            }
        )
        db.collection("jobs").document(ids["job_id"]).set(
            {
                **base,
                "project_id": ids["project_id"],
                "model_id": ids["model_id"],
                "version": 1,
                "dataset_id": None,
                "name": "",
                "status": "created",
            }
        )
        return ids

    return make
