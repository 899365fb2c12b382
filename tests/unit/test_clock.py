"""The one clock: aware UTC, moved in-process by travel()."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from mllab.platform import clock

MOMENT = datetime(2031, 5, 17, 8, 30, 15, tzinfo=UTC)


def _real_now() -> datetime:
    return datetime.now(UTC)


def test_now_is_aware_utc_and_close_to_the_real_time() -> None:
    now = clock.now()
    assert now.tzinfo is not None and now.utcoffset() == timedelta(0)
    assert abs(now - _real_now()) < timedelta(minutes=1)


def test_travel_to_with_freeze_stops_time_there() -> None:
    with clock.travel(to=MOMENT, freeze=True):
        first = clock.now()
        second = clock.now()
        assert first == second == MOMENT
        assert clock.timestamp() == int(MOMENT.timestamp())
        assert clock.rfc3339() == "2031-05-17T08:30:15Z"


def test_travel_to_without_freeze_keeps_time_running_from_there() -> None:
    with clock.travel(to=MOMENT):
        assert MOMENT <= clock.now() < MOMENT + timedelta(minutes=1)


def test_travel_by_shifts_time() -> None:
    with clock.travel(by=timedelta(days=3)):
        shifted = clock.now() - _real_now()
        assert timedelta(days=3) - timedelta(minutes=1) < shifted <= timedelta(days=3)
    with clock.travel(by=-timedelta(hours=2)):
        shifted = _real_now() - clock.now()
        assert timedelta(hours=2) <= shifted < timedelta(hours=2, minutes=1)


def test_travel_by_from_a_frozen_moment_is_relative_to_it() -> None:
    with clock.travel(to=MOMENT, freeze=True):
        with clock.travel(by=timedelta(minutes=11), freeze=True):
            assert clock.now() == MOMENT + timedelta(minutes=11)
        assert clock.now() == MOMENT


def test_time_is_restored_after_the_block() -> None:
    with clock.travel(to=MOMENT, freeze=True):
        pass
    assert abs(clock.now() - _real_now()) < timedelta(minutes=1)
    with clock.travel(by=timedelta(days=400)):
        pass
    assert abs(clock.now() - _real_now()) < timedelta(minutes=1)


def test_time_is_restored_when_the_block_raises() -> None:
    with pytest.raises(RuntimeError, match="inside"), clock.travel(to=MOMENT, freeze=True):
        raise RuntimeError("inside")
    assert abs(clock.now() - _real_now()) < timedelta(minutes=1)


def test_naive_datetime_is_refused_and_changes_nothing() -> None:
    with pytest.raises(ValueError, match="aware"), clock.travel(to=datetime(2031, 1, 1), freeze=True):
        pass  # pragma: no cover - never entered
    assert abs(clock.now() - _real_now()) < timedelta(minutes=1)


def test_rfc3339_converts_other_offsets_to_utc() -> None:
    plus_two = MOMENT.astimezone(timezone(timedelta(hours=2)))
    assert clock.rfc3339(plus_two) == "2031-05-17T08:30:15Z"
