"""Helpers for unit tests of asynchronous code: a clock the test moves, `settle`, and an
event loop on virtual time."""

from __future__ import annotations

import asyncio
import datetime
import selectors
from collections import deque
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

T0 = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)


class Clock:
    def __init__(self, now: datetime.datetime = T0) -> None:
        self.now = now

    def __call__(self) -> datetime.datetime:
        return self.now

    def advance(self, seconds: float) -> datetime.datetime:
        self.now += datetime.timedelta(seconds=seconds)
        return self.now


async def settle() -> None:
    """Let every other task run until each waits for something the test controls (a
    future, a timer): however many steps that takes, not a fixed number of yields."""
    loop = asyncio.get_running_loop()
    for _ in range(10_000):
        await asyncio.sleep(0)
        ready = vars(loop).get("_ready")  # the callbacks due in the loop's next turn
        if not isinstance(ready, deque) or not ready:
            return
    raise AssertionError("the event loop never settled")


class VirtualTime:
    """Seconds on a clock the test sets (a monotonic clock for the code under test) and,
    under `on_virtual_time`, the event loop's own."""

    def __init__(self, start: float = 0.0) -> None:
        self.t = start

    def __call__(self) -> float:
        return self.t


class _VirtualSelector(selectors.DefaultSelector):
    """Never blocks: where the event loop would wait `timeout` seconds for its next timer,
    the virtual clock moves on by exactly that much (to the timer's moment)."""

    def __init__(self, clock: VirtualTime) -> None:
        super().__init__()
        self._clock = clock

    def select(self, timeout: float | None = None
               ) -> list[tuple[selectors.SelectorKey, int]]:
        ready = super().select(0)
        if ready or timeout == 0:
            return ready
        if timeout is None:
            raise AssertionError("no task can go on and no timer is set: a hang")
        self._clock.t += timeout
        return ready


class VirtualLoop(asyncio.SelectorEventLoop):
    """An event loop on virtual time: timers end at their exact moment, at once in real
    time, however loaded the machine (no wall-clock race in a unit test)."""

    def __init__(self, clock: VirtualTime | None = None) -> None:
        self.clock = clock if clock is not None else VirtualTime()
        super().__init__(_VirtualSelector(self.clock))

    def time(self) -> float:
        return self.clock.t


def on_virtual_time(clock: VirtualTime, main: Coroutine[Any, Any, T]) -> T:
    """Run `main` on an event loop whose time is `clock`: asyncio.sleep and
    asyncio.timeout end at exact virtual moments, at once in real time."""
    with asyncio.Runner(loop_factory=lambda: VirtualLoop(clock)) as runner:
        return runner.run(main)
