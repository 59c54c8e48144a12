"""MoneyKit's request limits, kept by the worker: a token bucket and exact sliding windows.

Why not the ``limits`` library (5.8.0, whose moving windows keyed per link would otherwise do):
its in-memory storage reads the wall clock itself (``time.time()``, eleven times in
``limits/storage/memory.py``) and expires entries from a ``threading.Timer`` of its own. The
windows here follow the worker's injected monotonic clock instead, which is what lets the
worker's tests step time rather than sleep through a minute, and keeps a wall-clock step (NTP)
from opening or closing a window. Each window holds at most its limit's calls; no more code.
Measured (``bench/sync_worker.py --budget limits``, bench/RESULTS.md): both keep the worker at
95 % of MoneyKit's limit; a ``try_acquire`` costs about 5 µs here and 40 µs with ``limits``.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["Limit", "RateLimiter", "RequestBudget"]


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


@dataclass(frozen=True, slots=True)
class Limit:
    """At most ``per_link`` calls per link and ``per_app`` calls overall in any ``window``."""

    per_app: int
    per_link: int | None = None
    window: float = 60.0


class RequestBudget:
    """MoneyKit's per-link and per-app limits as exact sliding windows, shared across threads.

    Unlike :class:`RateLimiter` it never sleeps: :meth:`try_acquire` either takes a slot in every
    window that applies and returns 0, or takes nothing and returns how many seconds until a slot
    frees up, so the caller can reschedule that one link instead of stalling the whole worker.
    A call is allowed at ``t`` only if fewer than ``limit`` calls happened in ``(t - window, t]``,
    so no window of that length ever holds more than ``limit`` calls.
    """

    def __init__(
        self,
        limits: Mapping[str, Limit],
        *,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        for name, limit in limits.items():
            if limit.per_app <= 0 or (limit.per_link is not None and limit.per_link <= 0):
                raise ValueError(f"limit {name!r} must be positive")
        self._limits = dict(limits)
        self._monotonic = monotonic
        self._calls: dict[tuple[str, str | None], deque[float]] = {}
        self._lock = threading.Lock()
        self._sweeps = 0

    @classmethod
    def from_settings(
        cls, settings: Any, *, monotonic: Callable[[], float] = time.monotonic
    ) -> RequestBudget:
        return cls(
            {
                "link": Limit(
                    settings.worker_link_reads_per_minute,
                    settings.worker_link_reads_per_link_per_minute,
                ),
                "accounts": Limit(
                    settings.worker_account_reads_per_minute,
                    settings.worker_account_reads_per_link_per_minute,
                ),
                "list": Limit(settings.worker_list_pages_per_minute),
            },
            monotonic=monotonic,
        )

    @property
    def limits(self) -> Mapping[str, Limit]:
        """The limit kept for each endpoint."""
        return dict(self._limits)

    def _window(self, key: tuple[str, str | None], now: float, span: float) -> deque[float]:
        calls = self._calls.setdefault(key, deque())
        while calls and calls[0] <= now - span:
            calls.popleft()
        return calls

    def try_acquire(self, endpoint: str, link_id: str | None = None) -> float:
        """Take a slot for one call to ``endpoint`` (for ``link_id``); 0.0 or seconds to wait."""
        limit = self._limits[endpoint]
        with self._lock:
            now = self._monotonic()
            checks: list[tuple[tuple[str, str | None], int]] = [((endpoint, None), limit.per_app)]
            if limit.per_link is not None and link_id is not None:
                checks.append(((endpoint, link_id), limit.per_link))
            wait = 0.0
            windows = []
            for key, allowed in checks:
                calls = self._window(key, now, limit.window)
                windows.append(calls)
                if len(calls) >= allowed:
                    # The slot frees when the call that fills the window leaves it.
                    wait = max(wait, calls[len(calls) - allowed] + limit.window - now)
            if wait > 0:
                return wait
            for calls in windows:
                calls.append(now)
            self._sweep(now)
            return 0.0

    def room(self, endpoint: str) -> tuple[int, float]:
        """How many calls to ``endpoint`` the app-wide window allows now, and, when none, the
        seconds until one is allowed again (per-link windows are not looked at)."""
        limit = self._limits[endpoint]
        with self._lock:
            now = self._monotonic()
            calls = self._window((endpoint, None), now, limit.window)
            free = limit.per_app - len(calls)
            if free > 0:
                return free, 0.0
            return 0, calls[len(calls) - limit.per_app] + limit.window - now

    def _sweep(self, now: float) -> None:
        # Per-link windows would otherwise pile up for every link ever read.
        self._sweeps += 1
        if self._sweeps % 1000:
            return
        for key in list(self._calls):
            span = self._limits[key[0]].window
            calls = self._calls[key]
            while calls and calls[0] <= now - span:
                calls.popleft()
            if not calls and key[1] is not None:
                del self._calls[key]

    def used(self, endpoint: str, link_id: str | None = None) -> int:
        """Calls counted in the current window (for tests and the status panel)."""
        with self._lock:
            span = self._limits[endpoint].window
            return len(self._window((endpoint, link_id), self._monotonic(), span))
