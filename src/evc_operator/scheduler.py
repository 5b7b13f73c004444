"""One scheduler for all EVCs: drives work queue -> per-claim reconcile -> outcome.

Kopf's per-object timers and daemons would put a finalizer on every EVC (and a task with
a body per object); instead, one asyncio task takes keys from a work queue
(workqueue.py), has each claim reconciled (reconcile.py), and puts the outcome back into
the queue: when to look again, or a retry after a failure. Handlers only `observe_evc()`
and `poke()`. The claims are tracked in tracked.py; podchanges.py says which of them a
pod's change concerns; freshness.py says when a deletion may rest on a view; the
countdown log and memory release are small tasks of their own.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Mapping
from typing import Any, cast

import kopf

from evc_operator import countdowns, lifecycle, memory, metrics
from evc_operator.errors import describe
from evc_operator.evc import EvcView, Key
from evc_operator.freshness import PROOF_MAX_AGE, Freshness, Lister, PodList
from evc_operator.gate import Gated, NotLeading, Term
from evc_operator.limiter import DEFAULT_BOUNDS, AdaptiveLimit, Bounds, Measured
from evc_operator.outbox import Outbox, Pending, flush
from evc_operator.outcome import Outcome
from evc_operator.podchanges import PodChanges
from evc_operator.reconcile import ClaimReconciler
from evc_operator.resources import API_VERSION, KIND
from evc_operator.seams import ClaimApi, PodIndex
from evc_operator.settings import Settings
from evc_operator.timestamps import utcnow
from evc_operator.tracked import Tracked, TrackedClaim, key_of
from evc_operator.users import PodView
from evc_operator.workqueue import Timers, WorkQueue

log = logging.getLogger(__name__)
# How soon a claim whose write found the Lease lapsed, unknown to set_active, is retried.
NOT_LEADING_RETRY = datetime.timedelta(seconds=1)
# How long a stopping operator goes on posting the Events that waited (outbox.py).
FLUSH_SECONDS = 5.0


class Scheduler:
    def __init__(self, api: ClaimApi, settings: Settings, kopf_settings: kopf.OperatorSettings,
                 index: PodIndex, lister: Lister, *,
                 clock: Callable[[], datetime.datetime] = utcnow,
                 latest: Callable[[], datetime.datetime] | None = None,
                 bounds: Bounds = DEFAULT_BOUNDS,
                 ahead: Callable[[str], None] | None = None) -> None:
        self.settings = settings
        self.kopf_settings = kopf_settings
        self.index = index
        self.clock = clock
        self.claims = Tracked(settings)
        self.queue: WorkQueue[Key] = WorkQueue(clock, fair_by=_namespace)  # fair by namespace
        # When to open the proof's short watches for a deletion, then to start proving.
        self.proofs: Timers[Key] = Timers()
        self.freshness = Freshness(index.synced, lister, clock, ahead)
        self.memory = memory.AfterBursts()
        self.active = True  # False while another replica holds the Lease: then only watch
        self.term = Term()  # leadership changes counted: no write from an earlier term's work
        # Claims reconciled at once: as many as the API server's latency allows.
        self.limit = AdaptiveLimit(bounds, report=metrics.RECONCILE_LIMIT.set)
        self._tasks: set[asyncio.Task[None]] = set()
        self.outbox = Outbox()  # Events that give way to claims waiting for a slot
        # Leadership.leading, when replicas elect one (handlers.py): whether this replica's
        # Lease is surely still valid at this moment. Every write asks (gate.py).
        self.leading: Callable[[], bool] = _always
        self.reconciler = ClaimReconciler(Measured(Gated(api, self.may_act), self.limit),
                                          index, self.freshness,
                                          settings, clock, self.logger_for, self._remember,
                                          waiting=self._unslotted, defer=self._defer,
                                          latest=latest, refresh=self.claims.refresh)
        # Which claims a pod's change concerns, and when to look at them again.
        self.pod_changes = PodChanges(self.claims, self.queue, clock, self.reconciler.latest)

    # --- what handlers call --------------------------------------------------------------

    @property
    def pods_view_complete(self) -> bool:
        return self.freshness.pods_view_complete

    @pods_view_complete.setter
    def pods_view_complete(self, complete: bool) -> None:
        self.freshness.pods_view_complete = complete

    def observe_evc(self, event_type: str | None, body: Mapping[str, Any]) -> None:
        if event_type == "DELETED":
            held = self.claims.get(key_of(body))
            uid = body["metadata"].get("uid")
            if held is not None and uid and held.view.uid != uid:
                return  # another claim of that name is held now: not the one deleted
            self.forget(key_of(body))
        elif self.claims.observe(body):
            self.poke(key_of(body))

    def forget(self, key: Key) -> None:
        self.claims.forget(key)
        self.queue.forget(key)
        self.proofs.pop(key)

    def poke(self, key: Key) -> None:
        if key in self.claims:
            self.queue.add(key)

    def set_active(self, active: bool) -> None:
        """Leadership changed: a new leader looks at every claim again, at once.

        What this process learned while it led goes when it stops leading: another leader
        may write facts it never saw (a user, an end of use), and on leading again it must
        believe those, sealed, as a process just started does (`lifecycle.believed`), not
        set its own older ones against them (`lifecycle.trusted`)."""
        self.active = active
        self.term.next()  # work begun before writes nothing now (gate.py)
        if active:
            for key in self.claims:
                self.poke(key)
        else:
            self.claims.forget_decisions(self.reconciler.latest())
            self._drop_events("another replica leads now")
        self.queue.wake()

    def may_act(self) -> bool:
        """Whether this replica may write now: it leads, and its Lease is surely valid."""
        return self.active and self.leading() and self.term.holds()

    def _remember(self, body: Mapping[str, Any], uid: str) -> bool:
        """Our own write's result, kept unless leadership was lost while it was under way
        (`set_active`: what this process wrote then is no fact to set against another
        leader's record); whether the claim's view is now this one."""
        return self.active and self.claims.remember(body, uid)

    def namespace_synced(self, namespace: str) -> None:
        """A namespace's pods and PVCs were (re)listed: look at its claims again."""
        for key in self.claims:
            if key[0] == namespace:
                self.poke(key)

    def ready(self) -> bool:
        """Every claim known and every namespace with claims fully listed."""
        return self.pods_view_complete and self.index.all_synced()

    def poke_for_pod(self, namespace: str, claims: Iterable[str],
                     change: tuple[PodView | None, PodView | None] | None = None) -> None:
        """A pod changed (before and after; None: not known): look again at the claims
        whose users it may change (podchanges.py)."""
        self.pod_changes.seen(namespace, claims, change, active=self.active)

    # --- what metrics and logs read ------------------------------------------------------

    def countdowns(self) -> list[tuple[Key, lifecycle.Decision]]:
        return [(record.view.key, record.countdown) for record in self.claims.records()
                if record.countdown is not None]

    def phases(self) -> list[lifecycle.Phase | None]:
        """Each claim's recorded phase; Deleting once its deletion has begun (a finalizer
        of someone else's holds it): the operator's own deletion is one write, after which
        the claim is gone."""
        return [lifecycle.Phase.DELETING if record.view.deleting
                else record.view.claim.recorded_phase for record in self.claims.records()]

    def reasons(self) -> list[str | None]:
        """Each claim's status.reason (None: nothing to flag)."""
        return [record.view.reason for record in self.claims.records()]

    def unwatched(self) -> int:
        """Claims whose status has the UnwatchedController condition."""
        return sum(1 for record in self.claims.records() if record.view.unwatched)

    def tell_countdowns(self) -> None:
        if self.active:  # else the leader tells the countdowns
            countdowns.tell(self.countdowns(), self.clock(), self.logger_for_key)

    async def log_countdowns(self) -> None:
        await countdowns.log_every(self.settings.countdown_interval, self.tell_countdowns)

    # --- the loop ------------------------------------------------------------------------

    async def run(self) -> None:
        """Reconcile what the queue hands out, wake at deadlines; runs until cancelled."""
        try:
            while True:
                if not self.active:
                    await self.queue.wait(timers=False)  # set_active() wakes us
                    continue
                self._prefetch(self.proofs.pop_due(self.clock()))
                for key, added_at in self.queue.take(self.limit.free()):
                    self.limit.take()
                    self._spawn(self._work(key, added_at))
                self.limit.backlogged = self.queue.pending() > 0
                if not self.limit.waiting():  # the slots no claim waits for
                    for pending in self.outbox.take(self.limit.free()):
                        self.limit.take()
                        self._spawn(self._post(pending))
                metrics.EVENTS_WAITING.set(len(self.outbox))
                await self.queue.wait(also=self._earliest(
                    self.proofs.earliest(), self.memory.when_quiet(self.queue.idle())))
        finally:  # its reconciliations end before the watches and the API go under them
            for task in self._tasks:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            self.freshness.close()
            self._drop_events("the operator stops")

    def _earliest(self, proof: datetime.datetime | None,
                  release_in: float | None) -> datetime.datetime | None:
        """When the loop must turn without news: the next proof, or the memory's release."""
        moments = [moment for moment in (proof, None if release_in is None else
                                         self.clock() + datetime.timedelta(seconds=release_in))
                   if moment is not None]
        return min(moments, default=None)

    async def reconcile(self, key: Key) -> None:
        """Reconcile one claim now and apply the outcome."""
        claim = self.claims.get(key)
        if claim is not None:
            with self.term.begun():
                outcome = await self.reconciler.reconcile(claim)
            self._apply(key, claim, outcome)

    def _apply(self, key: Key, claim: TrackedClaim, outcome: Outcome | None) -> None:
        if outcome is None:
            return
        if outcome.gone:
            if self.claims.get(key) is claim:  # not another claim of that name, made since
                self.forget(key)
            return
        if outcome.again:
            self.poke(key)
        if not outcome.decided:
            if outcome.wake_at is not None:
                self.queue.add_after(key, outcome.wake_at)
            return
        claim.countdown = outcome.countdown
        if outcome.countdown is not None and outcome.countdown.deletes_at is not None:
            self.proofs.set(key, self.freshness.anticipation_due(outcome.countdown.deletes_at))
        else:
            self.proofs.pop(key)
        self.queue.add_after(key, outcome.wake_at)

    def _prefetch(self, keys: Iterable[Key]) -> None:
        """Start proving the pods of the namespaces where deletions are due, and a second
        before, open the short watches those proofs will wait on (barrier.py)."""
        if not self.pods_view_complete or self.settings.dry_run:
            return
        now = self.clock()
        for key in keys:
            claim = self.claims.get(key)
            if claim is None or claim.countdown is None:
                continue
            deletes_at = claim.countdown.deletes_at
            if deletes_at is None:
                continue
            if now < self.freshness.proof_due(deletes_at):
                self.freshness.anticipate(key[0])
                self.proofs.set(key, self.freshness.proof_due(deletes_at))
            else:
                self.freshness.prepare(key[0], deletes_at)
        self.freshness.forget_older_than(now - PROOF_MAX_AGE)

    async def _work(self, key: Key, added_at: float | None) -> None:
        self.memory.worked()
        failed = False
        try:
            await self.reconcile(key)
            if added_at is not None:
                metrics.REACTION.observe(time.monotonic() - added_at)
        except asyncio.CancelledError:
            raise
        except NotLeading as error:
            # Not ours to do: when this replica leads again, it looks at every claim. Its
            # Lease lapsed while still held (a renewal answered late) is told to nobody:
            # looked at again soon, or the claim waits for a change that may never come.
            self.logger_for_key(key).debug("%s.", error)
            if self.active:
                self.queue.add_after(key, self.clock() + NOT_LEADING_RETRY)
        except Exception as error:
            failed = True
            metrics.RECONCILE_FAILURES.inc()
            delay = self.queue.done(key, failed=True)
            self.logger_for_key(key).warning("Reconciling failed (%s); retrying in %.0f s.",
                                             describe(error), delay)
        finally:
            self.limit.release()
            if not failed:
                self.queue.done(key)

    async def _defer(self, pending: Pending) -> bool:
        """Whether an Event waits in the outbox: a Normal one, while claims wait for a slot
        (at the loop's last turn, or in line to get theirs back). A Warning goes out at
        once: it tells of bad input or a refusal, and a crash must not lose it. When the
        oldest waiting is overdue, this reconciliation posts it in its place. Work of an
        earlier leadership term leaves none (posted at once instead, so refused: gate.py)."""
        if (pending.event.type == "Warning" or not self.limit.waiting()
                or not self.term.holds()):
            return False
        instead = self.outbox.offer(pending)
        if instead is pending:
            return False  # no room: its reconciliation posts it
        self.queue.wake()
        if instead is not None:
            await self._post_now(instead)
        return True

    async def _post_now(self, pending: Pending) -> None:
        await self.reconciler.announcer.post(pending, self.logger_for_key(
            (pending.namespace, pending.name)))

    async def _post(self, pending: Pending) -> None:
        try:
            await self._post_now(pending)
        finally:
            self.limit.release()
            self.queue.wake()  # the next Event waiting may take the slot

    async def flush_events(self, seconds: float = FLUSH_SECONDS) -> None:
        """The operator stops: post the Events still waiting, for at most `seconds`
        (a leader only: one that lost the Lease dropped them already)."""
        waiting = self.outbox.take(len(self.outbox)) if self.active else []
        await flush(waiting, self._post_now, int(self.limit.limit), seconds)

    def _drop_events(self, why: str) -> None:
        dropped = self.outbox.drop()
        metrics.EVENTS_WAITING.set(0)
        if dropped:
            log.warning("%d Events not posted: %s (the log has them).", dropped, why)

    async def _unslotted(self, waiting: Awaitable[PodList | None]) -> PodList | None:
        """Give the reconciliation's slot back while it waits for a fresh list: the claims
        due in a namespace then wait together, for one list, instead of taking every slot
        and leaving the list of the next wave to be shared by almost none."""
        self.limit.release()
        self.queue.wake()  # its slot may serve another claim meanwhile
        proven = False
        try:
            view = await waiting
            proven = True
            return view
        finally:
            began = time.monotonic()
            try:
                await self.limit.acquire()
            except asyncio.CancelledError:  # held again, with no wait: `_work` gives it back
                self.limit.take()
                raise
            if proven:  # a failed proof ends the deletion: its wait is no deletion's
                metrics.DELETION_SLOT_WAIT.observe(time.monotonic() - began)

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # --- logs ----------------------------------------------------------------------------

    def logger_for(self, view: EvcView) -> logging.LoggerAdapter[Any]:
        """A logger that names the claim (Kopf's k8s_ref), as Kopf's own logs do."""
        body = {"apiVersion": API_VERSION, "kind": KIND, "metadata": {
            "name": view.name, "namespace": view.namespace, "uid": view.uid}}
        return kopf.LocalObjectLogger(body=kopf.Body(cast(Any, body)),
                                      settings=self.kopf_settings)

    def logger_for_key(self, key: Key) -> logging.LoggerAdapter[Any]:
        claim = self.claims.get(key)
        return self.logger_for(claim.view) if claim else logging.LoggerAdapter(log, {})


def _always() -> bool:
    return True


def _namespace(key: Key) -> str:
    return key[0]
