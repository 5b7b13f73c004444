"""The countdown log: every COUNTDOWN_INTERVAL, which countdowns run and the time left.

One line per claim for the COUNTDOWN_LOG_LINES nearest deadlines, and one line that sums
up the rest: with thousands of claims, a line each would be thousands of lines every
interval, written by the same loop that reacts to pods. No API calls.
"""

from __future__ import annotations

import asyncio
import datetime
import heapq
import logging
from collections.abc import Callable, Iterable
from typing import Any

from evc_operator.evc import Key
from evc_operator.lifecycle import Countdown, Decision
from evc_operator.timestamps import format_time, human_period

COUNTDOWN_LOG_LINES = 50

log = logging.getLogger(__name__)


def tell(countdowns: Iterable[tuple[Key, Decision]], now: datetime.datetime,
         logger_for: Callable[[Key], logging.LoggerAdapter[Any]]) -> None:
    """Log the nearest countdowns one by one, and sum up the rest."""
    pending = [(decision.deletes_at, key, decision) for key, decision in countdowns
               if decision.deletes_at is not None]
    nearest = heapq.nsmallest(COUNTDOWN_LOG_LINES, pending, key=lambda item: item[0])
    for deletes_at, key, decision in nearest:
        left = max(0.0, (deletes_at - now).total_seconds())
        logger_for(key).info(
            "%s countdown: %s left, deletes at %s.",
            "Expiry" if decision.countdown is Countdown.EXPIRY else "Grace",
            human_period(left), format_time(deletes_at))
    if len(pending) > len(nearest):
        last = max(deletes_at for deletes_at, _, _ in pending)
        log.info("%d more countdowns run; the last of them deletes at %s.",
                 len(pending) - len(nearest), format_time(last))


async def log_every(interval: float, tell_now: Callable[[], None]) -> None:
    """Call `tell_now` every `interval` seconds, until cancelled."""
    while True:
        await asyncio.sleep(interval)
        tell_now()
