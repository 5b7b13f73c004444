"""A pod changed: which claims to look at again, and when; what a user that left leaves.

The informers tell the scheduler of every pod change (watched.py: the claims the pod
mounted or mounts, and the pod before and after), and the scheduler asks `PodChanges`.
The claims it names are looked at again, and those with a selector whose users it may
change (users.py, `users_may_change`): a label edit that changes no claim's users costs no
reconciliation. A user that left is kept on its claim until the leader decides without
it; a standby, which decides nothing, keeps the latest end of use it saw (tracked.py).
A claim whose write of who its users are waits for its budget (budget.py) is looked at
within `USERS_COALESCE`, not at every edit. Nothing here reconciles: it fills the work
queue (workqueue.py).
"""

from __future__ import annotations

import datetime
from collections.abc import Callable, Iterable

from evc_operator import lifecycle
from evc_operator.evc import Key
from evc_operator.tracked import Tracked, TrackedClaim
from evc_operator.users import PodView, SelectorChange, names, users_may_change
from evc_operator.workqueue import WorkQueue

# How soon a claim whose users-only status write waits for its budget is decided again
# after a pod change (an end of its last user is seen within this, and written at once).
USERS_COALESCE = datetime.timedelta(seconds=2)


class PodChanges:
    def __init__(self, claims: Tracked, queue: WorkQueue[Key],
                 clock: Callable[[], datetime.datetime],
                 latest: Callable[[], datetime.datetime]) -> None:
        self.claims = claims
        self.queue = queue
        self.clock = clock  # the API server's clock, the early way: when to look again
        self.latest = latest  # and the late way: when a standby saw a use end

    def seen(self, namespace: str, claims: Iterable[str],
             change: tuple[PodView | None, PodView | None] | None, *, active: bool) -> None:
        """A pod changed: look again at the EVCs it mounts, and at those with a selector
        for which it became or stopped being a user, or stayed one and changed how (phase,
        end). `change`: the pod before and after; None (not known): every claim with a
        selector. `active`: whether this replica leads. A label edit that changes no
        claim's users costs no reconciliation: with 400 claims with selectors, each edit of
        a pod used to re-decide all 400."""
        before, after = change if change is not None else (None, None)
        # Seen to finish by a standby: the moment it was seen is its end, not the one its
        # node reported (that clock may be behind; a leader records when it noticed).
        finished = (not active and before is not None and before.active
                    and after is not None and not after.active)
        for claim in claims:
            record = self.claims.get((namespace, claim))
            if (record is not None and before is not None
                    and names(before, claim) and (after is None or not names(after, claim))):
                self._left(record, before, active)
            elif record is not None and finished and after is not None and names(after, claim):
                record.note_end(lifecycle.ceil_to_second(self.latest()))
            self._poke_for_users((namespace, claim))
        sees = users_may_change(change)
        for name in self.claims.with_selector(namespace):
            record = self.claims.get((namespace, name))
            if record is None or not (seen := sees(record.view.selector)):
                continue
            if before is not None and seen is SelectorChange.LEFT:
                self._left(record, before, active)
            elif finished:
                record.note_end(lifecycle.ceil_to_second(self.latest()))
            self._poke_for_users((namespace, name))

    def _left(self, record: TrackedClaim, user: PodView, active: bool) -> None:
        """A user left a claim's users: kept until the leader decides; a standby, which
        decides nothing, keeps the latest end of use of those that left (it may lead next,
        on a record the last leader had no time to write)."""
        if active:
            record.depart(user)
        else:
            record.left_unseen(user, self.latest())

    def _poke_for_users(self, key: Key) -> None:
        """Look again at a claim whose users may have changed: at once, unless a write that
        only says who its users are already waits for its namespace's budget (budget.py).
        Then within USERS_COALESCE: in a namespace whose pods churn, each claim is decided
        a few times a second at most, not at every edit (400 claims and a dozen edits a
        second were 1,300 reconciliations a second and a whole core)."""
        record = self.claims.get(key)
        if record is None:
            return
        if record.write_after is None or self.queue.busy(key):
            self.queue.add(key)  # busy: its outcome would replace a timer set now
            return
        soon = self.clock() + USERS_COALESCE
        when = self.queue.later.get(key)
        if when is None or when > soon:
            self.queue.add_after(key, soon)
