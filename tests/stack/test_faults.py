"""Faults: a part of the system paused (SIGSTOP, not killed: a hung dependency, not a refused
connection) while requests are in flight, then resumed (SIGCONT).

Every request that needs the paused part answers 503 problem+json with Retry-After within 10 s (not a
500, not a hang), stores either the whole change or none of it, and the same request succeeds once the
part is back. A webhook answers 5xx (so PayPal retries) and its replay is processed exactly once; an
upload made while the event path is paused is recorded exactly once.

This module runs its own stack (pausing the suite's shared emulators would stall other tests).
"""

from __future__ import annotations

import os
import signal
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import httpx
import pytest

from mllab.billing import entitlements, promo, subscriptions
from mllab.files import catalog, recorder
from mllab.identity import sessions
from mllab.platform import clients, clock
from mllab.platform.problems import PROBLEM_JSON
from mllab_dev.stack import BUCKET, Stack

from .billing_support import event, event_marker, mails_to, signed_webhook, subscribe, subscription_status, wait
from .conftest import Browser, docs_where, running_stack

WITHIN_S = 10.0  # the bound: a paused dependency is a 503 within 10 s
RECOVER_S = 45.0  # PayPal's circuit breaker, once open, lets a trial call through after 30 s


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """This module's own stack (overrides the suite's shared one for these tests only)."""
    with running_stack(tmp_path_factory.mktemp("faults")) as s:
        yield s


@contextmanager
def paused(stack: Stack, name: str) -> Iterator[float]:
    """Stop a child's whole process group; yields when it was stopped (time.monotonic())."""
    child = next(c for c in stack.children if c.name == name)
    os.killpg(child.proc.pid, signal.SIGSTOP)
    try:
        yield time.monotonic()
    finally:
        os.killpg(child.proc.pid, signal.SIGCONT)


def timed(call: Callable[[], httpx.Response]) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    r = call()
    return r, time.monotonic() - started


def assert_unavailable(r: httpx.Response, elapsed: float, what: str) -> None:
    assert r.status_code == 503, f"{what}: {r.status_code} {r.text[:300]}"
    assert r.headers["content-type"] == PROBLEM_JSON, what
    body = r.json()
    assert body["status"] == 503 and body["detail"] and body["request_id"], body
    assert int(r.headers["retry-after"]) >= 1, what
    assert elapsed < WITHIN_S, f"{what} answered after {elapsed:.1f} s"


def until_answered(call: Callable[[], httpx.Response], timeout: float = RECOVER_S) -> httpx.Response:
    """Repeat a request while it answers 503, honouring Retry-After, as a client would."""
    deadline = time.monotonic() + timeout
    while True:
        r = call()
        if r.status_code != 503 or time.monotonic() > deadline:
            return r
        time.sleep(min(int(r.headers.get("retry-after", "1")), max(0.0, deadline - time.monotonic())) or 0.2)


def doc(collection: str, key: str) -> dict[str, Any] | None:
    snap = clients.firestore().collection(collection).document(key).get(**clients.opts())
    return snap.to_dict() if snap.exists else None


def pro(b: Browser) -> Browser:
    subscriptions.set_grant(b.uid, lambda d, now: entitlements.with_grant(d, None, now))
    return b


# --- Firestore ---------------------------------------------------------------------------------------


def test_reads_during_a_firestore_pause_answer_503_within_10_s_then_recover(stack: Stack, member) -> None:
    b = member()
    reads = ["/me", "/sessions", "/projects", "/account/export"]
    for path in reads:  # warm: each function has its Firestore channel open
        assert b.request("GET", path).status_code == 200, path
    with paused(stack, "firestore"), ThreadPoolExecutor(len(reads)) as pool:
        answers = list(pool.map(lambda path: timed(lambda: b.request("GET", path)), reads))
    for path, (r, elapsed) in zip(reads, answers, strict=True):
        assert_unavailable(r, elapsed, f"GET {path}")
    for path in reads:
        assert until_answered(lambda path=path: b.request("GET", path), timeout=15).status_code == 200, path


class Mutations:
    """Four mutations, each touching several documents, and what each stored before they ran."""

    def __init__(self, member) -> None:
        self.owner = member()  # creates a project, allocates a version, redeems a trial code
        self.refresher = member()  # rotates its refresh cookie
        self.project_name = f"faults-{uuid.uuid4().hex[:8]}"
        p = self.owner.request("POST", "/projects", json_body={"name": "base"})
        m = self.owner.request("POST", "/models", json_body={"project_id": p.json()["id"], "name": "m"})
        assert m.status_code == 201, m.text
        self.model_id = m.json()["id"]
        self.code = f"FAULT-{uuid.uuid4().hex[:8].upper()}"
        promo.create(promo.NewCode(code=self.code, kind="trial", uses=5, days=14))
        self.cookie = self.refresher.refresh_cookie
        self.sid = sessions.parse_refresh_token(self.cookie).sid
        self.counter = doc("sessions", self.sid)["counter"]
        self.versions_before = self.versions()

    def calls(self) -> dict[str, Callable[[], httpx.Response]]:
        o = self.owner
        return {
            "create a project": lambda: o.request("POST", "/projects", json_body={"name": self.project_name}),
            "allocate a version": lambda: o.request("POST", f"/models/{self.model_id}/versions"),
            "apply a promo code": lambda: o.request("POST", "/promo/apply", json_body={"code": self.code}),
            # the cookie is sent by hand: the Browser must not adopt a new one behind the test's back
            "rotate the refresh cookie": lambda: self.refresher.request(
                "POST", "/auth/refresh", auth=False, cookie=False, headers={"Cookie": f"__Host-rt={self.cookie}"}
            ),
        }

    def versions(self) -> dict[int, dict[str, Any]]:
        ref = catalog.ref(catalog.MODELS, self.model_id).collection(catalog.VERSIONS)
        return {s.get("version"): s.to_dict() for s in ref.stream(**clients.opts())}

    def projects_named(self) -> list[dict[str, Any]]:
        return [d for d in docs_where("projects", "uid", self.owner.uid) if d.get("name") == self.project_name]

    def redemptions(self) -> list[dict[str, Any]]:
        return [r for r in promo.redemptions_of(self.owner.uid) if r["code"] == self.code]

    def check_whole_or_nothing(self, answers: dict[str, httpx.Response]) -> None:
        """After the pause: each change is stored completely or not at all, and a 2xx was stored."""
        projects = self.projects_named()
        assert len(projects) <= 1, projects
        for p in projects:
            assert p["uid"] == self.owner.uid and p["created_at"] and p["updated_at"], p
        if answers["create a project"].status_code == 201:
            assert [p["id"] for p in projects] == [answers["create a project"].json()["id"]]

        new = {n: v for n, v in self.versions().items() if n not in self.versions_before}
        assert len(new) <= 1, new
        for v in new.values():
            assert v["status"] == "pending" and v["files"] == {} and v["model_id"] == self.model_id, v
        model = doc("models", self.model_id)
        assert model["next_version"] > max(self.versions().keys() | {0}), model
        if answers["allocate a version"].status_code == 201:
            assert list(new) == [answers["allocate a version"].json()["version"]]

        code = doc("promo_codes", self.code)
        redemptions = self.redemptions()
        ent = entitlements.get(self.owner.uid) or {}
        assert code["redemptions"] == len(redemptions) <= 1, (code, redemptions)
        assert bool(ent.get("trial_until")) == bool(redemptions), ent  # the grant and its redemption, together
        if answers["apply a promo code"].status_code == 200:
            assert len(redemptions) == 1

        session = doc("sessions", self.sid)
        assert session["revoked_at"] is None, session
        assert session["counter"] in (self.counter, self.counter + 1), session
        if answers["rotate the refresh cookie"].status_code == 200:
            assert session["counter"] == self.counter + 1

    def retry_succeeds(self, answers: dict[str, httpx.Response]) -> None:
        """The same requests again, now that Firestore is back."""
        calls = self.calls()
        retried = {what: until_answered(calls[what], timeout=15) for what, r in answers.items() if r.status_code == 503}
        if "create a project" in retried:
            assert retried["create a project"].status_code == 201, retried["create a project"].text
        if "allocate a version" in retried:
            r = retried["allocate a version"]
            assert r.status_code == 201, r.text
            assert (
                r.json()["version"] == max(self.versions())
                and self.versions()[r.json()["version"]]["status"] == "pending"
            )
        if "rotate the refresh cookie" in retried:
            r = retried["rotate the refresh cookie"]
            assert r.status_code == 200 and r.json()["access_token"], r.text
        if "apply a promo code" in retried:
            r = retried["apply a promo code"]
            if r.status_code == 409:  # the change had landed although the first answer was 503
                assert r.json()["type"].endswith("promo-already-used"), r.text
            else:
                assert r.status_code == 200, r.text
        assert len(self.redemptions()) == doc("promo_codes", self.code)["redemptions"] == 1
        assert (entitlements.get(self.owner.uid) or {}).get("trial_until")


@pytest.mark.parametrize(
    "pause_after_s", [None, 0.02, 0.06], ids=["paused-before-the-requests", "paused-20ms-in", "paused-60ms-in"]
)
def test_mutations_during_a_firestore_pause_are_whole_or_nothing_then_succeed(
    stack: Stack, member, pause_after_s: float | None
) -> None:
    m = Mutations(member)
    calls = m.calls()
    answers: dict[str, tuple[httpx.Response, float]] = {}
    with ThreadPoolExecutor(len(calls)) as pool:
        if pause_after_s is None:
            with paused(stack, "firestore"):
                futures = {what: pool.submit(timed, call) for what, call in calls.items()}
                answers = {what: f.result() for what, f in futures.items()}
        else:
            futures = {what: pool.submit(timed, call) for what, call in calls.items()}
            time.sleep(pause_after_s)  # some requests are mid-way through their writes now
            with paused(stack, "firestore"):
                answers = {what: f.result() for what, f in futures.items()}
    for what, (r, elapsed) in answers.items():
        if r.status_code == 503:
            assert_unavailable(r, elapsed, what)
        else:
            assert r.status_code in (200, 201), f"{what}: {r.status_code} {r.text[:300]}"
    if pause_after_s is None:
        assert all(r.status_code == 503 for r, _ in answers.values()), {
            w: r.status_code for w, (r, _) in answers.items()
        }
    m.check_whole_or_nothing({what: r for what, (r, _) in answers.items()})
    m.retry_succeeds({what: r for what, (r, _) in answers.items()})


# --- uploads: Firestore, the push target (the recorder function) or Pub/Sub paused --------------------

WEIGHTS = bytes(range(256)) * 8


def _signed_weights(b: Browser) -> tuple[str, dict[str, Any]]:
    p = b.request("POST", "/projects", json_body={"name": "uploads"}).json()
    model = b.request("POST", "/models", json_body={"project_id": p["id"], "name": "m"}).json()
    assert b.request("POST", f"/models/{model['id']}/versions").status_code == 201
    r = b.request(
        "POST",
        "/signed/upload",
        json_body={"kind": "weights", "model_id": model["id"], "version": 1, "size": len(WEIGHTS)},
    )
    assert r.status_code == 200, r.text
    return model["id"], r.json()


def _assert_recorded_once(b: Browser, model_id: str, name: str) -> None:
    assert wait(lambda: recorder.usage_of(b.uid) > 0, timeout=90), "the upload was never recorded"
    settle = time.monotonic() + 5  # a redelivery still in flight would land here
    while time.monotonic() < settle:
        assert recorder.usage_of(b.uid) == len(WEIGHTS)
        time.sleep(0.5)
    arts = docs_where("artifacts", "object", name)
    assert len(arts) == 1 and arts[0]["bucket"] == BUCKET and arts[0]["size"] == len(WEIGHTS), arts
    version = b.request("GET", f"/models/{model_id}").json()["versions"][0]
    assert version["size_bytes"] == len(WEIGHTS) and version["status"] == "pending"  # weights only, no model.json


@pytest.mark.parametrize("part", ["fn:on_object_finalized", "pubsub"])
def test_an_upload_while_the_event_path_is_paused_is_recorded_once(stack: Stack, member, part: str) -> None:
    b = pro(member())
    model_id, signed = _signed_weights(b)
    with paused(stack, part):
        r = httpx.put(signed["url"], content=WEIGHTS, headers=signed["headers"], timeout=20)
        assert r.status_code == 200, r.text  # the bucket takes the file; its event waits
        time.sleep(6)
        assert recorder.usage_of(b.uid) == 0 and docs_where("artifacts", "object", signed["object"]) == []
    _assert_recorded_once(b, model_id, signed["object"])


def test_an_upload_recorded_during_a_firestore_pause_lands_once(stack: Stack, member) -> None:
    """The recorder's delivery fails on the deadline (or waits) while Firestore is paused; Pub/Sub
    redelivers and the file is recorded exactly once, its bytes counted once."""
    b = pro(member())
    model_id, signed = _signed_weights(b)
    with paused(stack, "firestore"):
        assert httpx.put(signed["url"], content=WEIGHTS, headers=signed["headers"], timeout=20).status_code == 200
        time.sleep(clients.deadline() + 1)  # at least one delivery runs into the deadline
    _assert_recorded_once(b, model_id, signed["object"])


# --- PayPal ------------------------------------------------------------------------------------------


def _billing_state(uid: str) -> dict[str, Any]:
    return {"subscriptions": docs_where(subscriptions.SUBSCRIPTIONS, "uid", uid), "entitlement": entitlements.get(uid)}


def test_paypal_paused_during_subscribe_sync_and_cancel_answers_503_and_writes_nothing(
    stack: Stack, member, paypal: httpx.Client
) -> None:
    newcomer, returning, subscriber = member(), member(), member()
    assert returning.request("POST", "/billing/paypal/subscribe").status_code == 200  # pending approval
    subscribe(subscriber, paypal)  # active
    calls = {
        "subscribe": (newcomer, lambda: newcomer.request("POST", "/billing/paypal/subscribe")),
        "sync": (returning, lambda: returning.request("POST", "/billing/sync", json_body={})),
        "cancel": (subscriber, lambda: subscriber.request("POST", "/billing/cancel", json_body={})),
    }
    before = {what: _billing_state(b.uid) for what, (b, _) in calls.items()}
    with paused(stack, "paypal"), ThreadPoolExecutor(len(calls)) as pool:
        answers = dict(zip(calls, pool.map(lambda item: timed(item[1]), calls.values()), strict=True))
        for what, (r, elapsed) in answers.items():
            assert_unavailable(r, elapsed, what)
        # still paused: nothing was stored (no mapping, no entitlement change)
        assert {what: _billing_state(b.uid) for what, (b, _) in calls.items()} == before

    r = until_answered(calls["subscribe"][1])
    assert r.status_code == 200, r.text
    assert [d["id"] for d in docs_where(subscriptions.SUBSCRIPTIONS, "uid", newcomer.uid)] == [
        r.json()["subscription_id"]
    ]
    r = until_answered(calls["sync"][1])
    assert r.status_code == 200 and r.json()["status"] == "none", r.text  # still awaiting approval
    r = until_answered(calls["cancel"][1])
    # 409 when PayPal, resumed, ran the cancel it had received and its webhook got here first
    assert r.status_code == 200 or (r.status_code == 409 and r.json()["type"].endswith("no-subscription")), r.text
    assert wait(lambda: subscription_status(subscriber)["status"] == "canceled"), subscription_status(subscriber)
    assert subscription_status(subscriber)["plan"] == "pro"  # paid through the period


def test_a_webhook_during_a_firestore_pause_answers_5xx_and_its_replay_is_processed_once(
    stack: Stack, member, paypal: httpx.Client
) -> None:
    b = member()
    sub_id = subscribe(b, paypal)
    assert (
        paypal.post(
            f"/_standin/subscriptions/{sub_id}/simulate", json={"event": "cancelled", "deliver": False}
        ).status_code
        == 200
    )
    ev = event("BILLING.SUBSCRIPTION.CANCELLED", sub_id)
    body, headers = signed_webhook(stack, ev)
    # Hold the delivery at PayPal's GET, after its claim is stored, and pause Firestore there.
    assert (
        paypal.post(
            "/_standin/faults",
            json={"delay_s": 1.5, "count": 1, "method": "GET", "path_prefix": f"/v1/billing/subscriptions/{sub_id}"},
        ).status_code
        == 201
    )
    answer: dict[str, Any] = {}

    def deliver() -> None:
        answer["r"] = httpx.post(
            f"{stack.gateway_url}/payments/paypal/webhook", content=body, headers=headers, timeout=60
        )
        answer["at"] = time.monotonic()

    sender = threading.Thread(target=deliver)
    sender.start()
    assert wait(lambda: event_marker(ev["id"]), timeout=5, interval=0.02), "the delivery never claimed the event"
    time.sleep(1.0)
    with paused(stack, "firestore") as since:
        sender.join(30)
        r = answer["r"]
        assert r.status_code >= 500 and r.headers["content-type"] == PROBLEM_JSON, r.text  # PayPal retries
        assert answer["at"] - since < WITHIN_S, answer["at"] - since
    marker = event_marker(ev["id"])
    assert marker["state"] in ("processing", "failed") and marker["attempts"] == 1, marker
    assert subscription_status(b)["status"] == "active" and not mails_to(b.email, "subscription_canceled")

    if marker["state"] == "processing":
        # The failed delivery could not release its claim (Firestore was paused): a replay within the
        # claim's lease is told to come back, and changes nothing ...
        r = httpx.post(f"{stack.gateway_url}/payments/paypal/webhook", content=body, headers=headers, timeout=30)
        assert r.status_code == 409 and r.json()["type"].endswith("event-in-progress"), r.text
        assert subscription_status(b)["status"] == "active"
        # ... and once the lease has run out (moved here rather than waited for), a replay takes over.
        clients.firestore().collection(subscriptions.EVENTS).document(ev["id"]).update(
            {"expires_at": clock.now() - timedelta(seconds=1)}
        )
    r = httpx.post(f"{stack.gateway_url}/payments/paypal/webhook", content=body, headers=headers, timeout=30)
    assert r.status_code == 200 and r.json()["outcome"] == "applied:canceled", r.text
    again = httpx.post(f"{stack.gateway_url}/payments/paypal/webhook", content=body, headers=headers, timeout=30)
    assert again.status_code == 200 and again.json()["outcome"] == "duplicate", again.text
    marker = event_marker(ev["id"])
    assert marker["state"] == "done" and marker["attempts"] == 2, marker
    assert subscription_status(b)["status"] == "canceled"
    assert len(mails_to(b.email, "subscription_canceled")) == 1
