"""What a reconciliation of one claim tells the scheduler (reconcile.py, deletion.py)."""

from __future__ import annotations

import dataclasses
import datetime

from evc_operator import lifecycle


@dataclasses.dataclass(frozen=True, slots=True)
class Outcome:
    """What a reconciliation tells the scheduler."""

    wake_at: datetime.datetime | None = None  # when to look again if nothing changes
    countdown: lifecycle.Decision | None = None  # a pending deletion, with its deadline
    decided: bool = True  # False: not decided this time (countdown as it was)
    again: bool = False  # look again at once: the claim changed under us
    gone: bool = False  # deleted, or found gone: forget it
