"""SharedResult on its own: waiting (or not) for a first value, and a value stored by another
process (a dict stands in for the store's row)."""

from __future__ import annotations

import threading
from collections.abc import Callable

from linkdesk.store.shared import SharedResult, wait_for_refreshes


class Remembered:
    def __init__(self) -> None:
        self.row: tuple[int, float] | None = None
        self.saved: list[int] = []

    def load(self) -> tuple[int, float] | None:
        return self.row

    def save(self, value: int) -> None:
        self.saved.append(value)


def test_a_quick_first_value_is_waited_for_and_a_slow_one_is_not() -> None:
    quick = SharedResult(lambda: 7)
    assert quick.get_if_ready(30, wait=5) == 7

    release = threading.Event()

    def slow() -> int:
        release.wait(10)
        return 8

    shared = SharedResult(slow)
    assert shared.get_if_ready(30, wait=0.05) is None  # the caller goes on without it
    release.set()
    wait_for_refreshes(10)
    assert shared.get_if_ready(30) == 8  # computed in the background meanwhile


def test_a_stored_value_is_served_by_age_and_a_new_one_stored() -> None:
    computed: list[int] = []

    def compute() -> int:
        computed.append(len(computed) + 100)
        return computed[-1]

    remembered = Remembered()
    remembered.row = (1, 10.0)  # another process stored 1, ten seconds ago
    shared = SharedResult(compute, remembered=remembered, recall_max_age=60)
    assert shared.get(30) == 1 and computed == []  # young enough: no computation
    assert shared.get_if_ready(5) == 1  # older than 5 s: served while recomputed
    wait_for_refreshes(10)
    assert computed == [100] and remembered.saved == [100]
    assert shared.get(30) == 100

    too_old = SharedResult(compute, remembered=remembered, recall_max_age=5)
    assert too_old.get(30) == 101  # older than recall_max_age: counted, never shown


def test_a_failing_store_neither_fails_nor_blocks_the_value() -> None:
    class Broken(Remembered):
        def load(self) -> tuple[int, float] | None:
            raise OSError("database is locked")

        def save(self, value: int) -> None:
            raise OSError("database is locked")

    shared = SharedResult(lambda: 3, remembered=Broken(), recall_max_age=60)
    assert shared.get(30) == 3
    assert shared.get_if_ready(30) == 3


def test_a_known_change_is_served_at_once_and_stored() -> None:
    remembered = Remembered()
    shared = SharedResult(lambda: 10, remembered=remembered, recall_max_age=60)
    assert shared.get(30) == 10
    shared.adjust(lambda value: value + 1)
    assert shared.get(30) == 11  # no recount within max_age, the change is there
    assert remembered.saved[-1] == 11


def test_a_change_made_while_counting_is_kept_in_the_new_count() -> None:
    counting = threading.Event()
    release = threading.Event()

    def slow() -> int:
        counting.set()
        release.wait(10)
        return 20  # read before the change below was written

    shared = SharedResult(slow)
    thread = threading.Thread(target=shared.get, args=(0,))
    thread.start()
    assert counting.wait(10)
    shared.adjust(lambda value: value - 1)
    release.set()
    thread.join(10)
    assert shared.get(30) == 19


def test_a_change_before_any_value_waits_for_the_count() -> None:
    shared = SharedResult(lambda: 5)
    shared.adjust(lambda value: value + 100)  # nothing to change yet; the count will see it
    assert shared.get(30) == 5


def test_a_count_that_changes_overlapped_is_counted_again_once() -> None:
    # A change that committed just before the count read its row is in the count *and* in the
    # list of changes made meanwhile: the value is served, and its next use counts again.
    counts: list[int] = []
    counting = threading.Event()
    release = threading.Event()

    def compute() -> int:
        counts.append(20)
        counting.set()
        release.wait(10)
        return 20

    def count_with_a_change_meanwhile(count: Callable[[], object]) -> None:
        counting.clear()
        release.clear()
        thread = threading.Thread(target=count)
        thread.start()
        assert counting.wait(10)
        shared.adjust(lambda value: value + 1)
        release.set()
        thread.join(10)

    shared = SharedResult(compute)
    count_with_a_change_meanwhile(lambda: shared.get(0))
    release.set()
    assert shared.get(30) == 21  # served as adjusted, but in doubt: a recount starts
    wait_for_refreshes(10)
    assert len(counts) == 2 and shared.get(30) == 20  # what the table holds
    assert len(counts) == 2  # no longer in doubt: no further count within max_age

    count_with_a_change_meanwhile(lambda: shared.get(0))

    # The recount the doubt starts is overlapped too: two in doubt in a row, served as it is
    # (under a steady stream of writes, counting back to back would never end).
    def use_and_let_it_recount() -> None:
        shared.get(30)
        wait_for_refreshes(10)

    count_with_a_change_meanwhile(use_and_let_it_recount)
    assert len(counts) == 4
    assert shared.get(30) == 21 and len(counts) == 4  # the second change kept, no recount


def test_a_change_that_asks_for_it_is_followed_by_a_count_in_the_background() -> None:
    # The value may lack what others wrote since it was counted: moved from it alone, it would
    # give a number that was never true until the next count.
    table = [10]
    counts: list[int] = []

    def compute() -> int:
        counts.append(table[0])
        return table[0]

    now = [100.0]
    shared = SharedResult(compute, monotonic=lambda: now[0])
    assert shared.get(30) == 10
    table[0] = 15 - 1  # another process added 5, then this one took 1 away
    shared.adjust(lambda value: value - 1, recount=True)
    # Served at once as moved: the count waits out its spacing (the clock never moves here).
    assert shared.get(30) == 9 and counts == [10]
    wait_for_refreshes(10)  # which lets it start at once
    assert counts == [10, 14] and shared.get(30) == 14

    shared.adjust(lambda value: value + 1)  # a change that does not ask for a count
    wait_for_refreshes(10)
    assert counts == [10, 14] and shared.get(30) == 15


def test_a_change_during_a_background_count_is_followed_by_one_more() -> None:
    # The count under way may have read before the change: one more count follows it.
    table = [1]
    counts: list[int] = []
    counting = threading.Event()
    release = threading.Event()

    def compute() -> int:
        seen = table[0]
        counts.append(seen)
        if len(counts) == 2:  # the count the first change asked for
            counting.set()
            release.wait(10)
        return seen

    now = [100.0]
    shared = SharedResult(compute, monotonic=lambda: now[0])
    assert shared.get(30) == 1
    table[0] = 2
    now[0] += 5  # the spacing is over: the count starts at once
    shared.recount_soon()
    assert counting.wait(10)
    table[0] = 3  # written after that count read the table
    shared.recount_soon()
    release.set()
    wait_for_refreshes(10)
    assert counts == [1, 2, 3] and shared.get(30) == 3


def test_a_change_during_the_first_count_is_followed_by_another() -> None:
    # Nothing is served yet, but the count under way may have read before the change.
    table = [1]
    counting = threading.Event()
    release = threading.Event()

    def compute() -> int:
        seen = table[0]
        counting.set()
        release.wait(10)
        return seen

    shared = SharedResult(compute, monotonic=lambda: 100.0)
    first = threading.Thread(target=shared.get, args=(30,))
    first.start()
    assert counting.wait(10)
    table[0] = 2  # written after the first count read the table
    shared.recount_soon()
    release.set()
    first.join(10)
    wait_for_refreshes(10)
    assert shared.get(30) == 2
