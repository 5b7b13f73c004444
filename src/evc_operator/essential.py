"""The operator's own long-running tasks, whose end stops the operator.

The scheduler's loop, the countdowns' log and the leadership's Lease each run for as long
as the operator does. One that ended on an exception ended alone: the process stayed up,
Kopf's liveness and `/readyz` still answered, and nothing was decided or deleted again, a
stall for ever with one line in the log. Now its end is said at CRITICAL and the process
is stopped as a SIGTERM stops it (Kopf's cleanup runs); restarted (its Deployment does), it
resumes every countdown from the claims' records.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import Callable, Coroutine
from typing import Any

log = logging.getLogger(__name__)


def _terminate() -> None:
    os.kill(os.getpid(), signal.SIGTERM)


def start(work: Coroutine[Any, Any, None], name: str, *,
          stop: Callable[[], None] | None = None) -> asyncio.Task[None]:
    """`work` as a task whose end, unless cancelled, stops the operator (`stop`; by
    default a SIGTERM to itself, looked up when it ends: tests put another in its place)."""
    task = asyncio.create_task(work, name=name)

    def ended(task: asyncio.Task[None]) -> None:
        if task.cancelled():
            return  # stopped by the operator's own stop
        error = task.exception()
        log.critical("%s ended%s; the operator stops (started again, it resumes).", name,
                     "" if error is None else f": {error!r}", exc_info=error)
        (stop or _terminate)()

    task.add_done_callback(ended)
    return task
