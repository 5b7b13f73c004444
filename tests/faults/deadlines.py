"""The observer's rule for a claim's true deadline, from what the audit log says its users did.

A claim expires `expiry` after its creation second unless a user comes first; once it has
users, it is due `grace` after the last of them ended. A pod (or Job) that is created only
after the claim was already due is a *latecomer*: the claim was owed its deletion by then.
The operator decides on a view of the namespace proven current at or after the deadline,
so a latecomer created between that proof and the DELETE can find the claim gone (as it
would have, had the deletion been on time; a latecomer the operator sees keeps the claim).
Latecomers are therefore counted, not judged; every user that came before the deadline is
judged, and moves the deadline as the lifecycle says.
"""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Iterable, Sequence


@dataclasses.dataclass(frozen=True)
class Use:
    name: str
    created: datetime.datetime
    ended: datetime.datetime | None  # None: had not ended when judged


@dataclasses.dataclass(frozen=True)
class Verdict:
    deadline: datetime.datetime | None  # None: a user never ended, so it has none yet
    users: tuple[Use, ...]
    latecomers: tuple[Use, ...]


def _deadline(expires: datetime.datetime, users: Sequence[Use],
              grace: datetime.timedelta) -> datetime.datetime | None:
    if not users:
        return expires
    ends = [use.ended for use in users]
    if any(end is None for end in ends):
        return None
    return max(end for end in ends if end is not None) + grace


def settle(expires: datetime.datetime, uses: Iterable[Use],
           grace: datetime.timedelta) -> Verdict:
    """Take the uses in order of creation; each one created by the deadline its
    predecessors set is a user and may move that deadline, the others are latecomers."""
    users: list[Use] = []
    latecomers: list[Use] = []
    for use in sorted(uses, key=lambda use: use.created):
        deadline = _deadline(expires, users, grace)
        if deadline is None or use.created <= deadline:
            users.append(use)
        else:
            latecomers.append(use)
    return Verdict(_deadline(expires, users, grace), tuple(users), tuple(latecomers))
