"""A work queue of keys, in the shape controller-runtime made standard.

A key added while it waits is there once (dedupe); a key added while it is being worked
on waits until that work is done (never two workers on one key); `add_after` brings a
key back at a moment (a deadline, a retry); `done` with a failure brings it back after a
growing delay (`backoff`); `forget` drops whatever the queue holds of a key. The queue
decides nothing about claims: the scheduler takes keys, has them reconciled, and tells
the queue the outcome.
"""

from __future__ import annotations

import asyncio
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


class WorkQueue(Generic[K]):
    """Keys to work on now, keys to come back to later, and the failures of each."""

    def __init__(self, clock: Callable[[], datetime.datetime] = utcnow) -> None:
        self.clock = clock
        self.later: Timers[K] = Timers()
        self._ready: set[K] = set()
        self._working: set[K] = set()
        self._added_at: dict[K, float] = {}  # first unhandled add (monotonic): reaction time
        self._failures: dict[K, int] = {}
        self._wakeup = asyncio.Event()

    def add(self, key: K) -> None:
        self._ready.add(key)
        self._added_at.setdefault(key, time.monotonic())
        self._wakeup.set()

    def add_after(self, key: K, when: datetime.datetime | None) -> None:
        """Come back to the key at `when` (instead of any moment set before); None: only
        when it is added again."""
        if when is None:
            self.later.pop(key)
        else:
            self.later.set(key, when)

    def forget(self, key: K) -> None:
        """Drop all the queue holds of the key (work under way finishes on its own)."""
        self._ready.discard(key)
        self._added_at.pop(key, None)
        self._failures.pop(key, None)
        self.later.pop(key)

    def waiting(self, key: K) -> bool:
        return key in self._ready

    def take(self) -> list[tuple[K, float | None]]:
        """The keys ready (or due) and not being worked on, each with the moment it was
        first added or came due (monotonic); they are now being worked on."""
        for key in self.later.pop_due(self.clock()):
            self.add(key)
        taken = [key for key in self._ready if key not in self._working]
        self._ready.difference_update(taken)
        self._working.update(taken)
        self._wakeup.clear()
        return [(key, self._added_at.pop(key, None)) for key in taken]

    def done(self, key: K, *, failed: bool = False) -> float | None:
        """The work on a key ended; after a failure, returns the delay until it is retried
        (sooner if it was due sooner anyway)."""
        self._working.discard(key)
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
        return not self._ready and not self._working

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
