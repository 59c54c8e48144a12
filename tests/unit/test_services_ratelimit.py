"""The sync's token bucket: bursts up to capacity, then spaced at the configured rate."""

from __future__ import annotations

import pytest

from linkdesk.services.ratelimit import RateLimiter


class FakeTime:
    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


@pytest.mark.parametrize(
    ("per_minute", "burst", "calls", "expected_waits"),
    [
        (60, 3, 3, []),  # within the burst: no wait
        (60, 3, 5, [1.0, 1.0]),  # then one per second
        (120, 1, 4, [0.5, 0.5, 0.5]),
        (600, 600, 600, []),
    ],
)
def test_waits(per_minute, burst, calls, expected_waits):
    t = FakeTime()
    limiter = RateLimiter(per_minute, burst=burst, monotonic=t.monotonic, sleep=t.sleep)
    for _ in range(calls):
        limiter.acquire()
    assert t.slept == pytest.approx(expected_waits)


def test_tokens_refill_over_time():
    t = FakeTime()
    limiter = RateLimiter(60, burst=2, monotonic=t.monotonic, sleep=t.sleep)
    limiter.acquire()
    limiter.acquire()
    t.now += 10  # refills to capacity, not beyond
    for _ in range(2):
        limiter.acquire()
    assert t.slept == []
    limiter.acquire()
    assert t.slept == pytest.approx([1.0])


def test_no_sixty_second_window_exceeds_twice_the_rate():
    t = FakeTime()
    limiter = RateLimiter(30, monotonic=t.monotonic, sleep=t.sleep)
    stamps = []
    for _ in range(200):
        limiter.acquire()
        stamps.append(t.now)
    for start in stamps:
        in_window = [s for s in stamps if start <= s < start + 60]
        assert len(in_window) <= 60


def test_rate_must_be_positive():
    with pytest.raises(ValueError):
        RateLimiter(0)
