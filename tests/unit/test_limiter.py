"""The adaptive limit of reconciliations in flight: it grows while work waits and the API
server keeps its pace, shrinks on overload, stays in its bounds; slots are handed back in
order. Latencies are given (or measured on an injected clock): no real time."""

from __future__ import annotations

import asyncio
import datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from evc_operator.errors import ApiException, Conflict
from evc_operator.limiter import AdaptiveLimit, Bounds, Measured
from evc_operator.status import Event
from tests.unit.support import settle

BOUNDS = Bounds(initial=16, minimum=4, maximum=64)


def busy(limit: AdaptiveLimit) -> None:
    """Every slot taken and more work waiting: the limit is what holds the work back."""
    limit.backlogged = True
    while limit.free():
        limit.take()


def test_the_limit_grows_while_work_waits_and_the_server_keeps_its_pace() -> None:
    reported: list[int] = []
    limit = AdaptiveLimit(BOUNDS, report=reported.append)
    for _ in range(200):
        busy(limit)
        limit.observe(0.05)
    assert 16 + 4 <= limit.limit <= 64
    assert reported[0] == 16
    assert reported[-1] == int(limit.limit)
    assert reported == sorted(reported)


def test_without_work_waiting_the_limit_stays_where_it_is() -> None:
    limit = AdaptiveLimit(BOUNDS)
    for _ in range(500):
        limit.observe(0.05)  # nothing in flight beyond the limit, nothing waiting
    assert limit.limit == 16


def test_the_limit_grows_while_reconciliations_wait_in_line_for_their_slots() -> None:
    # A wave of deletions: each claim gave its slot back while its namespace was proven
    # current, and waits in line for one again; the queue itself is empty.
    async def scenario() -> float:
        limit = AdaptiveLimit(BOUNDS)
        while limit.free():
            limit.take()
        waiting = [asyncio.create_task(limit.acquire()) for _ in range(8)]
        await settle()
        assert not limit.backlogged
        for _ in range(3 * BOUNDS.initial):  # three rounds of answers at a steady pace
            limit.observe(0.05)
        await settle()
        for task in waiting:
            task.cancel()
        await asyncio.gather(*waiting, return_exceptions=True)
        return limit.limit

    assert asyncio.run(scenario()) >= BOUNDS.initial + 2


def test_an_overloaded_server_shrinks_it_once_per_round_not_at_every_answer() -> None:
    limit = AdaptiveLimit(BOUNDS)
    limit.observe(0.05, overload=True)
    assert limit.limit == pytest.approx(16 * 0.7)
    for _ in range(int(limit.limit) - 1):  # the rest of the same round's 429s
        limit.observe(0.05, overload=True)
    assert limit.limit == pytest.approx(16 * 0.7)
    for _ in range(3):
        limit.observe(0.05, overload=True)
    assert limit.limit < 16 * 0.7


def test_a_jump_in_latency_shrinks_it_but_not_below_where_it_started() -> None:
    jump = AdaptiveLimit(BOUNDS)
    for _ in range(1000):
        busy(jump)
        jump.observe(0.05)
    grown = jump.limit
    assert grown > 30
    jumps = [0.5, 5.0, 50.0, 500.0]  # ten times slower at once, again and again
    for latency in jumps:
        for _ in range(int(jump.limit) + 1):
            jump.observe(latency)
    assert jump.limit == BOUNDS.initial  # busy is not overloaded: never fewer than before
    for _ in range(100):
        jump.observe(5.0, overload=True)
    assert jump.limit == BOUNDS.minimum  # 429s, 5xx, timeouts: the server asks for less


def test_a_slow_drift_in_latency_does_not_hold_it_back() -> None:
    drift = AdaptiveLimit(BOUNDS)
    latency = 0.05
    for _ in range(2000):
        busy(drift)
        drift.observe(latency)
        latency *= 1.001  # the cluster grows busier, seven times slower in the end
    assert drift.limit == 64  # waiting work still got more slots: Little's law


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.floats(min_value=0.0, max_value=60.0), st.booleans(),
                          st.booleans()), max_size=300))
def test_the_limit_stays_in_its_bounds_whatever_the_answers(
        answers: list[tuple[float, bool, bool]]) -> None:
    """Between minimum and maximum; and never below where it started until the API server
    answered that it is overloaded."""
    limit = AdaptiveLimit(BOUNDS)
    refused = False
    for seconds, overload, waiting in answers:
        if waiting:
            busy(limit)
        limit.observe(seconds, overload=overload)
        refused |= overload
        assert BOUNDS.minimum <= limit.limit <= BOUNDS.maximum
        assert refused or limit.limit >= BOUNDS.initial
        assert limit.free() >= 0


def test_a_slot_given_back_goes_to_the_first_in_line_before_new_work() -> None:
    async def scenario() -> None:
        limit = AdaptiveLimit(Bounds(initial=4, minimum=4, maximum=8))
        busy(limit)
        order: list[str] = []

        async def back(name: str) -> None:
            await limit.acquire()
            order.append(name)

        first = asyncio.create_task(back("first"))
        second = asyncio.create_task(back("second"))
        await settle()
        assert order == []
        assert limit.free() == 0  # those in line come first
        limit.release()
        await settle()
        assert order == ["first"]
        assert limit.in_flight == 4
        limit.backlogged = True
        for _ in range(8):  # one round at a steady pace: one slot more
            limit.observe(0.01)
        await settle()
        assert order == ["first", "second"]
        assert limit.in_flight == 5
        await asyncio.gather(first, second)

    asyncio.run(scenario())


def test_a_cancelled_wait_for_a_slot_leaves_the_count_right() -> None:
    async def scenario() -> None:
        limit = AdaptiveLimit(Bounds(initial=4, minimum=4, maximum=8))
        busy(limit)
        waiting = asyncio.create_task(limit.acquire())
        await settle()
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        limit.release()
        assert limit.in_flight == 3
        assert limit.free() == 1

    asyncio.run(scenario())


class SlowApi:
    """Each call takes `seconds` on the test's clock, or fails with `error`."""

    def __init__(self, clock: list[float]) -> None:
        self.clock = clock
        self.seconds = 0.05
        self.error: BaseException | None = None

    async def _answer(self) -> Any:
        self.clock[0] += self.seconds
        if self.error is not None:
            raise self.error
        return {}

    async def create_pvc(self, body: Any) -> Any:
        return await self._answer()

    async def read_pvc(self, namespace: str, name: str) -> Any:
        return await self._answer()

    async def read_evc(self, namespace: str, name: str) -> Any:
        return await self._answer()

    async def patch_pvc(self, *args: Any) -> str:
        await self._answer()
        return "1"

    async def patch_evc_status(self, *args: Any) -> Any:
        return await self._answer()

    async def delete_evc(self, *args: Any) -> None:
        await self._answer()

    async def post_event(self, *args: Any) -> None:
        await self._answer()


def test_each_call_of_a_reconciliation_tells_its_latency_and_overload() -> None:
    clock = [0.0]
    api = SlowApi(clock)
    limit = AdaptiveLimit(BOUNDS)
    measured = Measured(api, limit, clock=lambda: clock[0])
    event = Event("Normal", "Reason", "message")
    now = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)

    async def scenario() -> None:
        await measured.create_pvc({})
        await measured.read_pvc("ns", "a")
        await measured.patch_pvc("ns", "a", "uid", "1", {})
        await measured.patch_evc_status("ns", "a", {})
        await measured.post_event("ns", "a", "uid", event, now)
        await measured.delete_evc("ns", "a", "uid", "1")
        assert limit.usual == pytest.approx(0.05)
        assert limit.limit == 16
        api.error = Conflict("exists")  # an answer, not an overload: a latency like others
        with pytest.raises(Conflict):
            await measured.create_pvc({})
        assert limit.limit == 16
        api.error = ApiException(429, "Too Many Requests")
        with pytest.raises(ApiException):
            await measured.patch_evc_status("ns", "a", {})
        assert limit.limit < 16
        shrunk = limit.limit
        api.error = None
        for _ in range(int(shrunk)):
            busy(limit)
            await measured.patch_evc_status("ns", "a", {})
        assert limit.limit > shrunk

    asyncio.run(scenario())
