"""tests/load/profile.py: reading py-spy's raw stacks into where a function's Python CPU went, and
finding the processes to sample."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from tests.load import profile

SITE = "/venv/lib/python3.12/site-packages"
RAW = "\n".join(
    [
        # outermost first; the count ends the line
        f"handle ({SITE}/gunicorn/workers/gthread.py:280);__call__ (/repo/shared/mllab/api/http.py:267);"
        f"me (/repo/shared/mllab/account.py:88);get_all ({SITE}/google/cloud/firestore_v1/client.py:263) 6",
        f"handle ({SITE}/gunicorn/workers/gthread.py:280);__call__ (/repo/shared/mllab/api/http.py:267);"
        f"check_live (/repo/shared/mllab/identity/sessions.py:390);_next ({SITE}/grpc/_channel.py:750) 3",
        f"handle ({SITE}/gunicorn/workers/gthread.py:280);parse ({SITE}/gunicorn/http/message.py:60) 1",
        "",
        "not a stack line",
    ]
)


def test_a_profile_gives_each_of_our_functions_its_inclusive_share_and_each_library_its_leaf_share() -> None:
    total, ours, libraries = profile.summarize(RAW)
    assert total == 10
    assert dict(ours) == pytest.approx(
        {"mllab.api.http.__call__": 0.9, "mllab.account.me": 0.6, "mllab.identity.sessions.check_live": 0.3}
    )
    assert dict(libraries) == pytest.approx({"google/cloud/firestore": 0.6, "grpc": 0.3, "gunicorn": 0.1})


def test_a_frame_counted_twice_in_one_stack_counts_once() -> None:
    recursive = "f (/r/shared/mllab/a.py:1);f (/r/shared/mllab/a.py:2);g (/r/shared/mllab/b.py:3) 4"
    total, ours, _ = profile.summarize(recursive)
    assert total == 4 and dict(ours) == {"mllab.a.f": 1.0, "mllab.b.g": 1.0}


def test_the_local_gateways_frames_are_ours_too() -> None:
    stack = f"handle ({SITE}/gunicorn/workers/gthread.py:280);proxy (/repo/infra/local/mllab_dev/gateway.py:9) 2"
    assert dict(profile.summarize(stack)[1]) == {"mllab_dev.gateway.proxy": 1.0}


def test_nothing_sampled_reads_as_no_samples() -> None:
    assert profile.summarize("") == (0, [], [])


def test_the_processes_sampled_are_the_workers_of_the_functions_and_the_gateway() -> None:
    def child(name: str, pid: int) -> SimpleNamespace:
        return SimpleNamespace(name=name, proc=SimpleNamespace(pid=pid))

    stack = SimpleNamespace(children=[child("fn:account", 100), child("gateway", 200), child("firestore", 300)])
    processes = [(100, 1, 100), (101, 100, 100), (200, 1, 200), (201, 200, 200), (301, 300, 300)]
    assert profile.workers(stack, lambda: processes) == {"fn:account": 101, "gateway": 201}
