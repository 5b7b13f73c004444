"""The work queue: deadlines kept in a heap, dedupe, retries with backoff, forgetting."""

from __future__ import annotations

import datetime
import random

from evc_operator.workqueue import RETRY_DELAYS, Timers, WorkQueue, backoff
from tests.unit.support import T0, Clock


def _at(seconds: float) -> datetime.datetime:
    return T0 + datetime.timedelta(seconds=seconds)


def test_deadlines_come_due_in_order_and_only_as_the_mapping_says() -> None:
    deadlines: Timers[tuple[str, str]] = Timers()
    deadlines.set(("ns", "c"), _at(30))
    deadlines.set(("ns", "a"), _at(10))
    deadlines.set(("ns", "b"), _at(20))
    deadlines.set(("ns", "a"), _at(25))  # moved later: its old entry must not fire
    deadlines.set(("ns", "b"), _at(5))  # moved earlier
    deadlines.pop(("ns", "c"))  # forgotten
    assert deadlines.earliest() == _at(5)
    assert deadlines.pop_due(_at(10)) == [("ns", "b")]
    assert deadlines.pop_due(_at(24)) == []
    assert deadlines.earliest() == _at(25)
    assert deadlines.pop_due(_at(100)) == [("ns", "a")]
    assert deadlines.earliest() is None
    assert dict(deadlines.items()) == {}


def test_deadlines_match_a_full_scan_whatever_the_order_of_changes() -> None:
    rng = random.Random(7)
    deadlines: Timers[tuple[str, str]] = Timers()
    truth: dict[tuple[str, str], datetime.datetime] = {}
    now = 0
    for _ in range(5000):
        key = ("ns", f"c{rng.randrange(50)}")
        roll = rng.random()
        if roll < 0.6:
            when = _at(now + rng.randrange(0, 40))
            deadlines.set(key, when)
            truth[key] = when
        elif roll < 0.8:
            deadlines.pop(key)
            truth.pop(key, None)
        else:
            now += rng.randrange(0, 10)
            due = {k for k, when in truth.items() if when <= _at(now)}
            assert set(deadlines.pop_due(_at(now))) == due
            for k in due:
                del truth[k]
        assert dict(deadlines.items()) == truth
        assert deadlines.earliest() == min(truth.values(), default=None)
    assert len(deadlines._heap) <= 2 * len(truth) + 65  # stale entries do not pile up


def test_a_key_added_twice_is_handed_out_once_and_never_to_two_workers() -> None:
    queue: WorkQueue[str] = WorkQueue(Clock())
    queue.add("a")
    queue.add("a")
    assert [key for key, _ in queue.take()] == ["a"]
    queue.add("a")  # changed while being worked on: again, but only after this work
    assert queue.take() == []
    queue.done("a")
    assert [key for key, _ in queue.take()] == ["a"]
    queue.done("a")
    assert queue.idle()


def test_a_key_comes_back_at_its_moment_and_forgetting_drops_it() -> None:
    clock = Clock()
    queue: WorkQueue[str] = WorkQueue(clock)
    queue.add_after("a", _at(10))
    queue.add_after("b", _at(5))
    queue.add_after("b", None)  # no moment any more
    assert queue.take() == []
    clock.advance(10)
    assert [key for key, _ in queue.take()] == ["a"]
    queue.done("a")
    queue.add("c")
    queue.add_after("c", _at(20))
    queue.forget("c")
    clock.advance(20)
    assert queue.take() == []
    assert queue.idle()


def test_failures_are_retried_with_growing_delays_until_one_succeeds() -> None:
    clock = Clock()
    queue: WorkQueue[str] = WorkQueue(clock)
    delays = []
    for _ in range(len(RETRY_DELAYS) + 2):
        queue.add("a")
        (key, _), = queue.take()
        delays.append(queue.done(key, failed=True))
        queue.later.pop("a")  # retried at once, not at its moment
    assert delays == [*RETRY_DELAYS, RETRY_DELAYS[-1], RETRY_DELAYS[-1]]
    queue.add("a")
    queue.take()
    assert queue.done("a") is None
    queue.add("a")
    queue.take()
    assert queue.done("a", failed=True) == RETRY_DELAYS[0]  # a success resets the count
    assert queue.later.get("a") == T0 + datetime.timedelta(seconds=RETRY_DELAYS[0])


def test_a_retry_never_postpones_a_moment_due_sooner() -> None:
    clock = Clock()
    queue: WorkQueue[str] = WorkQueue(clock)
    queue.add("a")
    queue.take()
    queue.add_after("a", _at(0.5))
    queue.done("a", failed=True)
    assert queue.later.get("a") == _at(0.5)


def test_backoff_caps_the_delay() -> None:
    assert [backoff(n, cap=10.0) for n in range(1, 7)] == [1.0, 2.0, 5.0, 10.0, 10.0, 10.0]
    assert backoff(1) == 1.0
    assert backoff(100) == RETRY_DELAYS[-1]
