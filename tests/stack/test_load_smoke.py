"""`make load`'s code, kept from rotting: the same locustfile and driver, 10 users for about 15 s
against the test stack, no failures, and Firestore matching what the users did (and the check
noticing when it does not). No timing assertions: the numbers are `make load`'s business."""

from __future__ import annotations

import pytest

from tests.load import run as load

pytestmark = pytest.mark.stack

USERS = 10
SECONDS = 15


def test_load_smoke(stack) -> None:
    from google.cloud import firestore

    from mllab.files import recorder
    from mllab.platform import clients

    accounts = load.prepare_users(USERS)
    progress: list[str] = []
    result = load.run_driver(
        stack.gateway_url,
        accounts,
        schedule=[USERS],
        step_seconds=SECONDS,
        seconds=SECONDS,
        p95_ms=1e9,
        error_pct=100.0,
        wait="0.5,1.5",
        spawn_seconds=2,
        echo=progress.append,
    )
    totals = result["totals"]["types"]
    assert totals["Aggregated"]["requests"] > 0, result["log_tail"]
    assert totals["Aggregated"]["failures"] == 0, result["totals"]["errors"]
    assert result["max_users_reached"] == USERS
    # every user signed in once and went on to the mix
    assert totals["POST /auth/login"]["requests"] == USERS
    assert totals["GET /me"]["requests"] > USERS
    assert progress and progress[0].startswith("load: step  1"), progress

    uploads = result["uploads"]
    expected = sum(len(r["objects"]) for r in uploads.values())
    assert expected > 0, "no virtual user saved a model in the smoke run"
    assert all(not r["uncertain"] and not r["sign_failed"] for r in uploads.values())
    recorded, _ = load.wait_for_events(expected, timeout=90)
    assert recorded == expected

    lines: list[str] = []
    assert load.check_consistency(uploads, echo=lines.append), "\n".join(lines)
    assert len([ln for ln in lines if ln.startswith("PASS")]) == 4, lines

    # The check is not vacuous: one byte too many on one user's counter is a FAIL naming that user.
    uid = next(u for u, r in uploads.items() if r["objects"])
    clients.firestore().collection(recorder.USAGE).document(uid).set(
        {"storage_bytes": firestore.Increment(1)}, merge=True
    )
    lines.clear()
    assert not load.check_consistency(uploads, echo=lines.append)
    assert any(ln.startswith("FAIL each user's storage usage") for ln in lines), lines
    assert any(uid in ln for ln in lines), lines
