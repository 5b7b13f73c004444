"""How many reconciliations may be in flight: a limit that follows the API server's answers.

A fixed number of reconciliations in flight, each waiting for its status write and Event,
made the operator wait instead of work when the API server grew slower (issue 16): by
Little's law, the claims served per second are the reconciliations in flight divided by
how long each takes. The limit here is AIMD, as TCP's congestion window:

- it grows by one per `limit` answers (about one per round of work) while work is waiting
  for a slot and the API server answers as fast as it usually does;
- it shrinks by a factor, at most once per round, when the API server says it is
  overloaded (429, 5xx, no answer in time), down to `minimum`; or when its recent latency
  rises past `tolerance` times its usual latency (the slow average: a cluster that grows
  busier slowly moves the baseline with it, a jump caused by our own extra requests does
  not), but latency alone never takes it below `initial`, the fixed number of before: a
  busy API server is no reason to serve fewer claims than that, only an overloaded one;
- it stays at most `maximum`, as many as the pool of connections for requests
  (kube.REQUEST_CONNECTIONS: each in flight holds one, and its memory).

`Measured` wraps a reconciliation's API (seams.ClaimApi) and reports each call's latency;
the clock is injected, so tests need no real time. The limit is only a number and a
count of slots: the scheduler asks how many are free and hands them out.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import datetime
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

from evc_operator.errors import ApiException, transient
from evc_operator.seams import ClaimApi
from evc_operator.status import Event

T = TypeVar("T")
FAST, SLOW = 0.2, 0.01  # weights of a new latency in the recent and the usual average


@dataclasses.dataclass(frozen=True)
class Bounds:
    initial: int = 16
    minimum: int = 4
    maximum: int = 128
    tolerance: float = 2.0  # recent latency over usual latency that counts as overload
    decrease: float = 0.7  # the factor of a decrease


DEFAULT_BOUNDS = Bounds()

class AdaptiveLimit:
    """Slots for reconciliations: `limit` of them, adapted to the latencies `observe`d."""

    def __init__(self, bounds: Bounds = DEFAULT_BOUNDS,
                 report: Callable[[int], None] = lambda _limit: None) -> None:
        self.bounds = bounds
        self.limit = float(bounds.initial)
        self.in_flight = 0
        self.backlogged = False  # whether queued work waited for a slot (the scheduler's)
        self.recent: float | None = None  # fast average of latencies (seconds)
        self.usual: float | None = None  # slow average: the baseline
        self._calm = 0  # answers to observe before another decrease
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()
        self._report = report
        report(int(self.limit))

    # --- slots ---------------------------------------------------------------------------

    def free(self) -> int:
        """Slots that may be taken now (none while someone waits to get one back)."""
        return 0 if self._waiters else max(0, int(self.limit) - self.in_flight)

    def take(self) -> None:
        self.in_flight += 1

    def release(self) -> None:
        self.in_flight -= 1
        self._admit()

    async def acquire(self) -> None:
        """A slot, waiting in line for one if none is free."""
        if self.free():
            self.take()
            return
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.release()  # handed a slot just as it was cancelled: give it back
            else:
                self._waiters.remove(waiter)
            raise

    def _admit(self) -> None:
        while self._waiters and self.in_flight < int(self.limit):
            waiter = self._waiters.popleft()
            if not waiter.done():
                self.in_flight += 1
                waiter.set_result(None)

    # --- adapting ------------------------------------------------------------------------

    def observe(self, seconds: float, *, overload: bool = False) -> None:
        """One API call's answer came after `seconds` (or said it was `overload`ed)."""
        if overload:
            self._decrease(self.bounds.minimum)
            return
        self.recent = seconds if self.recent is None else self.recent + FAST * (
            seconds - self.recent)
        self.usual = seconds if self.usual is None else self.usual + SLOW * (
            seconds - self.usual)
        if self.recent > self.bounds.tolerance * self.usual:
            self._decrease(self.bounds.initial)
            return
        self._calm = max(0, self._calm - 1)
        if self.waiting() and self.in_flight >= int(self.limit):
            self._set(self.limit + 1 / self.limit)

    def waiting(self) -> bool:
        """Whether work waits for a slot: new work in the queue (`backlogged`), or a
        reconciliation in line to get its slot back (after a freshness proof, say: a
        wave of deletions waits there, not in the queue)."""
        return self.backlogged or bool(self._waiters)

    def _decrease(self, floor: int) -> None:
        if self._calm:
            self._calm -= 1
            return
        if self.limit > floor:
            self._set(max(float(floor), self.limit * self.bounds.decrease))
        self._calm = int(self.limit)  # one round of answers before the next decrease

    def _set(self, limit: float) -> None:
        before = int(self.limit)
        self.limit = min(float(self.bounds.maximum), max(float(self.bounds.minimum), limit))
        if int(self.limit) != before:
            self._report(int(self.limit))
            self._admit()


class Measured:
    """A reconciliation's API calls (seams.ClaimApi), each one's latency told to `limit`."""

    def __init__(self, api: ClaimApi, limit: AdaptiveLimit,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.api = api
        self.limit = limit
        self.clock = clock

    async def _timed(self, call: Awaitable[T]) -> T:
        start = self.clock()
        try:
            result = await call
        except ApiException as error:
            self.limit.observe(self.clock() - start, overload=transient(error))
            raise
        except TimeoutError:
            self.limit.observe(self.clock() - start, overload=True)
            raise
        self.limit.observe(self.clock() - start)
        return result

    async def create_pvc(self, body: Mapping[str, Any]) -> dict[str, Any]:
        return await self._timed(self.api.create_pvc(body))

    async def read_pvc(self, namespace: str, name: str) -> dict[str, Any] | None:
        return await self._timed(self.api.read_pvc(namespace, name))

    async def read_evc(self, namespace: str, name: str) -> dict[str, Any] | None:
        return await self._timed(self.api.read_evc(namespace, name))

    async def patch_pvc(self, namespace: str, name: str, uid: str, resource_version: str,
                        patch: Mapping[str, Any]) -> str:
        return await self._timed(self.api.patch_pvc(namespace, name, uid, resource_version,
                                                    patch))

    async def patch_evc_status(self, namespace: str, name: str,
                               status: Mapping[str, Any]) -> dict[str, Any]:
        return await self._timed(self.api.patch_evc_status(namespace, name, status))

    async def delete_evc(self, namespace: str, name: str, uid: str,
                         resource_version: str, orphan: bool = False) -> None:
        await self._timed(self.api.delete_evc(namespace, name, uid, resource_version, orphan))

    async def post_event(self, namespace: str, name: str, uid: str, event: Event,
                         now: datetime.datetime) -> None:
        await self._timed(self.api.post_event(namespace, name, uid, event, now))
