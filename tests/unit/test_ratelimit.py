"""The sliding estimate behind every failure budget: no double budget across a window boundary,
and a Retry-After after which the estimate really is back under the limit."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from mllab.platform.ratelimit import estimate, retry_after

W = 900


def test_a_full_previous_window_still_counts_just_after_the_boundary() -> None:
    assert estimate(10, 0, 1, W) >= 9.9
    assert estimate(10, 0, W / 2, W) == 5
    assert estimate(0, 3, 10, W) == 3


def test_half_way_through_the_next_window_half_the_budget_is_back() -> None:
    # 10 failures last window, limit 10: at 450 s in, 5 more still fit.
    assert estimate(10, 4, 450, W) < 10 <= estimate(10, 5, 450, W)


@given(previous=st.integers(0, 40), current=st.integers(0, 40), elapsed=st.floats(0, W - 1), limit=st.integers(1, 30))
def test_retry_after_is_positive_and_enough(previous: int, current: int, elapsed: float, limit: int) -> None:
    if estimate(previous, current, elapsed, W) < limit:
        return
    wait = retry_after(previous, current, elapsed, W, limit)
    assert wait >= 1
    later = elapsed + wait
    if later < W:
        assert estimate(previous, current, later, W) < limit
    else:  # the next window: this one's count is the previous one now
        assert estimate(current, 0, later - W, W) < limit


def test_the_per_account_delay_starts_at_the_budget_doubles_and_stays_short() -> None:
    from mllab.platform import config
    from mllab.platform.ratelimit import progressive_delay

    budget = config.RATE_LIMITS.login_account
    assert progressive_delay(budget - 1) == 0.0  # a few mistypes cost nothing
    delays = [progressive_delay(budget + n) for n in range(6)]
    assert delays[:4] == [0.25, 0.5, 1.0, 2.0]
    assert max(delays) == progressive_delay(10_000) == config.LOGIN_DELAY_MAX_S  # never a lockout
