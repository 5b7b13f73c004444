"""The deletion of a claim that is due, proven unused (reconcile.py decided it), and what
its refusals mean.

One write, with the claim's uid and resourceVersion as preconditions: deleted only if it
is still exactly the claim decided on, no "Deleting" status before it. The API server's
answers:

- 404: gone already (deleted by someone): forgotten.
- 409: it changed since the view (its watch event still on its way), or was made again
  under that name: read back and decided again at once on what it is now; a read that
  brings nothing newer than the view (another claim of that name: the watch brings it)
  waits `CONFLICT_RETRY`, not a refused deletion after another at once.
- 403, 422: refused for good (an admission policy or webhook on deletes, which the start's
  permission check cannot see): said by one Warning and in status (`DeletionPaused`,
  reason `DeletionRefused`), tried again after `pvcsync.REJECTED_RETRY` while it stays
  due; a failure backed off in silence left the claim, `deletesAt` long past, and nothing
  said why.
"""

from __future__ import annotations

import datetime
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from evc_operator import lifecycle, metrics, status
from evc_operator.claims import PvcView, pvc_view
from evc_operator.errors import Conflict, Forbidden, Invalid, NotFound, refusal
from evc_operator.evc import EvcView
from evc_operator.lifecycle import Action
from evc_operator.outcome import Outcome
from evc_operator.pvcsync import REJECTED_RETRY
from evc_operator.seams import ClaimApi
from evc_operator.tracked import DeleteRefusal, TrackedClaim

Logger = logging.LoggerAdapter[Any]
# A deletion refused as the claim changed, whose read brought nothing newer than the view
# (another claim of that name now), is decided again this soon, or when the change is seen.
CONFLICT_RETRY = datetime.timedelta(seconds=1)


class Deleter:
    def __init__(self, api: ClaimApi, clock: Callable[[], datetime.datetime],
                 refresh: Callable[[Mapping[str, Any], str], bool],
                 announce: Callable[[EvcView, status.Event, Logger], Awaitable[None]]) -> None:
        self.api = api
        self.clock = clock
        self.refresh = refresh  # a read's view, never the facts decided (tracked.py)
        self.announce = announce

    async def orphaning(self, view: EvcView, indexed: PvcView | None) -> bool:
        """Whether the claim is deleted orphaning its dependents: a PVC of its name, not its
        own, names it as an owner (not as controller). Said to be left untouched, the
        garbage collector deleted it with the claim. Read, not taken from the index, which
        may be behind across a change of leader and hold that PVC still where the claim's
        own is now: orphaned, the claim's own would be left behind for good."""
        if indexed is None or view.uid not in indexed.others:
            return False
        stored = await self.api.read_pvc(view.namespace, view.name)
        return stored is not None and view.uid in pvc_view(stored).others

    async def delete(self, claim: TrackedClaim, view: EvcView, decision: lifecycle.Decision,
                     logger: Logger, *, orphan: bool = False) -> Outcome:
        """Delete the claim (`orphan`: keeping its dependents, see kube.delete_evc)."""
        try:
            await self.api.delete_evc(view.namespace, view.name, view.uid,
                                      view.resource_version, orphan)
        except NotFound:
            return Outcome(gone=True)
        except (Forbidden, Invalid) as error:
            await self._refused(claim, view, refusal(error), logger)
            return Outcome(decided=False, again=True)  # to say it in status
        except Conflict:
            body = await self.api.read_evc(view.namespace, view.name)
            if body is None:
                return Outcome(gone=True)
            if self.refresh(body, view.uid):
                logger.info("The claim changed just before deletion; deciding again.")
                return Outcome(decided=False, again=True)
            logger.info("The claim changed just before deletion; deciding again when its "
                        "change is seen.")
            return Outcome(decided=False, wake_at=self.clock() + CONFLICT_RETRY)
        metrics.DELETIONS.labels(str(decision.countdown)).inc()
        if decision.deletes_at is not None:
            lateness = (self.clock() - decision.deletes_at).total_seconds()
            metrics.DELETION_LATENESS.observe(max(0.0, lateness))
        await self.announce(view, status.deletion_event(
            decision, expiry_period=view.claim.expiry_period,
            grace_period=view.claim.grace_period, dry_run=False), logger)
        return Outcome(gone=True)

    async def _refused(self, claim: TrackedClaim, view: EvcView, why: str,
                       logger: Logger) -> None:
        before = claim.delete_refused
        times = 1 if before is None else before.times + 1
        delay = REJECTED_RETRY[min(times, len(REJECTED_RETRY)) - 1]
        claim.delete_refused = DeleteRefusal(
            why, times, self.clock() + datetime.timedelta(seconds=delay))
        message = _said(why)
        if times == 1:
            await self.announce(view, status.Event("Warning", status.DELETION_REFUSED,
                                                   message), logger)
        else:
            logger.warning("%s: %s", status.DELETION_REFUSED, message)


def held(claim: TrackedClaim, decision: lifecycle.Decision, now: datetime.datetime) -> bool:
    """Whether a due deletion waits, refused, for its time to try again (and forgets a
    refusal once the claim is no longer due)."""
    if decision.action is not Action.DELETE:
        claim.delete_refused = None
    return claim.delete_refused is not None and now < claim.delete_refused.retry_at


def refused_message(claim: TrackedClaim, decision: lifecycle.Decision) -> str | None:
    """Why its deletion, due, waits: the API server refused it (None: it does not)."""
    refused = claim.delete_refused
    return (_said(refused.why) if refused is not None and decision.action is Action.DELETE
            else None)


def _said(why: str) -> str:
    *first, last = (_seconds(delay) for delay in REJECTED_RETRY)
    return (f"Due, but the API server refused to delete it: {why}. Tried again after "
            f"{', '.join(first)}, then every {last}, until the refusal is lifted (an "
            f"admission policy or webhook on deletes, or the operator's permissions).")


def _seconds(delay: int) -> str:
    return f"{delay // 60} minutes" if delay >= 120 and delay % 60 == 0 else f"{delay} s"
