"""One claim, one reconciliation: read its facts, ask the pure core, apply the answer.

`ClaimReconciler.reconcile` makes the PVC match the EVC (pvcsync.py), decides the claim's
phase and deadline (lifecycle.py), writes status and Events (status.py, announcer.py) or
deletes the claim, and returns an `Outcome`: when to look again, the countdown that runs,
or that the claim is gone. It keeps no schedule: the scheduler applies outcomes to its
work queue. Whether a view is fresh enough to delete on is asked of `freshness`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import functools
import logging
from collections.abc import Awaitable, Callable, Collection, Mapping
from typing import Any

from evc_operator import confirm, deletion, lifecycle, metrics, seal, status, unwatched
from evc_operator.announcer import Announcer
from evc_operator.budget import UsersBudget
from evc_operator.errors import describe
from evc_operator.evc import EvcView
from evc_operator.freshness import Freshness, PodList
from evc_operator.gate import NotLeading
from evc_operator.lifecycle import Action
from evc_operator.outbox import Pending
from evc_operator.outcome import Outcome
from evc_operator.pvcsync import PvcSync
from evc_operator.seams import ClaimApi, PodIndex
from evc_operator.settings import Settings
from evc_operator.tracked import TrackedClaim
from evc_operator.users import PodView, users_of
from evc_operator.workqueue import backoff

log = logging.getLogger(__name__)
Logger = logging.LoggerAdapter[Any]
# How long a due claim waits, while Kopf has not listed every EVC, before it is looked at again.
NOT_LISTED_YET = datetime.timedelta(seconds=1)
# A claim decided on a proof's view that its informers have not caught up with yet is
# looked at again this soon: once they have, the index decides; nothing else may ask (the
# changes that bring them that far need not be this claim's).
AHEAD_RECHECK = datetime.timedelta(seconds=1)


class ClaimReconciler:
    def __init__(self, api: ClaimApi, index: PodIndex, freshness: Freshness,
                 settings: Settings, clock: Callable[[], datetime.datetime],
                 logger_for: Callable[[EvcView], Logger],
                 remember: Callable[[Mapping[str, Any], str], bool], *,
                 waiting: Callable[[Awaitable[PodList | None]],
                                   Awaitable[PodList | None]] | None = None,
                 budget: UsersBudget | None = None,
                 defer: Callable[[Pending], Awaitable[bool]] | None = None,
                 latest: Callable[[], datetime.datetime] | None = None,
                 refresh: Callable[[Mapping[str, Any], str], bool] | None = None) -> None:
        self.api = api
        self.index = index
        self.pvcs = PvcSync(api, index, clock)
        self.freshness = freshness
        self.settings = settings
        self.clock = clock  # the API server's clock, the early way (lifecycle.decide)
        self.latest = latest or clock  # and the late way
        self.logger_for = logger_for
        self.remember = remember  # our own write's result: the freshest view of an EVC
        # Its Events, and the same words in the log: now, or left to post later (defer).
        self.announcer = Announcer(api, settings, clock, defer)
        # A read of the claim, not our own write: its view only, never facts we decided.
        self.deleter = deletion.Deleter(api, clock, refresh or _refreshes_nothing,
                                        self.announcer.announce)
        self.budget = budget or UsersBudget()
        # How to wait for a fresh view of pods (the scheduler gives its slot back meanwhile).
        self.waiting = waiting or _as_is

    async def reconcile(self, claim: TrackedClaim) -> Outcome | None:
        """Reconcile one claim; None when it was not looked at (gone, being deleted by
        someone, or its namespace not listed yet: then it is looked at once it is)."""
        view = claim.view
        if view.deleting or not self.freshness.may_decide(view.namespace):
            return None
        logger = self.logger_for(view)
        previous = view.status
        had_pvc = self._has_own_pvc(view)
        if await self.pvcs.gone_with_its_pvc(view, previous):
            return Outcome(gone=True)
        pvc_condition, events = await self.pvcs.sync(claim, view, previous, logger)

        now, latest = self.clock(), self.latest()
        trusted = self._trusted(claim, view, had_pvc, now, latest)
        dry_run = self.settings.dry_run
        users = self._users(claim, view, self._ahead(claim))
        decision = lifecycle.decide(trusted, users, now, dry_run=dry_run, latest=latest)
        # A deletion refused for good waits for its time to try again, said in status.
        held = deletion.held(claim, decision, now)
        if decision.action is Action.DELETE and not held:
            if not self.freshness.pods_view_complete:
                return Outcome(wake_at=now + NOT_LISTED_YET, decided=False)
            # The index may lag behind: ask the API server itself before anything final
            # (or have it proven current: then `fresh` is None and the index decides).
            assert decision.deletes_at is not None  # a deletion is due at its deadline
            # A view made already keeps the slot (given back, it would queue again).
            waiting = (_as_is if self.freshness.ready(view.namespace, decision.deletes_at)
                       else self.waiting)
            fresh = await waiting(self.freshness.for_deletion(view.namespace,
                                                              decision.deletes_at))
            # The proof may take seconds: what is written now is sealed as of now (sealed
            # as of before, the record failed `seal.written_in_time` after a restart).
            now, latest = self.clock(), self.latest()
            users = self._users(claim, view, fresh)
            decision = lifecycle.decide(trusted, users, now, dry_run=dry_run, latest=latest)
            claim.ahead = fresh if fresh is not None and fresh.behind() else None
        if decision.action is Action.DELETE and not held:
            orphan = await self.deleter.orphaning(view, self.index.pvc(view.key))
            return await self.deleter.delete(claim, view, decision, logger, orphan=orphan)
        # The users gone since, in this decision (_users): a copy, for more may leave while
        # its status is written.
        taken = dict(claim.departed or {})
        # The phase told last: decided (its write may have failed) or stored. Told again
        # at each try of a status write that fails, an Event said the same thing again.
        told = (claim.untold[0] if claim.untold is not None
                else (claim.ours() or view.claim).recorded_phase)

        claim.decided(decision)
        refused = deletion.refused_message(claim, decision)
        said = claim.unwritten or previous  # a write that failed: its Warnings were told
        tells = unwatched.tell(users, said, now,
                               functools.partial(self.index.controller_seen, view.namespace),
                               paused=view.claim.keep or dry_run)
        conditions = [*status.lifecycle_conditions(decision, keep=view.claim.keep,
                                                   dry_run=dry_run, problems=view.problems,
                                                   limited=view.limited, refused=refused),
                      pvc_condition, *filter(None, [tells.condition])]
        facts = (str(decision.phase), decision.unused_since)
        new_status = status.build_status(
            decision, conditions, generation=view.generation, previous=previous, now=now,
            seal=seal.seal(self.settings.signing_key, view.uid, *facts, now))
        changed = status.status_changed(new_status, previous)
        budgeted = self._budgeted(claim, view, new_status, previous, changed, now)
        stored_seal = previous.get("seal")
        # A confirmation owed now stays owed until a write or a read makes it (cleared
        # below before either; a write that failed left the record unconfirmed).
        sealed_before = claim.sealed_at
        owed = claim.confirm_after is not None and now >= claim.confirm_after
        # A change of users alone that waits for its budget changes no fact: a record due
        # for confirmation is confirmed meanwhile (left due, the claim was looked at again
        # and again at once until the budget's moment).
        if confirm.due(claim, self.settings.signing_key, facts, stored_seal,
                       changed and budgeted is None, now):  # the second write: a read
            claim.confirm_after = None
            write = not await confirm.still_as_written(self.api, view, stored_seal,
                                                       self.remember)
            if write:
                claim.sealed_at = now
        else:
            write = budgeted is None and self._sealing(claim, view, facts, previous, changed,
                                                       now)
            if (budgeted is not None and claim.confirm_after is not None
                    and claim.confirm_after <= now):
                claim.confirm_after = budgeted  # made with the write that waits, not at once
        events += status.transition_events(decision, told,
                                           expiry_period=view.claim.expiry_period,
                                           grace_period=view.claim.grace_period)
        events += status.spec_warnings(view.problems, said)
        events += status.limit_warnings(view.limited, said)
        events += tells.warnings
        # The status write and its Events go out together (unless they wait: outbox.py),
        # not one after another. An Event never fails the reconciliation.
        written = self._write_status(view, new_status, write)
        try:
            failed, *_ = await asyncio.gather(
                written, *(self.announcer.announce(view, event, logger) for event in events))
        except NotLeading:  # neither written nor told: told from the same phase next time
            claim.untold = (told,)
            raise
        claim.untold = None
        # Taken in, written or not (`decided` keeps the facts either way): those still
        # running when they left made it InUse; decided again now without them, their use
        # ends (their grace counts from now). Kept while writes failed, the claim stayed
        # InUse with no countdown for as long as they did.
        claim.taken_in(taken)
        again = any(one.active for one in taken.values())
        claim.unwritten = None if failed is None else status.warned(new_status)
        if failed is None:
            claim.status_failures = 0
        else:
            # Tried again with backoff; the decision stands meanwhile (`decided`), its
            # deadline kept (a deletion needs no status write): a failure raised lost it,
            # and the deletion waited for the backoff, up to a minute late.
            claim.status_failures += 1
            if owed and claim.confirm_after is None:  # the seal stored is still the one
                claim.sealed_at = sealed_before  # sealed before: it is tried again
                claim.confirm_after = now + datetime.timedelta(
                    seconds=backoff(claim.status_failures))
            metrics.RECONCILE_FAILURES.inc()
            logger.warning("Writing the status failed (%s); trying again in %.0f s.",
                           describe(failed), backoff(claim.status_failures))

        if (decision.action is Action.REPORT_DRY_RUN
                and decision.deletes_at != claim.reported_dry_run):
            claim.reported_dry_run = decision.deletes_at
            metrics.DRY_RUN_DELETIONS.labels(str(decision.countdown)).inc()
            await self.announcer.announce(view, status.deletion_event(
                decision, expiry_period=view.claim.expiry_period,
                grace_period=view.claim.grace_period, dry_run=True), logger)

        pending = decision.deletes_at is not None and decision.action is Action.NONE
        wake_at = decision.wake_at
        refused_retry = claim.delete_refused.retry_at if claim.delete_refused else None
        for later in (claim.confirm_after, budgeted, claim.rejected_retry(), refused_retry,
                      tells.settles_at):
            if later is not None:
                wake_at = later if wake_at is None else min(wake_at, later)
        for failures in (claim.refusals, claim.status_failures if failed else 0):
            if failures:  # its PVC or status was refused: try again, later each time
                retry = now + datetime.timedelta(seconds=backoff(failures))
                wake_at = retry if wake_at is None else min(wake_at, retry)
        if claim.ahead is not None:  # decided on a proof's view: again once caught up
            recheck = now + AHEAD_RECHECK
            wake_at = recheck if wake_at is None else min(wake_at, recheck)
        return Outcome(wake_at=wake_at, countdown=decision if pending else None, again=again)

    def _has_own_pvc(self, view: EvcView) -> bool:
        pvc = self.index.pvc(view.key)
        return pvc is not None and view.uid in pvc.controllers

    def _trusted(self, claim: TrackedClaim, view: EvcView, had_pvc: bool,
                 now: datetime.datetime, latest: datetime.datetime) -> lifecycle.Claim:
        """The facts to decide on. Those this process decided itself, if any (against a
        status rewritten since: the later of the two). Otherwise those stored, if sealed
        by the operator (a restart, a new leader: the countdown resumes exactly), or if
        the claim is new (no status, no PVC of its own yet); else the later way."""
        ours = claim.ours()
        recorded = view.claim
        if ours is not None and self._overtaken(claim, view):
            # The operator sealed this record after this process last sealed its own:
            # another leader's, while this replica stood by (knowing it or not). Its facts
            # are newer than ours; believed as a process just started believes them.
            claim.written = ours = None
        if ours is None:
            # New: nothing written yet. A status with no phase but anything else (the
            # operator always writes one) had its record taken out: the later way.
            new = recorded.recorded_phase is None and not had_pvc and not view.status
            verified = new or self._sealed_by_operator(view)
            if verified and not new and not seal.written_in_time(view.stored_seal,
                                                                 view.status_written):
                # The operator's record, but written later than it was sealed: an older
                # record put back, perhaps while the claim was in use. Not believed.
                verified = False
                log.warning("%s/%s: its stored status was sealed by this operator at %s but "
                            "written at %s (a record put back by someone, or a write that "
                            "took that long); its deadline counts the later way.",
                            view.namespace, view.name, seal.sealed_at(view.stored_seal),
                            view.status_written)
            elif not verified:
                log.warning("%s/%s: its stored status is not sealed by this operator "
                            "(written by someone else, by an older version, or under "
                            "another key); its deadline counts the later way.",
                            view.namespace, view.name)
            elif not new:
                confirm.adopt(claim, view.stored_seal, now)
            return _with_unseen_end(
                claim, lifecycle.believed(recorded, verified=verified, now=latest))
        trusted = lifecycle.trusted(recorded, ours)
        if trusted is not recorded:
            log.warning("%s/%s: its stored status is not what this operator decided last "
                        "(a write that failed, or someone else's); keeping the later facts.",
                        view.namespace, view.name)
        return _with_unseen_end(claim, trusted)

    def _overtaken(self, claim: TrackedClaim, view: EvcView) -> bool:
        """Whether the stored record is the operator's, written in time, and sealed later
        than this process last sealed the claim's status."""
        moment = seal.sealed_at(view.stored_seal)
        return (moment is not None and claim.sealed_at is not None
                and moment > claim.sealed_at and self._sealed_by_operator(view)
                and seal.written_in_time(view.stored_seal, view.status_written))

    def _sealed_by_operator(self, view: EvcView) -> bool:
        """Whether the stored status carries the operator's seal of exactly its facts."""
        recorded = view.claim
        return seal.verify(self.settings.signing_key, view.uid, recorded.recorded_phase,
                           recorded.recorded_unused_since, view.stored_seal)

    @staticmethod
    def _ahead(claim: TrackedClaim) -> PodList | None:
        """The proof's view the claim was last decided on, if the informers still lag
        behind it. Decided on the lagging index instead, a user the proof saw (a pod
        created a moment before the deadline, its watch event not in yet) would vanish
        again: the claim, just written InUse, written Idle with a new countdown, and InUse
        once more when the informer catches up. The proof's view is the later one; it
        is kept until every informer has come as far, then the index decides again."""
        if claim.ahead is not None and not claim.ahead.behind():
            claim.ahead = None
        return claim.ahead

    def _users(self, claim: TrackedClaim, view: EvcView,
               fresh: PodList | None = None) -> list[lifecycle.PodUse]:
        """Users from the index, or from a fresh view of the namespace's pods."""
        mounting: Collection[PodView]
        in_namespace: Collection[PodView]
        if fresh is not None:
            mounting, in_namespace = fresh.mounting(view.name), fresh.pods
        else:
            mounting = self.index.pods_of_claim(view.key)
            in_namespace = self.index.pods_in(view.namespace) if view.selector else ()
        # Kept as a sorted tuple (most claims have a user or two, and a frozenset takes 216
        # bytes however few), looked up in a set (a selector may match thousands).
        seen = frozenset(claim.seen_users)
        users = users_of(view.name, view.selector, mounting, in_namespace)
        if claim.departed:
            # Users gone from the index since the last decision, judged as last seen
            # (tracked.py), unless one of that name is there now.
            present = {user.name for user in users}
            gone = [held for name, held in claim.departed.items() if name not in present]
            users += users_of(view.name, view.selector, gone, gone)
        claim.seen_users = tuple(sorted({user.name for user in users}))
        return [dataclasses.replace(user, known=user.name in seen) for user in users]

    def _budgeted(self, claim: TrackedClaim, view: EvcView, new_status: Mapping[str, Any],
                  previous: Mapping[str, Any], changed: bool,
                  now: datetime.datetime) -> datetime.datetime | None:
        """When a status write that only says who the users are may go, if not now: its
        namespace's budget for those is spent (budget.py). Any other write goes now."""
        if not (changed and status.only_users_changed(new_status, previous)):
            claim.write_after = None
            return None
        if claim.write_after is None:
            claim.write_after = self.budget.reserve(view.namespace, now)
        if claim.write_after > now:
            return claim.write_after
        claim.write_after = None
        return None

    def _sealing(self, claim: TrackedClaim, view: EvcView,
                 facts: tuple[str | None, datetime.datetime | None],
                 previous: Mapping[str, Any], changed: bool, now: datetime.datetime) -> bool:
        """Whether to write `new_status`, sealed at `now`: if anything in it changes, if
        the stored seal does not hold for its facts, or if a record is due to be written
        once more (seal.confirm_after: so that no record it superseded, put back, is
        believed after a restart)."""
        key, stored = self.settings.signing_key, previous.get("seal")
        due = claim.confirm_after is not None and now >= claim.confirm_after
        if not (changed or due or not seal.verify(key, view.uid, *facts, stored)):
            return False
        recorded = (view.claim.recorded_phase and str(view.claim.recorded_phase),
                    view.claim.recorded_unused_since)
        holds = seal.verify(key, view.uid, *recorded, stored)
        if due:
            claim.confirm_after = None
        sealed = [moment for moment in (claim.sealed_at, holds and seal.sealed_at(stored))
                  if isinstance(moment, datetime.datetime)]
        again = seal.confirm_after(recorded, facts, max(sealed, default=None), now)
        if again is not None:
            claim.confirm_after = max(again, claim.confirm_after or again)
        claim.sealed_at = now
        return True

    async def _write_status(self, view: EvcView, new_status: Mapping[str, Any],
                            write: bool) -> Exception | None:
        """The failure of the write, if it failed (one that may not write, not leading,
        raises); None if written, or if there was nothing to write."""
        if not write:
            return None
        try:
            body = await self.api.patch_evc_status(view.namespace, view.name, new_status)
        except NotLeading:
            raise
        except Exception as error:
            return error
        self.remember(body, view.uid)
        return None


def _with_unseen_end(claim: TrackedClaim, facts: lifecycle.Claim) -> lifecycle.Claim:
    """The facts with the end of use this replica knew while it did not lead (tracked.py),
    if they lack it: a use the last leader may not have recorded."""
    kept = lifecycle.with_end_of_use(facts, claim.unseen_end)
    if kept is not facts:
        log.info("%s/%s: in use until %s as this replica saw while it did not lead, which "
                 "its record lacks; the grace counts from then.", claim.view.namespace,
                 claim.view.name, kept.recorded_unused_since)
    return kept


async def _as_is(waiting: Awaitable[PodList | None]) -> PodList | None:
    return await waiting


def _refreshes_nothing(_body: Mapping[str, Any], _uid: str) -> bool:
    return False
