"""How often a namespace's claims may have status written that only tells who uses them.

A claim's status says who uses it (`users`, `userNames`, the `InUse` condition's message).
In a namespace whose pods churn (labels flipped a dozen times a second on pods that 400
claims select), every claim's users change with every edit: written each time, that is
thousands of status writes a second, which the operator cannot finish and which slow the
API server for every other namespace (docs/benchmarks.md, "Fairness"). Such writes change
no phase, no end of use and no deadline: they can wait.

So each namespace has a budget for them: `BURST` at once, then `RATE` a second, handed out
in order (a generic cell rate algorithm, as a token bucket without the tokens: each write
reserves the next free moment, so a claim that must wait knows when, and waits once, not
once per retry). Writes that change a phase, an end of use, a deadline or a condition's
status are never budgeted. Pure: the clock is the caller's.
"""

from __future__ import annotations

import datetime

RATE = 5.0  # writes a second, per namespace, once its burst is spent
BURST = 50  # writes at once, per namespace
PRUNE_AT = 1000  # namespaces held before those whose budget is full again are forgotten


class UsersBudget:
    def __init__(self, rate: float = RATE, burst: int = BURST) -> None:
        self.interval = datetime.timedelta(seconds=1 / rate)
        self.tolerance = self.interval * (burst - 1)
        self._next: dict[str, datetime.datetime] = {}  # each namespace's next free moment
        self._prune_at = PRUNE_AT

    def reserve(self, namespace: str, now: datetime.datetime) -> datetime.datetime:
        """The moment a write in `namespace` may go: `now`, or later if its budget is
        spent. The moment is reserved: ask once, write then."""
        free = max(self._next.get(namespace, now), now)
        self._next[namespace] = free + self.interval
        if len(self._next) > self._prune_at:
            # Forget the namespaces whose budget is full again (the next free moment
            # passed: not one partly spent, which would get its whole burst back), and
            # look again only once as many more are held (not at each write).
            self._next = {key: moment for key, moment in self._next.items() if moment > now}
            self._prune_at = max(PRUNE_AT, 2 * len(self._next))
        return max(now, free - self.tolerance)
