"""Helpers for unit tests of asynchronous code: a clock the test moves, and `settle`."""

from __future__ import annotations

import asyncio
import datetime
from collections import deque

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
