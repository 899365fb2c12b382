"""Where a warm request's time goes: each path served in-process (the function's own main.py under
functions-framework's test client) against the emulators, with Firestore round trips counted per RPC
and CPU per request; PROFILE=1 adds cProfile's top functions per path by wall time, PROFILE=cpu by
process CPU (time spent waiting on Firestore drops out), TOP=n more rows. Numbers only.

    .venv/bin/python tests/bench/paths.py            # PATHS_CALLS=200, PATHS=refresh,me,...
"""

from __future__ import annotations

import collections
import cProfile
import io
import os
import pstats
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import bench  # tests/bench/ is on sys.path: this file runs as a script
from mllab.billing import entitlements, subscriptions
from mllab.identity import passwords, sessions, tokens, users
from mllab.platform import clients, config, log
from mllab_dev.stack import ROOT, Ports, Stack

CALLS = int(os.environ.get("PATHS_CALLS", "200"))
RPCS: collections.Counter[str] = collections.Counter()


def count_rpcs() -> None:
    """Wrap every RPC of the shared Firestore client with a counter (by the RPC's name)."""
    transport = clients.firestore()._firestore_api._transport
    for method, wrapped in list(transport._wrapped_methods.items()):
        name = getattr(method, "__name__", None) or type(method).__name__

        def counted(*args: Any, _w: Any = wrapped, _n: str = name, **kwargs: Any) -> Any:
            RPCS[_n] += 1
            return _w(*args, **kwargs)

        transport._wrapped_methods[method] = counted


def app(name: str) -> Any:
    import functions_framework

    return functions_framework.create_app(name, str(ROOT / "functions" / name / "main.py")).test_client()


def paths(origin: str) -> dict[str, Callable[[], None]]:
    uid = users.create_password_user(f"paths-{uuid.uuid4().hex[:8]}@example.com", passwords.DUMMY_HASH, verified=True)
    session, cookie = sessions.create(uid, "password", user_agent="paths", ip="127.0.0.1")
    bearer = {"Authorization": "Bearer " + tokens.issue_access_token(uid, session.id).token}
    mutate = {**bearer, "X-CSRF-Token": sessions.csrf_token(session.id)}
    refresh_app, account, catalog = app("auth_refresh"), app("account"), app("catalog")
    state = {"cookie": cookie}

    def refresh() -> None:
        refresh_app.set_cookie("__Host-rt", state["cookie"])
        r = refresh_app.post("/auth/refresh", headers={"Origin": origin, "X-CSRF-Token": "1"}, json={})
        assert r.status_code == 200, r.data
        state["cookie"] = r.headers["Set-Cookie"].split(";", 1)[0].split("=", 1)[1]

    def me() -> None:
        assert account.get("/me", headers=bearer).status_code == 200

    def projects() -> None:
        assert catalog.get("/projects?limit=20", headers=bearer).status_code == 200

    def create_project() -> None:
        r = catalog.post("/projects", headers=mutate, json={"name": "p"})
        assert r.status_code in (201, 409), r.data

    recorder = app("on_object_finalized")
    versions = iter(bench._new_versions(CALLS + 10))
    generation = iter(range(int(time.time() * 1e6), sys.maxsize))

    def record() -> None:
        message = {**bench._notification(str(next(versions)), next(generation), 1024), "messageId": uuid.uuid4().hex}
        body = {"subscription": "projects/p/subscriptions/s", "message": message}
        assert recorder.post("/projects/p/topics/t", json=body).status_code in (200, 204)

    # A PRO user's saves: a new version of a model (a fresh model every 90: PRO allows 100 a model), and
    # a signed URL for its weights.
    subscriptions.set_grant(uid, lambda doc, now: entitlements.with_grant(doc, None, now))
    project = catalog.post("/projects", headers=mutate, json={"name": "saves"}).get_json()
    saved = {"model": "", "versions": 90, "version": 0}

    def new_version() -> None:
        if saved["versions"] >= 90:
            model = {"project_id": project["id"], "name": "m", "config_json": {"layers": []}}
            saved["model"], saved["versions"] = catalog.post("/models", headers=mutate, json=model).get_json()["id"], 0
        r = catalog.post(f"/models/{saved['model']}/versions", headers=mutate, json={})
        assert r.status_code == 201, r.data
        saved["versions"], saved["version"] = saved["versions"] + 1, r.get_json()["version"]

    signer = app("signed_urls")

    def sign_upload() -> None:
        body = {"kind": "weights", "model_id": saved["model"], "version": saved["version"], "size": 1024}
        assert signer.post("/signed/upload", headers=mutate, json=body).status_code == 200

    return {
        "refresh": refresh,
        "me": me,
        "projects": projects,
        "create_project": create_project,
        "new_version": new_version,
        "sign_upload": sign_upload,
        "record": record,
    }


def measure(label: str, call: Callable[[], None], profile: bool) -> None:
    for _ in range(5):
        call()
    RPCS.clear()
    # PROFILE=cpu times functions by process CPU (waits for Firestore drop out), PROFILE=1 by wall clock.
    prof = (
        (cProfile.Profile(time.process_time) if os.environ.get("PROFILE") == "cpu" else cProfile.Profile())
        if profile
        else None
    )
    cpu, wall = time.process_time(), time.perf_counter()
    if prof:
        prof.enable()
    for _ in range(CALLS):
        call()
    if prof:
        prof.disable()
    cpu, wall = (time.process_time() - cpu) / CALLS * 1000, (time.perf_counter() - wall) / CALLS * 1000
    rpcs = ", ".join(f"{n} {c / CALLS:.1f}" for n, c in sorted(RPCS.items()))
    print(f"{label:16} {cpu:8.2f} {wall:8.2f}  {rpcs}")
    if prof:
        out = io.StringIO()
        stats = pstats.Stats(prof, stream=out)
        stats.sort_stats("tottime").print_stats(int(os.environ.get("TOP", "15")))
        stats.sort_stats("cumulative").print_stats(
            "mllab|jwt|pydantic|werkzeug|flask|functions_framework", int(os.environ.get("TOP", "25"))
        )
        print(out.getvalue())


def main() -> int:
    chosen = set(filter(None, os.environ.get("PATHS", "").split(",")))
    with tempfile.TemporaryDirectory() as tmp:
        stack = Stack(Ports.free(), Path(tmp))
        stack.start()
        try:
            os.environ.update(stack.env())
            config.reload()
            clients.reset()
            log.min_level = "WARNING"
            count_rpcs()
            print(f"{'path':16} {'CPU ms':>8} {'wall ms':>8}  Firestore RPCs per request (in-process client + handler)")
            for label, call in paths(stack.gateway_url).items():
                if not chosen or label in chosen:
                    measure(label, call, os.environ.get("PROFILE") in ("1", "cpu"))
        finally:
            stack.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
