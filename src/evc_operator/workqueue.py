"""A work queue of keys, in the shape controller-runtime made standard.

A key added while it waits is there once (dedupe); a key added while it is being worked
on waits until that work is done (never two workers on one key); `add_after` brings a
key back at a moment (a deadline, a retry); `done` with a failure brings it back after a
growing delay (`backoff`); `forget` drops whatever the queue holds of a key. Keys ready
are handed out fairly across groups (namespaces): one group's churn does not hold back
another's keys. The queue decides nothing about claims: the scheduler takes keys, has
them reconciled, and tells the queue the outcome.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import datetime
import heapq
import time
from collections.abc import Callable, Hashable, Iterator
from typing import Generic, TypeVar

from evc_operator.timestamps import utcnow

K = TypeVar("K", bound=Hashable)
# Delays between retries of one key: the n-th failure in a row waits the n-th (or last).
RETRY_DELAYS = (1.0, 2.0, 5.0, 10.0, 30.0, 60.0)


def backoff(failures: int, *, cap: float = RETRY_DELAYS[-1]) -> float:
    """How long to wait after `failures` failures in a row (1 s after the first)."""
    delays = [delay for delay in RETRY_DELAYS if delay < cap] + [cap]
    return delays[min(max(failures, 1), len(delays)) - 1]


class Timers(Generic[K]):
    """When each key is due: the mapping is the truth, a heap finds the earliest.

    With thousands of countdowns, scanning every deadline at every wake would cost more
    than the work it finds. Setting a key pushes (when, key); entries that no longer match
    the mapping (moved or removed since) are dropped when they come to the top.
    """

    def __init__(self) -> None:
        self._when: dict[K, datetime.datetime] = {}
        self._heap: list[tuple[datetime.datetime, K]] = []

    def __contains__(self, key: object) -> bool:
        return key in self._when

    def __len__(self) -> int:
        return len(self._when)

    def items(self) -> Iterator[tuple[K, datetime.datetime]]:
        return iter(list(self._when.items()))

    def get(self, key: K) -> datetime.datetime | None:
        return self._when.get(key)

    def set(self, key: K, when: datetime.datetime) -> None:
        if self._when.get(key) == when:
            return  # its heap entry is still there: a claim re-decided often adds nothing
        self._when[key] = when
        heapq.heappush(self._heap, (when, key))
        if len(self._heap) > 2 * len(self._when) + 64:
            # Mostly moved or removed deadlines: rebuild rather than let them pile up.
            self._heap = [(moment, held) for held, moment in self._when.items()]
            heapq.heapify(self._heap)

    def pop(self, key: K) -> None:
        self._when.pop(key, None)

    def earliest(self) -> datetime.datetime | None:
        heap = self._heap
        while heap and self._when.get(heap[0][1]) != heap[0][0]:
            heapq.heappop(heap)
        return heap[0][0] if heap else None

    def pop_due(self, now: datetime.datetime) -> list[K]:
        """Remove and return every key whose moment is not after `now`."""
        due: list[K] = []
        while (when := self.earliest()) is not None and when <= now:
            _, key = heapq.heappop(self._heap)
            del self._when[key]
            due.append(key)
        return due


def _one_line(_key: object) -> Hashable:
    return None


class WorkQueue(Generic[K]):
    """Keys to work on now, keys to come back to later, and the failures of each.

    Keys ready now wait in lines, one per group (`fair_by`: the scheduler's is the
    namespace), and `take` serves the lines in turn, one key from each: a namespace with
    hundreds of keys ready makes a key of another namespace wait for at most one key of
    each namespace with work, not for all of its own. A key added while it is being worked
    on joins its line again when that work is done.
    """

    def __init__(self, clock: Callable[[], datetime.datetime] = utcnow, *,
                 fair_by: Callable[[K], Hashable] = _one_line) -> None:
        self.clock = clock
        self.later: Timers[K] = Timers()
        self._group = fair_by
        self._dirty: set[K] = set()  # added and not handed out since
        self._working: set[K] = set()
        # Per group, keys in the order they became ready. Entries of keys forgotten (or
        # handed out through an older entry) are skipped when they come up.
        self._lines: dict[Hashable, collections.deque[K]] = {}
        self._turns: collections.deque[Hashable] = collections.deque()  # groups with a line
        self._ready = 0  # keys added, not being worked on: what `take` could hand out
        self._added_at: dict[K, float] = {}  # first unhandled add (monotonic): reaction time
        self._failures: dict[K, int] = {}
        self._wakeup = asyncio.Event()

    def add(self, key: K) -> None:
        self._added_at.setdefault(key, time.monotonic())
        self._wakeup.set()
        if key in self._dirty:
            return
        self._dirty.add(key)
        if key not in self._working:
            self._line_up(key)

    def _line_up(self, key: K) -> None:
        self._ready += 1
        group = self._group(key)
        line = self._lines.get(group)
        if line is None:
            line = self._lines[group] = collections.deque()
            self._turns.append(group)
        line.append(key)

    def add_after(self, key: K, when: datetime.datetime | None) -> None:
        """Come back to the key at `when` (instead of any moment set before); None: only
        when it is added again."""
        if when is None:
            self.later.pop(key)
            return
        earliest = self.later.earliest()
        self.later.set(key, when)
        if earliest is None or when < earliest:  # sooner than the loop's `wait` counts on
            self._wakeup.set()

    def forget(self, key: K) -> None:
        """Drop all the queue holds of the key (work under way finishes on its own)."""
        if key in self._dirty:
            self._dirty.discard(key)
            if key not in self._working:
                self._ready -= 1
        self._added_at.pop(key, None)
        self._failures.pop(key, None)
        self.later.pop(key)

    def waiting(self, key: K) -> bool:
        return key in self._dirty

    def pending(self) -> int:
        """How many keys `take` could hand out now (keys being worked on aside)."""
        return self._ready

    def take(self, limit: int | None = None) -> list[tuple[K, float | None]]:
        """Keys ready (or due) and not being worked on, at most `limit`, one from each
        group in turn, each with the moment it was first added or came due (monotonic);
        they are now being worked on."""
        for key in self.later.pop_due(self.clock()):
            self.add(key)
        self._wakeup.clear()
        taken: list[K] = []
        turns = self._turns
        while turns and (limit is None or len(taken) < limit):
            group = turns.popleft()
            line = self._lines[group]
            while line:
                key = line.popleft()
                if key in self._dirty and key not in self._working:
                    self._dirty.discard(key)
                    self._working.add(key)
                    taken.append(key)
                    break
            if line:
                turns.append(group)
            else:
                del self._lines[group]
        self._ready -= len(taken)
        return [(key, self._added_at.pop(key, None)) for key in taken]

    def done(self, key: K, *, failed: bool = False) -> float | None:
        """The work on a key ended; after a failure, returns the delay until it is retried
        (sooner if it was due sooner anyway)."""
        if key in self._working:
            self._working.discard(key)
            if key in self._dirty:
                self._line_up(key)  # added again while it was worked on
        self._wakeup.set()
        if not failed:
            self._failures.pop(key, None)
            return None
        failures = self._failures[key] = self._failures.get(key, 0) + 1
        delay = backoff(failures)
        retry_at = self.clock() + datetime.timedelta(seconds=delay)
        self.later.set(key, min(self.later.get(key) or retry_at, retry_at))
        return delay

    def idle(self) -> bool:
        return not self._dirty and not self._working

    def busy(self, key: K) -> bool:
        """Whether the key is being worked on (handed out, not done yet)."""
        return key in self._working

    def wake(self) -> None:
        self._wakeup.set()

    async def wait(self, also: datetime.datetime | None = None, *,
                   timers: bool = True) -> None:
        """Until a key is added, work ends or `wake()` is called, or (with `timers`) the
        next `add_after` moment or `also` comes."""
        moments = [when for when in (self.later.earliest(), also) if when is not None]
        timeout = None
        if not timers:
            self._wakeup.clear()
        elif moments:
            timeout = max(0.0, (min(moments) - self.clock()).total_seconds())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wakeup.wait(), timeout=timeout)
