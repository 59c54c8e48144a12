"""Our send rates as moving windows: at most the rate in any minute, at most the burst at once."""

from __future__ import annotations

import pytest

from linkdesk.services.ratelimit import Limit, RateLimiter, RequestBudget
from tests.unit.conftest import rate_windows_follow


class FakeTime:
    def __init__(self) -> None:
        self.now = 1e9
        self.slept: list[float] = []

    def wall(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


@pytest.fixture
def t(monkeypatch: pytest.MonkeyPatch) -> FakeTime:
    fake = FakeTime()
    rate_windows_follow(monkeypatch, fake.wall)
    return fake


def limiter_on(t: FakeTime, per_minute: int, burst: int | None = None) -> RateLimiter:
    return RateLimiter(per_minute, burst=burst, wall=t.wall, sleep=t.sleep)


@pytest.mark.parametrize(
    ("per_minute", "burst", "calls", "expected_waits"),
    [
        (60, 3, 3, []),  # within the burst: no wait
        (60, 3, 5, [3.0]),  # then the burst's window (3 s at one a second) empties
        (120, 1, 4, [1.0]),  # two a second (whole seconds are the windows' unit)
        (6, 1, 3, [10.0, 10.0]),  # six a minute, one at a time: one every ten seconds
        (600, None, 600, []),
    ],
)
def test_waits(t, per_minute, burst, calls, expected_waits):
    limiter = limiter_on(t, per_minute, burst)
    for _ in range(calls):
        limiter.acquire()
    assert t.slept == pytest.approx(expected_waits, abs=0.02)


def test_a_quiet_spell_lets_a_whole_burst_through_again(t):
    limiter = limiter_on(t, 60, burst=2)
    limiter.acquire()
    limiter.acquire()
    t.now += 10
    for _ in range(2):
        limiter.acquire()
    assert t.slept == []
    limiter.acquire()
    assert t.slept == pytest.approx([2.0], abs=0.02)


@pytest.mark.parametrize(("per_minute", "burst"), [(30, None), (30, 1), (45, 4), (7, 3)])
def test_no_sixty_second_window_holds_more_than_the_rate(t, per_minute, burst):
    limiter = limiter_on(t, per_minute, burst)
    stamps = []
    for _ in range(200):
        limiter.acquire()
        stamps.append(t.now)
    for i, start in enumerate(stamps):
        assert sum(1 for s in stamps[i:] if s < start + 60) <= per_minute
    # And it is not slower than the rate either: 200 calls in about 200 / rate minutes.
    assert stamps[-1] - stamps[0] <= (200 / per_minute) * 60 + 61


def test_rate_and_burst_must_be_positive():
    with pytest.raises(ValueError):
        RateLimiter(0)
    with pytest.raises(ValueError):
        RateLimiter(10, burst=0)


def test_a_call_exactly_a_window_old_still_counts_and_a_moment_later_does_not(t):
    # The library counts a call of exactly the window's age as gone when testing and as there
    # when taking; the budget must neither take a second slot then nor refuse one a moment later.
    budget = RequestBudget({"list": Limit(per_app=1, window=60)}, wall=t.wall)
    assert budget.try_acquire("list") == 0
    t.now += 60
    wait = budget.try_acquire("list")
    assert 0 < wait <= 0.01
    assert budget.used("list") <= 1
    t.now += wait
    assert budget.try_acquire("list") == 0
