"""A paused dependency (SIGSTOP, not a kill) gives a prompt 503 problem, and recovery after SIGCONT."""

from __future__ import annotations

import os
import signal
import time
from contextlib import contextmanager

import httpx

from mllab import sessions, tokens
from mllab_dev.stack import Stack


@contextmanager
def paused(stack: Stack, name: str):
    child = next(c for c in stack.children if c.name == name)
    os.killpg(child.proc.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.killpg(child.proc.pid, signal.SIGCONT)


def test_firestore_paused_answers_503_quickly_then_recovers(stack: Stack, new_user) -> None:
    user = new_user()
    session, _ = sessions.create(user["uid"], "password", user_agent="fault", ip="127.0.0.1")
    headers = {"Authorization": f"Bearer {tokens.issue_access_token(user['uid'], session.id).token}"}
    with httpx.Client(base_url=stack.gateway_url, timeout=60) as client:
        assert client.get("/me", headers=headers).status_code == 200
        with paused(stack, "firestore"):
            started = time.monotonic()
            r = client.get("/me", headers=headers)
            elapsed = time.monotonic() - started
        assert r.status_code == 503, r.text
        assert r.headers["content-type"] == "application/problem+json" and r.headers["retry-after"]
        assert elapsed < 20, f"took {elapsed:.1f}s"  # bounded by the deadline (10 s), not the retry policy
        deadline = time.monotonic() + 30
        while (status := client.get("/me", headers=headers).status_code) != 200 and time.monotonic() < deadline:
            time.sleep(0.5)
        assert status == 200


def test_event_during_a_firestore_outage_is_not_lost_and_lands_once(stack: Stack, records) -> None:
    """An upload while Firestore is paused: the delivery either fails (and Pub/Sub redelivers) or
    blocks until Firestore returns; either way the file is recorded exactly once, usage counted once.
    (A transaction's own begin/commit RPCs still use the client's default deadline; see the notes.)"""
    from mllab import clients, objects, recorder, storage
    from mllab_dev.stack import BUCKET

    ids = records()
    name = str(objects.model_file(ids["uid"], ids["project_id"], ids["model_id"], 1, "weights"))
    data = b"\x00" * 1234
    with paused(stack, "firestore"):
        signed = storage.signed_upload_url(name, "application/octet-stream", len(data))
        assert httpx.put(signed.url, content=data, headers=signed.headers, timeout=20).status_code == 200
        time.sleep(12)  # at least one delivery fails on the RPC deadline while paused
    deadline = time.monotonic() + 60
    while recorder.usage_of(ids["uid"]) == 0 and time.monotonic() < deadline:
        time.sleep(0.5)
    assert recorder.usage_of(ids["uid"]) == len(data)
    arts = [s.to_dict() for s in clients.firestore().collection("artifacts").stream() if s.get("object") == name]
    assert len(arts) == 1 and arts[0]["bucket"] == BUCKET
