"""MoneyKit's request limits and our own send rates, kept as moving windows by ``limits``.

The library (pinned in requirements.txt) keeps each window: at most N calls in any W seconds,
per key, in memory, forgetting old calls by itself. What is ours is how the windows are taken
together: a call to MoneyKit counts against its endpoint's app-wide window and, for a link, that
link's window, and must get a slot in both or in neither — the library tests and takes one key
at a time, so a lock here makes "test every window, then take every one" a single step (without
it a call could take the app's slot and then be refused for its link).

The library reads the wall clock (``time.time()``); so does this module, through ``wall``, which
must be the clock the library reads. Tests that step time point both at their clock
(``tests/unit/conftest.py``). Measured (``bench/sync_worker.py``, bench/RESULTS.md): the worker
keeps 95 % of MoneyKit's limit with no 429.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from limits import RateLimitItem, RateLimitItemPerSecond
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter

__all__ = ["Limit", "RateLimiter", "RequestBudget"]

# A window's slot frees the moment its oldest call is ``window`` seconds old; the library counts
# a call of exactly that age as still inside, so a wait is rounded up past that moment.
_PAST_THE_EDGE = 0.001


@dataclass(frozen=True, slots=True)
class Limit:
    """At most ``per_link`` calls per link and ``per_app`` calls overall in any ``window`` (s)."""

    per_app: int
    per_link: int | None = None
    window: int = 60


class _Windows:
    """Moving windows kept by the library, tested and taken together under one lock."""

    def __init__(self, wall: Callable[[], float]) -> None:
        self._limiter = MovingWindowRateLimiter(MemoryStorage())
        self._wall = wall
        self._lock = threading.Lock()

    def take(self, windows: Sequence[tuple[RateLimitItem, tuple[str, ...]]]) -> float:
        """A slot in every window (0.0), or none and the seconds until all have room."""
        with self._lock:
            wait = max((self._wait(item, key) for item, key in windows), default=0.0)
            if wait > 0:
                return wait
            for item, key in windows:
                if not self._limiter.hit(item, *key):
                    # Only at the window's very edge: the library's test counts a call exactly
                    # ``window`` old as gone, its hit as still there. Slots already taken stay
                    # taken (the budget errs on the safe side); the caller comes back a moment
                    # later, past the edge.
                    return _PAST_THE_EDGE
            return 0.0

    def _wait(self, item: RateLimitItem, key: tuple[str, ...]) -> float:
        if self._limiter.test(item, *key):
            return 0.0
        reset_at = self._limiter.get_window_stats(item, *key).reset_time
        return max(reset_at - self._wall(), 0.0) + _PAST_THE_EDGE

    def room(self, item: RateLimitItem, key: tuple[str, ...]) -> tuple[int, float]:
        with self._lock:
            stats = self._limiter.get_window_stats(item, *key)
            if stats.remaining > 0:
                return stats.remaining, 0.0
            return 0, max(stats.reset_time - self._wall(), 0.0) + _PAST_THE_EDGE

    def used(self, item: RateLimitItem, key: tuple[str, ...]) -> int:
        return item.amount - self._limiter.get_window_stats(item, *key).remaining


class RateLimiter:
    """Allows ``per_minute`` acquisitions in any minute, at most ``burst`` of them at once.

    Two moving windows: ``per_minute`` per 60 s, and — when ``burst`` is smaller — ``burst`` per
    the seconds those take at the full rate (e.g. 6 a minute, one at a time: one per 10 s).
    """

    def __init__(
        self,
        per_minute: int,
        *,
        burst: int | None = None,
        wall: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if per_minute <= 0:
            raise ValueError("per_minute must be positive")
        if burst is not None and burst <= 0:
            raise ValueError("burst must be positive")
        items: list[RateLimitItem] = [RateLimitItemPerSecond(per_minute, 60)]
        if burst is not None and burst < per_minute:
            # Whole seconds (the library's unit): the window is rounded down and holds the calls
            # the full rate allows in it, never fewer than ``burst``; the minute's window keeps
            # the total exact.
            seconds = max(1, math.floor(60 * burst / per_minute))
            items.append(RateLimitItemPerSecond(max(burst, per_minute * seconds // 60), seconds))
        self._windows = _Windows(wall)
        self._take = [(item, ("send",)) for item in items]
        self._sleep = sleep

    def acquire(self) -> float:
        """Take a slot, sleeping until one is free; returns the seconds waited."""
        waited = 0.0
        while (wait := self._windows.take(self._take)) > 0:
            self._sleep(wait)
            waited += wait
        return waited


class RequestBudget:
    """MoneyKit's per-link and per-app limits as moving windows, shared across threads.

    Unlike :class:`RateLimiter` it never sleeps: :meth:`try_acquire` either takes a slot in every
    window that applies and returns 0, or takes nothing and returns how many seconds until a slot
    frees up, so the caller can reschedule that one link instead of stalling the whole worker.
    No window of ``window`` seconds ever holds more than its limit's calls.
    """

    def __init__(
        self, limits: Mapping[str, Limit], *, wall: Callable[[], float] = time.time
    ) -> None:
        for name, limit in limits.items():
            if limit.per_app <= 0 or (limit.per_link is not None and limit.per_link <= 0):
                raise ValueError(f"limit {name!r} must be positive")
        self._limits = dict(limits)
        self._items = {
            name: (
                RateLimitItemPerSecond(limit.per_app, limit.window),
                RateLimitItemPerSecond(limit.per_link, limit.window) if limit.per_link else None,
            )
            for name, limit in limits.items()
        }
        self._windows = _Windows(wall)

    @classmethod
    def from_settings(
        cls, settings: Any, *, wall: Callable[[], float] = time.time
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
            wall=wall,
        )

    @property
    def limits(self) -> Mapping[str, Limit]:
        """The limit kept for each endpoint."""
        return dict(self._limits)

    def try_acquire(self, endpoint: str, link_id: str | None = None) -> float:
        """Take a slot for one call to ``endpoint`` (for ``link_id``); 0.0 or seconds to wait."""
        app, per_link = self._items[endpoint]
        windows: list[tuple[RateLimitItem, tuple[str, ...]]] = [(app, (endpoint,))]
        if per_link is not None and link_id is not None:
            windows.append((per_link, (endpoint, link_id)))
        return self._windows.take(windows)

    def room(self, endpoint: str) -> tuple[int, float]:
        """How many calls to ``endpoint`` the app-wide window allows now, and, when none, the
        seconds until one is allowed again (per-link windows are not looked at)."""
        return self._windows.room(self._items[endpoint][0], (endpoint,))

    def used(self, endpoint: str, link_id: str | None = None) -> int:
        """Calls counted in the current window (for tests and the status panel)."""
        app, per_link = self._items[endpoint]
        if link_id is None:
            return self._windows.used(app, (endpoint,))
        if per_link is None:
            raise ValueError(f"{endpoint!r} has no per-link limit")
        return self._windows.used(per_link, (endpoint, link_id))
