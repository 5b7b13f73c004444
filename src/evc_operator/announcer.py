"""Telling of a claim: the same words in the log at once, and an Event on the EVC.

A reconciliation tells of what it decided and did (status.py's Events) through
`Announcer.announce`: the log says it at once, and the Event goes to the API server now,
or later, posted by the scheduler once no claim waits for a slot (`defer`: outbox.py).
Either way it goes through `post`, which never fails the work it tells of: a lost Event
loses no data. The Event carries the moment it tells of, on the API server's clock,
however late it goes.
"""

from __future__ import annotations

import datetime
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from evc_operator import status
from evc_operator.errors import describe
from evc_operator.evc import EvcView
from evc_operator.gate import NotLeading
from evc_operator.outbox import Pending
from evc_operator.seams import ClaimApi
from evc_operator.settings import Settings

Logger = logging.LoggerAdapter[Any]


class Announcer:
    def __init__(self, api: ClaimApi, settings: Settings,
                 clock: Callable[[], datetime.datetime],
                 defer: Callable[[Pending], Awaitable[bool]] | None = None) -> None:
        self.api = api
        self.settings = settings
        self.clock = clock  # the API server's clock: when what an Event tells of happened
        # Whether an Event is left to post later (outbox.py: while claims wait for slots).
        self.defer = defer or _never

    async def announce(self, view: EvcView, event: status.Event, logger: Logger) -> None:
        """An Event on the EVC (now, or by the scheduler once no claim waits for a slot:
        outbox.py), and the same words in the log at once. Best effort: a lost Event loses
        no data, and never stops the work it tells of. With LIFECYCLE_EVENTS=false only
        Warnings become Events (five Normal ones a claim double the API writes)."""
        level = logging.WARNING if event.type == "Warning" else logging.INFO
        logger.log(level, "%s: %s", event.reason, event.message)
        if event.type == "Warning" or self.settings.lifecycle_events:
            pending = Pending(view.namespace, view.name, view.uid, event, self.clock())
            if not await self.defer(pending):
                await self.post(pending, logger)

    async def post(self, pending: Pending, logger: Logger) -> None:
        try:
            await self.api.post_event(pending.namespace, pending.name, pending.uid,
                                      pending.event, pending.at)
        except NotLeading as error:
            logger.debug("%s.", error)
        except Exception as error:
            logger.warning("Could not post Event %s: %s", pending.event.reason, describe(error))


async def _never(_pending: Pending) -> bool:
    return False
