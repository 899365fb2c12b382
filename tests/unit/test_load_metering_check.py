"""`make load`'s metering check (tests/load/predictions.py) judged on made-up counts: what it passes,
notes and fails, and the last second it allows while the predict function still runs."""

from __future__ import annotations

from tests.load import predictions

FLUSH_S = 1.0


def calls(*made: tuple[str, str, int, int, float, float]) -> dict:
    """(uid, deployment, instances, status, start, end) per call, as the locust users note them."""
    out = predictions.new_calls()
    for uid, dep, n, status, start, end in made:
        predictions.note_call(out, uid, dep, n, status, start)
        if status == 200:
            out["ended"][-1][1] = end
    return out


RUN = calls(
    ("alice", "d1", 100, 200, 10.0, 10.2),
    ("alice", "d2", 1, 200, 20.0, 20.1),
    ("bob", "d3", 1, 200, 29.5, 29.9),  # ended within a second of the last start (30.0)
    ("bob", "d3", 100, 200, 30.0, 30.3),
    ("bob", "d3", 1, 422, 31.0, 31.1),  # refused: counts nothing
)


def judge(before: dict, after: dict) -> tuple[bool, list[str]]:
    lines: list[str] = []
    return predictions.check_metering(RUN, before, after, FLUSH_S, echo=lines.append), lines


EXACT = {"alice": (101, {"d1": 100, "d2": 1}), "bob": (101, {"d3": 101})}


def test_the_last_second_is_what_ended_after_the_last_start_less_a_second() -> None:
    assert predictions.last_second(RUN["ended"], FLUSH_S) == 101
    assert predictions.last_second([], FLUSH_S) == 0


def test_exact_counts_pass_both_lines() -> None:
    ok, lines = judge(EXACT, EXACT)
    assert ok
    assert [ln.split(" ", 1)[0] for ln in lines] == ["PASS", "PASS"]
    assert "202 counted" in lines[1] and "202 instances answered 200" in lines[1]


def test_the_last_seconds_calls_may_be_missing_while_the_function_runs() -> None:
    ok, lines = judge({"alice": (101, {"d1": 100, "d2": 1}), "bob": (0, {})}, EXACT)
    assert ok and lines[0].startswith("PASS"), lines


def test_more_missing_while_it_runs_is_a_note_and_the_exit_decides() -> None:
    run = calls(("alice", "d1", 100, 200, 10.0, 10.2), ("bob", "d3", 1, 200, 30.0, 30.1))  # last second: 1
    short = {"alice": (0, {}), "bob": (1, {"d3": 1})}
    exact = {"alice": (100, {"d1": 100}), "bob": (1, {"d3": 1})}
    lines: list[str] = []
    assert predictions.check_metering(run, short, exact, FLUSH_S, echo=lines.append), lines
    assert lines[0].startswith("NOTE") and any("deployment d1: 0 counted, 100 answered" in ln for ln in lines)
    lines.clear()
    assert not predictions.check_metering(run, short, short, FLUSH_S, echo=lines.append)
    assert any(ln.startswith("FAIL predictions metered after") for ln in lines), lines


def test_one_count_too_many_fails_both_lines_naming_owner_and_deployment() -> None:
    over = {"alice": (102, {"d1": 101, "d2": 1}), "bob": (101, {"d3": 101})}
    ok, lines = judge(over, over)
    assert not ok
    assert [ln.split(" ", 1)[0] for ln in lines if not ln.startswith(" ")] == ["FAIL", "FAIL"], lines
    assert any("owner alice: 102 counted, 101 answered" in ln for ln in lines)
    assert any("deployment d1: 101 counted, 100 answered" in ln for ln in lines)


def test_a_count_on_a_deployment_never_called_fails() -> None:
    stray = {"alice": (101, {"d1": 100, "d2": 1}), "bob": (102, {"d3": 101, "d9": 1})}
    ok, lines = judge(EXACT, stray)
    assert not ok and any("deployment d9 (never called): 1 counted" in ln for ln in lines), lines


def test_calls_without_an_answer_may_or_may_not_have_been_counted() -> None:
    run = calls(("carol", "d4", 100, 200, 1.0, 1.1), ("carol", "d4", 100, 0, 2.0, 0.0), ("carol", "d4", 1, 503, 3, 0))
    for counted in (100, 150, 201):
        lines: list[str] = []
        found = {"carol": (counted, {"d4": counted})}
        assert predictions.check_metering(run, found, found, FLUSH_S, echo=lines.append), lines
        assert "+ up to 101 of calls with no answer or a 5xx" in lines[1]
    lines = []
    found = {"carol": (202, {"d4": 202})}
    assert not predictions.check_metering(run, found, found, FLUSH_S, echo=lines.append)
