"""The operator's own long-running tasks (essential.py): one that ends on its own stops
the operator; one cancelled by the operator's stop does not."""

from __future__ import annotations

import asyncio
import logging

import pytest

from evc_operator import essential


def test_a_task_that_fails_stops_the_operator_and_says_why(
        caplog: pytest.LogCaptureFixture) -> None:
    stopped: list[str] = []

    async def broken() -> None:
        raise KeyError("a claim the loop did not expect")

    async def scenario() -> None:
        task = essential.start(broken(), "evc-scheduler", stop=lambda: stopped.append("stop"))
        await asyncio.gather(task, return_exceptions=True)
        await asyncio.sleep(0)  # its done callback

    with caplog.at_level(logging.CRITICAL, logger="evc_operator.essential"):
        asyncio.run(scenario())
    assert stopped == ["stop"]
    assert "evc-scheduler ended: KeyError" in caplog.text


def test_a_task_that_returns_stops_it_too_and_one_cancelled_does_not() -> None:
    stopped: list[str] = []

    async def forever() -> None:
        await asyncio.Event().wait()

    async def returns() -> None:
        return None

    async def scenario() -> None:
        ended = essential.start(returns(), "evc-countdowns", stop=lambda: stopped.append("a"))
        cancelled = essential.start(forever(), "evc-leadership",
                                    stop=lambda: stopped.append("b"))
        await asyncio.sleep(0)
        cancelled.cancel()
        await asyncio.gather(ended, cancelled, return_exceptions=True)
        await asyncio.sleep(0)

    asyncio.run(scenario())
    assert stopped == ["a"]
