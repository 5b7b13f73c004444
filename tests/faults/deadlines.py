"""The observer's rule for a claim's true deadline, from what the audit log says its users did.

A claim expires `expiry` after its creation second unless a user comes first; once it has
users, it is due `grace` after the last of them ended. A pod (or Job) that is created only
after the claim was already due is a *latecomer*: the claim was owed its deletion by then.
The operator decides on a view of the namespace proven current at or after the deadline,
so a latecomer created between that proof and the DELETE can find the claim gone (as it
would have, had the deletion been on time; a latecomer the operator sees keeps the claim).
Latecomers are therefore counted, not judged; every user that came before the deadline is
judged, and moves the deadline as the lifecycle says. So is a latecomer the operator itself
named among the claim's users in a status write (`seen`): it kept the claim for it, so the
deadline moved, and the uses that came before the moved deadline are users in turn (judged
as latecomers all, once one came, a user that came while the operator kept the claim for
it went unjudged: a review).

How late a deletion may be is judged against `latest`: a latecomer that comes while the
operator may still be on its way to the deletion (before the deadline's allowed lag, which
outages lengthen) and that the operator sees keeps the claim as any user does, so the
claim's deadline may move to that latecomer's end. Seen on the real node: a claim due
during an API server outage, a pod for it created as the server came back, and the claim
kept until that pod had ended; a pod deleted while the operator was down, whose end the
operator learnt on restart (later than it was), and a Job created in between.
"""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Callable, Collection, Iterable, Sequence


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


def _split(expires: datetime.datetime, uses: Iterable[Use], grace: datetime.timedelta,
           allowed: Callable[[datetime.datetime], datetime.datetime],
           seen: Collection[str] = ()) -> tuple[list[Use], list[Use]]:
    """Uses in order of creation: users (created by `allowed` of the deadline those before
    them set, or named by the operator as users: `seen`), and the others."""
    users: list[Use] = []
    others: list[Use] = []
    for use in sorted(uses, key=lambda use: use.created):
        deadline = _deadline(expires, users, grace)
        if deadline is None or use.created <= allowed(deadline) or use.name in seen:
            users.append(use)
        else:
            others.append(use)
    return users, others


def settle(expires: datetime.datetime, uses: Iterable[Use],
           grace: datetime.timedelta, seen: Collection[str] = ()) -> Verdict:
    """Take the uses in order of creation; each one created by the deadline its
    predecessors set, or named by the operator as a user (`seen`), is a user and may move
    that deadline, the others are latecomers."""
    users, latecomers = _split(expires, uses, grace, lambda deadline: deadline, seen)
    return Verdict(_deadline(expires, users, grace), tuple(users), tuple(latecomers))


def latest(expires: datetime.datetime, uses: Iterable[Use], grace: datetime.timedelta,
           allowed: Callable[[datetime.datetime], datetime.datetime],
           seen: Collection[str] = ()) -> datetime.datetime | None:
    """The latest deadline the operator may keep the claim to: as `settle`, except that a
    use created before the deadline so far *plus its allowed lag* (`allowed`) counts as a
    user. None: one of those never ended."""
    users, _ = _split(expires, uses, grace, allowed, seen)
    return _deadline(expires, users, grace)
