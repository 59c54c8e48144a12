"""Results that every dashboard session shares, and that every process can share through the store.

Aggregates over the whole links table (verdict counts, the worker's queue) cost the same for each
session and change slowly. :class:`SharedResult` computes one once per ``max_age`` for every
session of the process instead of on every rerun of every session, which keeps a page run
independent of the table's size.

A value can also be *remembered* in the store (:class:`Remembered`). Then a process that has just
started serves the last value any process computed while it counts again in the background
(counting a million links takes seconds, reading one row a millisecond), and several dashboard
replicas count the table about once per ``max_age`` between them instead of once each.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any, Generic, Protocol, TypeGuard, TypeVar

_T = TypeVar("_T")

log = logging.getLogger(__name__)

# Background computations under way, so that whoever closes the store can let them finish first.
_running: set[threading.Thread] = set()
_running_lock = threading.Lock()

# A shared value older than its max_age, but not older than this many max_ages, is served as it
# is while one background thread computes the next one.
REFRESH_WINDOW = 10

# A count asked for by a known change (``adjust(..., recount=True)``, ``recount_soon``) starts at
# the earliest this many seconds after the last count began, by default: a stream of writes is
# followed by about one count a second, not one per write.
RECOUNT_SPACING = 1.0

# Set while someone waits for the background computations: those waiting out their spacing start.
_hurry = threading.Event()


class Remembered(Protocol[_T]):
    """Where a shared value outlives the process (a row of the store)."""

    def load(self) -> tuple[_T, float] | None:
        """The last value stored by any process and its age in seconds, or None."""
        ...

    def save(self, value: _T) -> None: ...


class SharedResult(Generic[_T]):
    """One result shared by every caller in the process; callers asking for ``max_age=0``
    always get (and store) a fresh value.

    With ``remembered``, a process without a value of its own takes the stored one when it is at
    most ``recall_max_age`` seconds old (serving it while a fresh one is computed in the
    background when it is older than the caller's ``max_age``), and before computing a new value
    it takes one that another process stored within ``max_age``. A value of its own is served
    while it recomputes for as long as a stored one would be, so that ``get`` makes a caller
    wait only when there is nothing recent enough to show.
    """

    def __init__(
        self,
        compute: Callable[[], _T],
        *,
        remembered: Remembered[_T] | None = None,
        recall_max_age: float = 0.0,
        recount_spacing: float = RECOUNT_SPACING,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        """``monotonic``: the clock ages are measured with (tests step one instead of sleeping);
        ``recount_spacing``: see :meth:`recount_soon`."""
        self._monotonic = monotonic
        self._recount_spacing = recount_spacing
        self._compute = compute
        self._remembered = remembered
        self._recall_max_age = recall_max_age
        self._lock = threading.Lock()
        self._computed = threading.Condition(self._lock)  # notified when a value is stored
        self._computing = threading.Lock()
        self._value: _T | None = None
        self._at = 0.0
        self._refreshing = False
        self._recount_after_refresh = False
        self._started = float("-inf")  # when the last computation began (self._monotonic)
        # Changes made known with adjust() while a computation is under way (None: none is).
        self._changes_during: list[Callable[[_T], _T]] | None = None
        # The value came from a computation that changes overlapped (see _next_value).
        self._in_doubt = False

    def _current(self) -> tuple[_T | None, float]:
        with self._lock:
            return self._value, self._monotonic() - self._at

    def _fresh(self, value: _T | None, age: float, max_age: float) -> TypeGuard[_T]:
        """Whether ``value`` may be served without computing a new one."""
        return value is not None and age <= max_age and not self._in_doubt

    def get_if_ready(self, max_age: float, *, wait: float = 0.0) -> _T | None:
        """Like :meth:`get`, but does not wait for a computation (beyond ``wait`` seconds, for a
        first value that takes no longer): without a value it returns None, and with one older
        than ``max_age`` it returns that one; either way a background computation of the next
        value is started."""
        value, age = self._current()
        if value is None:
            value, age = self._recall()
        if self._fresh(value, age, max_age):
            return value
        with self._lock:
            self._refresh_in_background(max_age)
            if value is None and wait > 0:
                self._computed.wait_for(lambda: self._value is not None, timeout=wait)
                value = self._value
        return value

    def get(self, max_age: float, *, serve_stale: bool = True) -> _T:
        """A value at most ``max_age`` seconds old. One older, but young enough (see
        ``REFRESH_WINDOW``), is served while a background thread computes the next, unless
        ``serve_stale`` is False (then the caller waits for the next)."""
        if max_age > 0:
            value, age = self._current()
            if value is None:
                value, age = self._recall()
            if self._fresh(value, age, max_age):
                return value
            if (
                serve_stale
                and value is not None
                and age <= max(max_age * REFRESH_WINDOW, self._recall_max_age)
            ):
                with self._lock:
                    self._refresh_in_background(max_age)
                return value
        # Several sessions arriving together wait for one computation instead of each running it.
        with self._computing:
            return self._next_value(max_age)

    def _next_value(self, max_age: float) -> _T:
        # Called holding self._computing.
        if max_age > 0 and not self._in_doubt:
            value, age = self._current()
            if self._fresh(value, age, max_age):
                return value  # computed while this caller waited for its turn
            value, age = self._recall()
            if self._fresh(value, age, max_age):
                return value  # another process computed it a moment ago
        with self._lock:
            self._changes_during = []
            self._started = self._monotonic()
        try:
            computed = self._compute()
        finally:
            with self._lock:
                changes, self._changes_during = self._changes_during or [], None
        for change in changes:
            computed = change(computed)
        # A change that committed before the computation read its row is counted by both; which
        # one it was cannot be known here. The value is served (a change that committed after
        # the read is in it only through the list), and recomputed on its next use, unless the
        # last value was in doubt too: under a steady stream of writes counting back to back
        # would never end, and the next scheduled count sets any error right.
        in_doubt = bool(changes) and not self._in_doubt
        value = self._store(computed, age=0.0)
        with self._lock:
            self._in_doubt = in_doubt
        self._share(value)
        return value

    def adjust(self, change: Callable[[_T], _T], *, recount: bool = False) -> None:
        """Apply a change the caller knows about (one link moved from one count to another) to
        the value served now and to the stored one, instead of waiting up to ``max_age`` for the
        next computation. A computation under way when the change is made gets it too: it most
        likely read the table before the change was written (if it read after, the next
        computation, ``max_age`` later, sets the count right).

        ``recount``: the value may lack changes that callers elsewhere (other processes) made
        since it was computed, and a change applied to it would then give a number that was never
        true (one link of one kind left, shown as none) until the next computation; so one
        follows soon (:meth:`recount_soon`), and the adjusted value is served meanwhile."""
        with self._lock:
            if self._changes_during is not None:
                self._changes_during.append(change)
            if self._value is None:
                return
            self._value = change(self._value)
            value = self._value
            if recount:
                self._recount_soon()
        self._share(value)

    def recount_soon(self) -> None:
        """What the value is computed from has changed: compute it again in the background,
        ``recount_spacing`` seconds after the last computation began at the earliest, so that
        the next caller gets the change without waiting for the value to age out. Until then the
        value is served as it is. Without a value and with none being computed, the next caller
        computes one anyway; a first computation under way is followed by another."""
        with self._lock:
            if self._value is None and self._changes_during is None:
                return
            if self._refreshing and self._changes_during is not None:
                # The computation under way may have read before the change: one more after it.
                self._recount_after_refresh = True
            self._recount_soon()

    def _recount_soon(self) -> None:
        # Called holding self._lock.
        wait = self._started + self._recount_spacing - self._monotonic()
        self._refresh_in_background(0.0, delay=min(max(wait, 0.0), self._recount_spacing))

    def _share(self, value: _T) -> None:
        if self._remembered is not None:
            try:
                self._remembered.save(value)
            except Exception:  # the value is good; only sharing it failed
                log.warning("could not store a shared result for other processes", exc_info=True)

    def _recall(self) -> tuple[_T | None, float]:
        """The stored value, kept in memory, when it is young enough to serve at all."""
        if self._remembered is None:
            return None, 0.0
        try:
            found = self._remembered.load()
        except Exception:  # counting again is always possible
            log.warning("could not read a stored shared result", exc_info=True)
            return None, 0.0
        if found is None or found[1] > self._recall_max_age:
            return None, 0.0
        value, age = found
        with self._lock:
            mine = self._value is not None and self._monotonic() - self._at <= age
        if not mine:
            self._store(value, age=max(age, 0.0))
        return self._current()

    def _store(self, value: _T, *, age: float) -> _T:
        with self._lock:
            self._value, self._at = value, self._monotonic() - age
            self._in_doubt = False
            self._computed.notify_all()
        return value

    def _refresh_in_background(self, max_age: float, *, delay: float = 0.0) -> None:
        # Called holding self._lock. A refresh already under way (or waiting out its delay)
        # serves this caller too.
        if not self._refreshing:
            self._refreshing = True
            thread = threading.Thread(
                target=self._refresh,
                args=(max_age, delay),
                name="linkdesk-shared-refresh",
                daemon=True,
            )
            with _running_lock:
                _running.add(thread)
            thread.start()

    def _refresh(self, max_age: float, delay: float) -> None:
        try:
            if delay > 0:
                _hurry.wait(delay)
            with self._computing:
                self._next_value(max_age)
        except Exception:  # a failed refresh leaves the last value served
            log.warning("could not refresh a shared result", exc_info=True)
        finally:
            with self._lock:
                self._refreshing = False
                if self._recount_after_refresh:
                    self._recount_after_refresh = False
                    self._recount_soon()
            with _running_lock:
                _running.discard(threading.current_thread())


class SharedResults:
    """A :class:`SharedResult` per key (a screen's choice of filters), created on first use; the
    ``kept`` most recently asked for are kept, so a few views in use at once are each computed
    once per ``max_age`` for every session."""

    def __init__(self, *, kept: int, monotonic: Callable[[], float] = time.monotonic) -> None:
        self._kept_at_most = kept
        self._monotonic = monotonic
        self._kept: OrderedDict[Hashable, SharedResult[Any]] = OrderedDict()
        self._lock = threading.Lock()

    def get(
        self,
        key: Hashable,
        compute: Callable[[], _T],
        max_age: float,
        *,
        serve_stale: bool = True,
    ) -> _T:
        """The value for ``key`` (see :meth:`SharedResult.get`); ``compute`` makes one."""
        value: _T = self._shared(key, compute).get(max_age, serve_stale=serve_stale)
        return value

    def _shared(self, key: Hashable, compute: Callable[[], _T]) -> SharedResult[_T]:
        with self._lock:
            shared = self._kept.get(key)
            if shared is None:
                shared = SharedResult(compute, monotonic=self._monotonic)
                self._kept[key] = shared
                while len(self._kept) > self._kept_at_most:
                    self._kept.popitem(last=False)
            self._kept.move_to_end(key)
        return shared

    def get_if_ready(
        self, key: Hashable, compute: Callable[[], _T], max_age: float, *, wait: float = 0.0
    ) -> _T | None:
        """The value for ``key`` without waiting for its first computation beyond ``wait``
        seconds (see :meth:`SharedResult.get_if_ready`): None until there is one."""
        shared = self._shared(key, compute)
        return shared.get_if_ready(max_age, wait=wait)

    def forget(self) -> None:
        """Drop every value: the next ``get`` of any key computes one (after a change the
        caller made itself and must see at once)."""
        with self._lock:
            self._kept.clear()


def wait_for_refreshes(timeout: float = 30.0) -> None:
    """Wait (up to ``timeout`` seconds in all) for the background computations under way: before
    the store they read is closed or emptied under them. Those waiting out their spacing start at
    once."""
    deadline = time.monotonic() + timeout
    _hurry.set()
    try:
        while time.monotonic() < deadline:
            # A refresh may start another as it ends (see SharedResult.recount_soon).
            with _running_lock:
                threads = list(_running)
            if not threads:
                return
            for thread in threads:
                thread.join(max(0.0, deadline - time.monotonic()))
    finally:
        _hurry.clear()
