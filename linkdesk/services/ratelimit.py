"""A small thread-safe token bucket that keeps a sync pass inside MoneyKit's per-app limits."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

__all__ = ["RateLimiter"]


class RateLimiter:
    """Allows ``per_minute`` acquisitions per minute, with bursts of up to ``burst``.

    With ``burst == per_minute`` no 60-second window sees more than twice ``per_minute``, so
    ``per_minute`` is set to half of MoneyKit's limit (e.g. 600/min per app for accounts).
    """

    def __init__(
        self,
        per_minute: float,
        *,
        burst: float | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if per_minute <= 0:
            raise ValueError("per_minute must be positive")
        self._rate = per_minute / 60.0
        self._capacity = float(burst if burst is not None else per_minute)
        self._tokens = self._capacity
        self._monotonic = monotonic
        self._sleep = sleep
        self._updated = monotonic()
        self._lock = threading.Lock()

    def acquire(self) -> float:
        """Take one token, sleeping until one is available; returns the seconds waited."""
        with self._lock:
            now = self._monotonic()
            self._tokens = min(self._capacity, self._tokens + (now - self._updated) * self._rate)
            self._updated = now
            self._tokens -= 1.0
            # A negative balance is a queue: this caller waits until its token has accrued.
            wait = -self._tokens / self._rate if self._tokens < 0 else 0.0
        if wait > 0:
            self._sleep(wait)
        return wait
