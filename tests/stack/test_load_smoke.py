"""`make load`'s code, kept from rotting: the same locustfile and driver, 10 users for about 15 s
against the test stack (half of them calling deployments with API keys, 1 and 100 instances a call),
no failures, Firestore matching what the users did, and the predictions metered matching the calls
made (and each check noticing when it does not). No timing assertions: the numbers are `make load`'s
business."""

from __future__ import annotations

import pytest

from tests.load import predictions
from tests.load import run as load

pytestmark = pytest.mark.stack

USERS = 10
SECONDS = 15


PREDICT_WEIGHT = 9  # against the lab users' 9: 5 of the 10 users predict, so both call sizes surely occur


def test_load_smoke(stack, monkeypatch) -> None:
    from google.cloud import firestore

    from mllab.files import recorder
    from mllab.platform import clients
    from mllab.serving import metering

    monkeypatch.setenv("MLLAB_LOAD_PREDICT_WEIGHT", str(PREDICT_WEIGHT))  # read by the driver's locustfile
    predict_users = USERS * PREDICT_WEIGHT // (PREDICT_WEIGHT + predictions.LAB_WEIGHT)
    owners = predictions.owners_needed(USERS, PREDICT_WEIGHT, predictions.LAB_WEIGHT)
    accounts = load.prepare_users(USERS)
    predictors = load.prepare_predictors(load.prepare_users(owners))
    setup_objects = load.artifacts_recorded()
    months = [metering.month_of()]
    warm_calls = predictions.warm_up(stack.gateway_url, predictors["owners"][0], predictors["rows"], rounds=1)
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
        predictors=predictors,
        echo=progress.append,
    )
    totals = result["totals"]["types"]
    assert totals["Aggregated"]["requests"] > 0, result["log_tail"]
    assert totals["Aggregated"]["failures"] == 0, result["totals"]["errors"]
    assert result["max_users_reached"] == USERS
    # every lab user signed in once and went on to the mix; the others called deployments with both sizes
    lab_users = USERS - predict_users
    assert totals["POST /auth/login"]["requests"] == lab_users
    assert totals["GET /me"]["requests"] > lab_users
    assert totals["POST /predict/{id} (1 instance)"]["requests"] > 0, totals
    assert totals["POST /predict/{id} (100 instances)"]["requests"] > 0, totals
    assert progress and progress[0].startswith("load: step  1"), progress

    uploads = result["uploads"]
    expected = sum(len(r["objects"]) for r in uploads.values())
    assert expected > 0, "no virtual user saved a model in the smoke run"
    assert all(not r["uncertain"] and not r["sign_failed"] for r in uploads.values())
    recorded, _ = load.wait_for_events(setup_objects + expected, timeout=90)
    assert recorded == setup_objects + expected

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

    # The metering check: the owners' shards against the predict calls made (the warm-up's too),
    # while the predict function ran and after it exited.
    calls = result["predictions"]
    predictions.merge_calls(calls, warm_calls)
    made = sum(c["instances"] for per in calls["by_owner"].values() for c in per.values())
    assert made > 0
    assert all(not c["uncertain_calls"] for per in calls["by_owner"].values() for c in per.values())
    lines.clear()
    assert load.check_metering(stack, calls, months, echo=lines.append), "\n".join(lines)
    assert [ln.split(" ", 1)[0] for ln in lines] == ["PASS", "PASS"], lines
    assert f"{made} counted" in lines[1] and f"{made} instances answered 200" in lines[1], lines

    # Not vacuous: one prediction too many on one deployment is a FAIL naming it and its owner.
    uid = next(iter(calls["by_owner"]))
    dep = next(iter(calls["by_owner"][uid]))
    metering.record(uid, dep, 1)
    metering.flush()
    lines.clear()
    assert not load.check_metering(stack, calls, months, echo=lines.append)
    assert any(ln.startswith("FAIL predictions metered after the predict function exited") for ln in lines), lines
    assert any(dep in ln for ln in lines) and any(uid in ln for ln in lines), lines
