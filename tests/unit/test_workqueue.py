"""The work queue: deadlines kept in a heap, dedupe, retries with backoff, forgetting."""

from __future__ import annotations

import asyncio
import datetime
import random

from hypothesis import given, settings
from hypothesis import strategies as st

from evc_operator.workqueue import RETRY_DELAYS, Timers, WorkQueue, backoff
from tests.unit.support import T0, Clock, VirtualTime, on_virtual_time


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


# --- fairness across groups (namespaces) -------------------------------------------------

def _by_namespace(clock: Clock | None = None) -> WorkQueue[tuple[str, str]]:
    return WorkQueue(clock or Clock(), fair_by=lambda key: key[0])


def test_a_quiet_namespaces_key_waits_for_one_key_of_each_busy_one_not_for_all() -> None:
    queue = _by_namespace()
    for number in range(400):
        queue.add(("noisy", f"c{number}"))
    queue.add(("quiet", "q"))
    first = [key for key, _ in queue.take(2)]
    assert first == [("noisy", "c0"), ("quiet", "q")]
    assert queue.pending() == 399


def test_a_limit_of_zero_hands_out_nothing_and_keeps_everything() -> None:
    queue = _by_namespace()
    queue.add(("a", "1"))
    assert queue.take(0) == []
    assert queue.waiting(("a", "1"))
    assert [key for key, _ in queue.take()] == [("a", "1")]


namespaces = st.sampled_from(["a", "b", "c", "d"])
names = st.sampled_from([f"c{n}" for n in range(6)])
keys = st.tuples(namespaces, names)
Key = tuple[str, str]
# (operation, key, number, flag): each operation reads the fields it needs.
operations = st.lists(st.tuples(
    st.sampled_from(["add", "forget", "take", "done", "later", "tick"]), keys,
    st.integers(min_value=0, max_value=30), st.booleans()), max_size=120)


@settings(max_examples=300, deadline=None)
@given(operations)
def test_the_fair_queue_keeps_the_old_promises_whatever_the_order(
        steps: list[tuple[str, Key, int, bool]]) -> None:
    """Never two workers on a key; a key is handed out only if added (or due) since it
    was last handed out and not forgotten since; each at most once per take; at most
    `limit` per take, and fewer only when nothing else could be handed out; and whatever
    is waiting comes out once the work under way ends."""
    clock = Clock()
    queue = _by_namespace(clock)
    working: list[Key] = []
    wanted: set[Key] = set()  # added (or due) since last handed out
    due: dict[Key, float] = {}
    now = 0.0
    for operation, key, number, flag in steps:
        if operation == "add":
            queue.add(key)
            wanted.add(key)
        elif operation == "forget":
            queue.forget(key)
            wanted.discard(key)
            due.pop(key, None)
        elif operation == "later":
            queue.add_after(key, _at(now + number))
            due[key] = now + number
        elif operation == "tick":
            now += number
            clock.now = _at(now)
        elif operation == "take":
            limit = number % 6
            wanted |= {k for k, when in due.items() if when <= now}
            due = {k: when for k, when in due.items() if when > now}
            taken = [k for k, _ in queue.take(limit)]
            assert len(taken) <= limit
            assert len(set(taken)) == len(taken)
            assert not set(taken) & set(working)
            assert set(taken) <= wanted
            wanted -= set(taken)
            working += taken
            if len(taken) < limit:
                assert wanted <= set(working)  # nothing that could go out was left
            assert queue.pending() == len(wanted - set(working))
        elif operation == "done" and working:
            done = working.pop(0)
            delay = queue.done(done, failed=flag)
            if delay is not None:
                due[done] = min(due.get(done, now + delay), now + delay)
    for key in working:
        queue.done(key)
    wanted |= set(due)
    clock.now = _at(now + 1000)
    assert {key for key, _ in queue.take()} == wanted
    assert queue.pending() == 0


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(namespaces, st.integers(min_value=1, max_value=30), min_size=1),
       st.randoms(use_true_random=False))
def test_namespaces_with_keys_waiting_are_served_in_turn(
        backlog: dict[str, int], rng: random.Random) -> None:
    """However the keys were added, handed out one at a time no namespace gets a second
    key while another that still has keys waiting got none since."""
    queue = _by_namespace()
    added = [(namespace, f"c{n}") for namespace, count in backlog.items() for n in range(count)]
    rng.shuffle(added)
    for key in added:
        queue.add(key)
    left = dict(backlog)
    served: dict[str, int] = dict.fromkeys(backlog, 0)
    while queue.pending():
        (key, _), = queue.take(1)
        served[key[0]] += 1
        left[key[0]] -= 1
        queue.done(key)
        busy = [served[namespace] for namespace in backlog if left[namespace]]
        assert max(busy, default=0) - min(busy, default=0) <= 1
    assert served == backlog


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(namespaces, names), max_size=60), st.integers(min_value=1, max_value=4))
def test_a_key_of_a_namespace_with_nothing_waiting_comes_out_within_one_turn(
        noise: list[tuple[str, str]], limit: int) -> None:
    """A claim of a quiet namespace waits for at most one key of every other namespace
    with work, however much that namespace has queued."""
    queue = _by_namespace()
    for key in noise:
        queue.add(key)
    queue.add(("quiet", "q"))
    others = len({namespace for namespace, _ in noise})
    takes = 0
    while True:
        taken = [key for key, _ in queue.take(limit)]
        takes += 1
        if ("quiet", "q") in taken:
            break
    assert takes <= -(-(others + 1) // limit)


def test_a_moment_set_sooner_while_the_loop_waits_wakes_it_then() -> None:
    """The loop waits until the earliest moment it knew of (80 s); a key set for 2 s from
    now meanwhile (a new user, to be written within the coalescing) has it wake at 2 s,
    not at 80."""
    time = VirtualTime()
    queue: WorkQueue[str] = WorkQueue(lambda: T0 + datetime.timedelta(seconds=time.t))

    async def scenario() -> float:
        queue.add_after("budgeted", T0 + datetime.timedelta(seconds=80))
        waiting = asyncio.create_task(queue.wait())
        await asyncio.sleep(1)
        queue.add_after("new user", T0 + datetime.timedelta(seconds=3))
        await waiting
        while not queue.take():  # woken at once: nothing due yet, wait for it
            await queue.wait()
        return time.t

    assert on_virtual_time(time, scenario()) == 3
