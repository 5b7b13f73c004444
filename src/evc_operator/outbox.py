"""Events that wait while claims wait: an Event's POST gives way to a claim's reconciliation.

A reconciliation writes the claim's status and posts its Events together, and holds its
slot (limiter.py) until both are answered. While claims wait for slots (a backlog: the API
server slow for a few seconds, a wave of users ending), every claim then also waited for
the others' Events: half of the operator's requests as 10,000 users ended at 100 a second,
and the claims' reaction waited for them at the tail (docs/benchmarks.md).

So while claims wait for a slot, a reconciliation leaves its Normal Events here and ends
with its status write; the scheduler posts them, oldest first, with the slots no claim
waits for. Warnings (bad input, a refusal) are never left here: they go out at once.
Status is what users, tools and the operator itself read; an Event posted a moment later
loses nothing (it carries the moment it tells of, and the log has said it already). With
no backlog nothing waits here: an Event goes out with its status write, as before.

Bounded in time and in number. An Event does not wait for the whole backlog: once the
oldest has waited `MAX_WAIT` (5 s), the next reconciliation that would leave one here
posts the oldest instead, in its slot, and leaves its own at the end; so while claims keep
waiting, Events go out in order about `MAX_WAIT` late (they waited as long as the backlog
lasted, up to 40 s in a burst of 4,000 claims with room for them all). Not a second: the
backlogs of the API server's slow seconds outlast it, and in the one run with 1 s the
reaction's tail was the day's longest (docs/benchmarks.md). And
beyond `CAPACITY` Events an Event is posted at once by its reconciliation again, so a long
backlog cannot grow the operator's memory (an Event waiting here holds about 300 bytes).
Events still waiting when the operator stops are posted on its way out, for up to 5 s
(scheduler.FLUSH_SECONDS); if it is killed, or stops leading, they are not posted, and
the log has them (`flush`). Pure but for `flush`: the scheduler hands out the slots.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import datetime
import logging
from collections.abc import Awaitable, Callable

from evc_operator.status import Event

log = logging.getLogger(__name__)
CAPACITY = 1000
# Longer than the API server's slow seconds, which Events give way to; by their own times.
MAX_WAIT = datetime.timedelta(seconds=5)


@dataclasses.dataclass(frozen=True, slots=True)
class Pending:
    """An Event to post on a claim, as its reconciliation made it."""

    namespace: str
    name: str
    uid: str
    event: Event
    at: datetime.datetime  # when it happened: the Event's own time, however late it goes


class Outbox:
    def __init__(self, capacity: int = CAPACITY,
                 max_wait: datetime.timedelta = MAX_WAIT) -> None:
        self.capacity = capacity
        self.max_wait = max_wait
        self._waiting: collections.deque[Pending] = collections.deque()

    def __len__(self) -> int:
        return len(self._waiting)

    def offer(self, pending: Pending) -> Pending | None:
        """Keep `pending` to post later; returns what to post now instead, if anything:
        the oldest Event waiting, once it has waited `max_wait` by `pending`'s time
        (`pending` takes a place at the end), or `pending` itself when there is no room."""
        if self._waiting and pending.at - self._waiting[0].at >= self.max_wait:
            oldest = self._waiting.popleft()
            self._waiting.append(pending)
            return oldest
        if len(self._waiting) >= self.capacity:
            return pending
        self._waiting.append(pending)
        return None

    def take(self, limit: int) -> list[Pending]:
        """Up to `limit` Events to post now, oldest first."""
        return [self._waiting.popleft() for _ in range(min(limit, len(self._waiting)))]

    def drop(self) -> int:
        """Forget every Event waiting (the operator stops, or another replica leads);
        returns how many."""
        dropped = len(self._waiting)
        self._waiting.clear()
        return dropped


async def flush(waiting: list[Pending], post: Callable[[Pending], Awaitable[None]],
                slots: int, seconds: float) -> None:
    """The operator stops: post the Events still waiting, `slots` at once, for at most
    `seconds`; those left are said in the log as not posted."""
    limit = asyncio.Semaphore(max(1, slots))

    async def one(pending: Pending) -> None:
        async with limit:
            await post(pending)
    posts = [asyncio.ensure_future(one(pending)) for pending in waiting]
    if not posts:
        return
    _, late = await asyncio.wait(posts, timeout=seconds)
    for task in late:
        task.cancel()
    if late:
        log.warning("%d Events not posted: the operator stops (the log has them).",
                    len(late))
