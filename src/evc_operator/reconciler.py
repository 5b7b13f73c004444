"""One scheduler for all EVCs: reconciles what changed and wakes at deadlines.

Kopf's per-object timers and daemons would put a finalizer on every EVC (and a
task with a body per object); instead, one asyncio task keeps a map of
deadlines and a set of keys to look at. Handlers only `observe_evc()` and
`poke()`; everything that changes the cluster goes through `kube`, every
decision through the pure modules (`lifecycle`, `claims`, `status`, `users`).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime
import heapq
import logging
import time
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Collection,
    Coroutine,
    Iterable,
    Mapping,
)
from typing import Any, Protocol, cast

import kopf
import orjson

from evc_operator import kube, lifecycle, memory, metrics, status
from evc_operator.claims import PvcStep, PvcView, desired_pvc, plan_pvc, pvc_view
from evc_operator.evc import EvcView, evc_view
from evc_operator.lifecycle import Action
from evc_operator.resources import API_VERSION, KIND
from evc_operator.settings import Settings
from evc_operator.users import PodSnapshot, PodView, users_of

Key = tuple[str, str]  # (namespace, name)
MAX_CONCURRENT = 16  # claims reconciled at once
RETRY_DELAYS = (1.0, 2.0, 5.0, 10.0, 30.0, 60.0)
COUNTDOWN_LOG_LINES = 50  # countdowns logged one by one each interval; the rest summed up
# Proving that the pods of a namespace are current takes the API server a second or two:
# it starts this long before a deadline, so the deletion need not wait for it.
PROOF_LEAD = datetime.timedelta(seconds=3)
# The oldest proof a deletion may rest on, and only while the informer's watch has run on
# unbroken since it (the live view covers the time after). The proof a lead starts is
# this old at most, with a second to spare for the deletion's own turn.
PROOF_MAX_AGE = datetime.timedelta(seconds=5)
PROOF_SLACK = datetime.timedelta(seconds=1)
# After a burst of at least this many reconciliations, once all is quiet, the heap's free
# pages go back to the system (memory.py), at most every RELEASE_EVERY seconds.
RELEASE_AFTER = 100
RELEASE_EVERY = 30.0

LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"

log = logging.getLogger(__name__)


class Lookup(Protocol):
    """What the scheduler reads pods and PVCs through (a mapping of key -> values)."""

    def get(self, key: Any, default: Any = ..., /) -> Any: ...


def _always(*_: Any) -> bool:
    return True


@dataclasses.dataclass
class Indexes:
    """The live views of pods and PVCs (informer.Watched), per namespace."""

    pods_by_claim: Lookup  # (namespace, claimName) -> [PodView]
    pods_by_namespace: Lookup  # namespace -> [PodView]
    pvcs: Lookup  # (namespace, name) -> [PvcView]
    synced: Callable[[str], bool] = _always  # whether a namespace's views are complete
    all_synced: Callable[[], bool] = _always
    # A namespace's pods as they are now, proven fresh; None: a full list from the API.
    current_pods: Callable[[str], Awaitable[PodSnapshot]] | None = None


def utcnow() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _newer(candidate: str, current: str) -> bool:
    """Whether a resourceVersion is newer than the one we hold (they are etcd revisions)."""
    try:
        return int(candidate) > int(current)
    except ValueError:
        return True


class Deadlines(dict[Key, datetime.datetime]):
    """When to look at each claim again: the mapping is the truth, a heap finds the earliest.

    With thousands of countdowns, scanning every deadline at every wake would cost more
    than the work it finds. Setting a key pushes (when, key); entries that no longer match
    the mapping (moved or removed since) are dropped when they come to the top.
    """

    def __init__(self) -> None:
        super().__init__()
        self._heap: list[tuple[datetime.datetime, Key]] = []

    def __setitem__(self, key: Key, when: datetime.datetime) -> None:
        if self.get(key) == when:
            return  # its heap entry is still there: a claim re-decided often adds nothing
        super().__setitem__(key, when)
        heapq.heappush(self._heap, (when, key))
        if len(self._heap) > 2 * len(self) + 64:
            # Mostly moved or removed deadlines: rebuild rather than let them pile up.
            self._heap = [(moment, held) for held, moment in self.items()]
            heapq.heapify(self._heap)

    def earliest(self) -> datetime.datetime | None:
        heap = self._heap
        while heap and self.get(heap[0][1]) != heap[0][0]:
            heapq.heappop(heap)
        return heap[0][0] if heap else None

    def pop_due(self, now: datetime.datetime) -> list[Key]:
        """Remove and return every key whose deadline is not after `now`."""
        due: list[Key] = []
        while (when := self.earliest()) is not None and when <= now:
            _, key = heapq.heappop(self._heap)
            del self[key]
            due.append(key)
        return due


@dataclasses.dataclass(frozen=True)
class PodList:
    """One fresh view of a namespace's pods, with those mounting each claim found once:
    a wave of deletions would otherwise scan every pod once per claim."""

    pods: tuple[PodView, ...]
    by_claim: Mapping[str, tuple[PodView, ...]]
    live: Callable[[], bool]  # see PodSnapshot

    @classmethod
    def of(cls, snapshot: PodSnapshot) -> PodList:
        pods = tuple(snapshot.pods)
        by_claim: dict[str, list[PodView]] = {}
        for pod in pods:
            for claim in pod.claims:
                by_claim.setdefault(claim, []).append(pod)
        return cls(pods, {claim: tuple(found) for claim, found in by_claim.items()},
                   snapshot.live)


@dataclasses.dataclass(frozen=True)
class _Wave:
    started: datetime.datetime  # before the lister's first request
    result: asyncio.Future[PodList]

    def failed(self) -> bool:
        return self.result.done() and (self.result.cancelled()
                                       or self.result.exception() is not None)


class FreshPods:
    """Fresh views of a namespace's pods, shared between requests. The lister is
    `informer.Watched.current_pods` (a proof that the informer is current, else a full
    list) or, without informers, a full list from the API server.

    A deletion decided at some moment needs a view that began no earlier, or one that
    began at most `max_age` before and is still `live` (the informer's watch ran on
    unbroken since, so that view and the live index together leave no gap). The second
    kind is what `prefetch` prepares ahead of a deadline: the proof takes the API server
    a second or two (it answers with a bookmark), and a deletion that waited for it at
    its deadline would be that much late.

    Lists of a namespace run one after another: a request that no view serves waits for
    the next list, which starts when the one in flight ends and serves every request
    made meanwhile. Many deletions due together then cost one list per wave, not one each.
    """

    def __init__(self, lister: Callable[[str], Awaitable[PodSnapshot]],
                 clock: Callable[[], datetime.datetime] = utcnow) -> None:
        self._lister = lister
        self._clock = clock
        self._latest: dict[str, _Wave] = {}  # started: in flight or done
        self._done: dict[str, _Wave] = {}  # the last that succeeded
        self._next: dict[str, asyncio.Future[PodList]] = {}  # not started: open to joiners
        self._listing: dict[str, asyncio.Task[None]] = {}

    def prefetch(self, namespace: str, not_before: datetime.datetime) -> None:
        """Have a list of the namespace start as soon as it can, unless one that
        started after `not_before` is in flight or done."""
        wave = self._latest.get(namespace)
        if wave is None or wave.failed() or wave.started < not_before:
            self._upcoming(namespace)

    async def get(self, namespace: str, decided_at: datetime.datetime,
                  max_age: datetime.timedelta = datetime.timedelta(0)) -> PodList | None:
        """A view to decide on, as of `decided_at` (see the class's rules); None when a
        live proof that began before says the live index is current: then the index, not
        that proof's older copy, is the view (a pod may have finished since the copy).

        A finished list that serves is taken before one in flight: a proof begun for a
        later deadline must not hold up the deletions due now.
        """
        for wave in (self._done.get(namespace), self._latest.get(namespace)):
            if wave is None or wave.failed() or wave.started < decided_at - max_age:
                continue
            # One waiter cancelled (its claim forgotten, say) must not cancel the others'.
            pods = await asyncio.shield(wave.result)
            if wave.started >= decided_at:
                return pods
            if pods.live():
                return None
        wave = self._latest.get(namespace)
        if wave is not None and not wave.failed() and wave.started >= decided_at:
            return await asyncio.shield(wave.result)
        return await asyncio.shield(self._upcoming(namespace))

    def forget_older_than(self, moment: datetime.datetime) -> None:
        """Drop views too old to serve anyone: they hold pods that may be long gone."""
        for held in (self._latest, self._done):
            for namespace, wave in list(held.items()):
                if wave.result.done() and wave.started < moment:
                    del held[namespace]

    def _upcoming(self, namespace: str) -> asyncio.Future[PodList]:
        wave = self._next.get(namespace)
        if wave is None:
            wave = self._next[namespace] = asyncio.get_running_loop().create_future()
            # Retrieve a failure even if every waiter was cancelled: no stray warning.
            wave.add_done_callback(lambda done: done.cancelled() or done.exception())
            if namespace not in self._listing:
                self._listing[namespace] = asyncio.create_task(self._list(namespace))
        return wave

    async def _list(self, namespace: str) -> None:
        wave: asyncio.Future[PodList] | None = None
        try:
            # Taken out before listing: whoever asks from now on waits for the next list.
            while (wave := self._next.pop(namespace, None)) is not None:
                self._latest[namespace] = started = _Wave(self._clock(), wave)
                try:
                    pods = PodList.of(await self._lister(namespace))
                except Exception as error:
                    wave.set_exception(error)
                else:
                    wave.set_result(pods)
                    self._done[namespace] = started
        finally:
            del self._listing[namespace]
            for left in (wave, self._next.pop(namespace, None)):
                if left is not None and not left.done():
                    left.cancel()

    def close(self) -> None:
        """Stop listing: whoever still waits is cancelled (the operator is stopping)."""
        for task in self._listing.values():
            task.cancel()  # its own cleanup runs when it next resumes
        for wave in self._next.values():
            wave.cancel()
        self._next.clear()
        self._done.clear()


class Reconciler:
    def __init__(self, api: Any, settings: Settings, kopf_settings: kopf.OperatorSettings,
                 indexes: Indexes, *, clock: Callable[[], datetime.datetime] = utcnow) -> None:
        self.api = api
        self.settings = settings
        self.kopf_settings = kopf_settings
        self.indexes = indexes
        self.clock = clock
        self.evcs: dict[Key, EvcView] = {}
        self.bodies: dict[Key, str] = {}  # slim bodies as JSON text: see _slim
        self.deadlines = Deadlines()  # when to look again
        self.proofs = Deadlines()  # when to start proving pods fresh for a coming deletion
        self.countdowns: dict[Key, lifecycle.Decision] = {}  # pending deletions, for logs
        self.with_selector: dict[str, set[str]] = {}  # namespace -> EVC names with a selector
        self.pods_view_complete = False
        self.active = True  # False while another replica holds the Lease: then only watch
        self._dirty: set[Key] = set()
        self._running: set[Key] = set()
        self._failures: dict[Key, int] = {}
        self._poked_at: dict[Key, float] = {}  # first unhandled poke, for evc_reaction_seconds
        self._seen_users: dict[Key, frozenset[str]] = {}  # users this process has seen
        self._rejected: dict[Key, tuple[object, ...]] = {}  # PVC updates the API refused
        self._written: dict[Key, tuple[str, lifecycle.Claim]] = {}  # facts we recorded last
        self._reported_dry_run: set[tuple[Key, datetime.datetime | None]] = set()
        self._wakeup = asyncio.Event()
        self._slots = asyncio.Semaphore(MAX_CONCURRENT)
        self._since_release = 0  # reconciliations since memory was last released
        self._released_at = -RELEASE_EVERY
        self._tasks: set[asyncio.Task[None]] = set()
        self.fresh_pods = FreshPods(indexes.current_pods or self._list_pods, clock)

    # --- what handlers call --------------------------------------------------------------

    def observe_evc(self, event_type: str | None, body: Mapping[str, Any]) -> None:
        key: Key = (body["metadata"].get("namespace") or "", body["metadata"]["name"])
        if event_type == "DELETED":
            self.forget(key)
            return
        held = self.evcs.get(key)
        if held and held.uid == body["metadata"].get("uid") and not _newer(
                body["metadata"].get("resourceVersion") or "", held.resource_version):
            # Older than, or the echo of, what our own write already told us: at 100 claims
            # a second, looking again at each write's echo doubled the work.
            return
        view = evc_view(body, self.settings)
        self.evcs[key] = view
        self.bodies[key] = _slim(body)
        names = self.with_selector.setdefault(key[0], set())
        if view.selector:
            names.add(key[1])
        else:
            names.discard(key[1])
        self.poke(key)

    def forget(self, key: Key) -> None:
        self.evcs.pop(key, None)
        self.bodies.pop(key, None)
        self.deadlines.pop(key, None)
        self.proofs.pop(key, None)
        self.countdowns.pop(key, None)
        self._failures.pop(key, None)
        self._poked_at.pop(key, None)
        self._seen_users.pop(key, None)
        self._rejected.pop(key, None)
        self._written.pop(key, None)
        self._reported_dry_run = {mark for mark in self._reported_dry_run if mark[0] != key}
        self.with_selector.get(key[0], set()).discard(key[1])

    def poke(self, key: Key) -> None:
        if key in self.evcs:
            self._dirty.add(key)
            self._poked_at.setdefault(key, time.monotonic())
            self._wakeup.set()

    def set_active(self, active: bool) -> None:
        """Leadership changed: a new leader looks at every claim again, at once."""
        self.active = active
        if active:
            for key in self.evcs:
                self.poke(key)
        self._wakeup.set()

    def namespace_synced(self, namespace: str) -> None:
        """A namespace's pods and PVCs were (re)listed: look at its claims again."""
        for key in [key for key in self.evcs if key[0] == namespace]:
            self.poke(key)

    def ready(self) -> bool:
        """Every claim known and every namespace with claims fully listed."""
        return self.pods_view_complete and self.indexes.all_synced()

    def poke_for_pod(self, namespace: str, claims: Iterable[str]) -> None:
        """A pod changed: look again at the EVCs it mounts and those with a selector."""
        for claim in claims:
            self.poke((namespace, claim))
        for name in self.with_selector.get(namespace, ()):
            self.poke((namespace, name))

    # --- the loop ------------------------------------------------------------------------

    async def run(self) -> None:
        """Reconcile dirty keys, wake at deadlines; runs until cancelled."""
        try:
            while True:
                if not self.active:
                    self._wakeup.clear()
                    await self._wakeup.wait()  # set_active() wakes us
                    continue
                now = self.clock()
                for key in self.deadlines.pop_due(now):
                    self.poke(key)
                self._prefetch(self.proofs.pop_due(now), now)
                for key in list(self._dirty):
                    if key not in self._running:
                        self._dirty.discard(key)
                        self._running.add(key)
                        self._spawn(self._reconcile_guarded(key))
                self._wakeup.clear()
                self._release_memory_when_quiet()
                timeout = None
                wakes = [when for when in (self.deadlines.earliest(), self.proofs.earliest())
                         if when is not None]
                if wakes:
                    timeout = max(0.0, (min(wakes) - self.clock()).total_seconds())
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wakeup.wait(), timeout=timeout)
        finally:
            for task in self._tasks:
                task.cancel()
            self.fresh_pods.close()

    def _release_memory_when_quiet(self) -> None:
        if (self._since_release >= RELEASE_AFTER and not self._dirty and not self._running
                and time.monotonic() - self._released_at >= RELEASE_EVERY):
            memory.release()
            self._since_release, self._released_at = 0, time.monotonic()

    def _prefetch(self, keys: Iterable[Key], now: datetime.datetime) -> None:
        """Start proving the pods of the namespaces where deletions are coming."""
        if not self.pods_view_complete or self.settings.dry_run:
            return
        for key in keys:
            decision = self.countdowns.get(key)
            if decision is None or decision.deletes_at is None:
                continue
            if self.indexes.synced(key[0]):
                self.fresh_pods.prefetch(
                    key[0], not_before=decision.deletes_at - PROOF_MAX_AGE + PROOF_SLACK)
        self.fresh_pods.forget_older_than(now - PROOF_MAX_AGE)

    async def _list_pods(self, namespace: str) -> PodSnapshot:
        return PodSnapshot(await kube.list_pod_views(self.api, namespace))

    @contextlib.asynccontextmanager
    async def _unslotted(self) -> AsyncIterator[None]:
        """Give the reconciliation's slot back while it waits for a fresh list: the claims
        due in a namespace then wait together, for one list, instead of taking every slot
        and leaving the list of the next wave to be shared by almost none."""
        self._slots.release()
        try:
            yield
        finally:
            await self._slots.acquire()

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(self._logged(work))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    @staticmethod
    async def _logged(work: Coroutine[Any, Any, None]) -> None:
        try:
            await work
        except asyncio.CancelledError:
            raise
        except Exception as error:
            log.warning("Background work failed: %s", _describe(error))

    async def log_countdowns(self) -> None:
        """Every COUNTDOWN_INTERVAL, log which countdowns run and the time left. No API calls.

        One line per claim for the COUNTDOWN_LOG_LINES nearest deadlines, and one line that
        sums up the rest: with thousands of claims, a line each would be thousands of lines
        every interval, written by the same loop that reacts to pods.
        """
        while True:
            await asyncio.sleep(self.settings.countdown_interval)
            if self.active:  # else the leader tells the countdowns
                self.tell_countdowns(self.clock())

    def tell_countdowns(self, now: datetime.datetime) -> None:
        pending = [(decision.deletes_at, key, decision)
                   for key, decision in self.countdowns.items()
                   if decision.deletes_at is not None and key in self.bodies]
        nearest = heapq.nsmallest(COUNTDOWN_LOG_LINES, pending, key=lambda item: item[0])
        for deletes_at, key, decision in nearest:
            left = max(0.0, (deletes_at - now).total_seconds())
            self._logger(key).info(
                "%s countdown: %s left, deletes at %s.",
                "Expiry" if decision.countdown is lifecycle.Countdown.EXPIRY else "Grace",
                status.human_period(left), status.timestamp(deletes_at))
        if len(pending) > len(nearest):
            last = max(deletes_at for deletes_at, _, _ in pending)
            log.info("%d more countdowns run; the last of them deletes at %s.",
                     len(pending) - len(nearest), status.timestamp(last))

    async def _reconcile_guarded(self, key: Key) -> None:
        poked_at = self._poked_at.pop(key, None)
        self._since_release += 1
        try:
            async with self._slots:
                await self.reconcile(key)
            self._failures.pop(key, None)
            if poked_at is not None:
                metrics.REACTION.observe(time.monotonic() - poked_at)
        except asyncio.CancelledError:
            raise
        except Exception as error:
            metrics.RECONCILE_FAILURES.inc()
            failures = self._failures.get(key, 0)
            self._failures[key] = failures + 1
            delay = RETRY_DELAYS[min(failures, len(RETRY_DELAYS) - 1)]
            self._logger(key).warning("Reconciling failed (%s); retrying in %.0f s.",
                                      _describe(error), delay)
            retry_at = self.clock() + datetime.timedelta(seconds=delay)
            self.deadlines[key] = min(self.deadlines.get(key, retry_at), retry_at)
        finally:
            self._running.discard(key)
            self._wakeup.set()

    # --- one EVC -------------------------------------------------------------------------

    def _logger(self, key: Key) -> logging.LoggerAdapter[Any]:
        view = self.evcs.get(key)
        if view is None:
            return logging.LoggerAdapter(log, {})
        body = {"apiVersion": API_VERSION, "kind": KIND, "metadata": {
            "name": view.name, "namespace": view.namespace, "uid": view.uid}}
        return kopf.LocalObjectLogger(body=kopf.Body(cast(Any, body)), settings=self.kopf_settings)

    def _body(self, key: Key) -> dict[str, Any] | None:
        held = self.bodies.get(key)
        return None if held is None else cast(dict[str, Any], orjson.loads(held))

    def _users(self, view: EvcView, fresh: PodList | None = None,
               ) -> list[lifecycle.PodUse]:
        """Users from the indexes, or from a fresh list of the namespace's pods."""
        mounting: Collection[PodView]
        in_namespace: Collection[PodView]
        if fresh is not None:
            mounting, in_namespace = fresh.by_claim.get(view.name, ()), fresh.pods
        else:
            mounting = self.indexes.pods_by_claim.get(view.key, ())
            in_namespace = (self.indexes.pods_by_namespace.get(view.namespace, ())
                            if view.selector else ())
        seen = self._seen_users.get(view.key, frozenset())
        users = users_of(view.name, view.selector, mounting, in_namespace)
        self._seen_users[view.key] = frozenset(user.name for user in users)
        return [dataclasses.replace(user, known=user.name in seen) for user in users]

    def _observed_pvc(self, key: Key) -> PvcView | None:
        found: Collection[PvcView] = self.indexes.pvcs.get(key, ())
        return next(iter(found), None)

    async def reconcile(self, key: Key) -> None:
        view, body = self.evcs.get(key), self._body(key)
        if view is None or body is None or view.deleting:
            return
        if not self.indexes.synced(view.namespace):
            return  # namespace_synced() pokes it once its pods and PVCs are listed
        logger = self._logger(key)
        previous = dict(view.status)

        pvc_condition, pvc_events = await self._sync_pvc(view, body, previous, logger)

        now = self.clock()
        claim = self._trusted(view)
        decision = lifecycle.decide(claim, self._users(view), now,
                                    dry_run=self.settings.dry_run)
        if decision.action is Action.DELETE:
            if not self.pods_view_complete:
                self.deadlines[key] = now + datetime.timedelta(seconds=1)
                return
            # The index may lag behind: ask the API server itself before anything final
            # (or have it proven current: then `fresh` is None and the index decides).
            async with self._unslotted():
                fresh = await self.fresh_pods.get(view.namespace, now, PROOF_MAX_AGE)
            decision = lifecycle.decide(claim, self._users(view, fresh), self.clock(),
                                        dry_run=self.settings.dry_run)

        conditions = [*status.lifecycle_conditions(decision, keep=view.claim.keep,
                                                   dry_run=self.settings.dry_run,
                                                   problems=view.problems), pvc_condition]
        new_status = status.build_status(decision, conditions, generation=view.generation,
                                         previous=previous, now=now)
        events = list(pvc_events)
        events += status.transition_events(decision, view.claim.recorded_phase,
                                           expiry_period=view.claim.expiry_period,
                                           grace_period=view.claim.grace_period)
        if view.problems and _condition(previous, "SpecValid") != "False":
            events.append(status.Event("Warning", "InvalidSpec", "; ".join(view.problems)))

        if decision.action is Action.DELETE:
            await self._delete(view, decision, logger)
            return

        # The status write and its Events go out together: one round trip of the slot
        # instead of one after another. An Event never fails the reconciliation.
        await asyncio.gather(
            self._write_status(view, new_status, previous),
            *(self._announce(view, event, logger) for event in events))

        if decision.action is Action.REPORT_DRY_RUN:
            marker = (key, decision.deletes_at)
            if marker not in self._reported_dry_run:
                self._reported_dry_run.add(marker)
                event = status.deletion_event(decision, expiry_period=view.claim.expiry_period,
                                              grace_period=view.claim.grace_period,
                                              dry_run=True)
                metrics.DRY_RUN_DELETIONS.labels(str(decision.countdown)).inc()
                await self._announce(view, event, logger)

        if decision.deletes_at is not None and decision.action is Action.NONE:
            self.countdowns[key] = decision
            self.proofs[key] = decision.deletes_at - PROOF_LEAD
        else:
            self.countdowns.pop(key, None)
            self.proofs.pop(key, None)
        if decision.wake_at is not None:
            self.deadlines[key] = decision.wake_at
        else:
            self.deadlines.pop(key, None)

    async def _write_status(self, view: EvcView, new_status: Mapping[str, Any],
                            previous: Mapping[str, Any]) -> None:
        if status.status_changed(new_status, previous):
            self._remember(await kube.patch_evc_status(self.api, view.namespace, view.name,
                                                       new_status))

    async def _announce(self, view: EvcView, event: status.Event,
                        logger: logging.LoggerAdapter[Any]) -> None:
        """An Event on the EVC, and the same words in the log. Best effort: a lost Event
        loses no data, and never stops the work it tells of.

        With LIFECYCLE_EVENTS=false only Warnings become Events: at thousands of claims an
        hour, five Normal Events per claim double the API writes, and status and the log
        already say the same.
        """
        level = logging.WARNING if event.type == "Warning" else logging.INFO
        logger.log(level, "%s: %s", event.reason, event.message)
        if event.type == "Warning" or self.settings.lifecycle_events:
            try:
                await kube.post_event(self.api, view.namespace, view.name, view.uid, event,
                                      self.clock())
            except Exception as error:
                logger.warning("Could not post Event %s: %s", event.reason, _describe(error))

    def _remember(self, body: Mapping[str, Any]) -> None:
        """Our own write's result is the freshest view; do not wait for the watch.

        The facts we wrote are kept too: a status that someone else rewrote afterwards
        is not believed where it would make a deadline earlier.
        """
        key: Key = (body["metadata"].get("namespace") or "", body["metadata"]["name"])
        if key in self.evcs:
            view = evc_view(body, self.settings)
            self.evcs[key] = view
            self.bodies[key] = _slim(body)
            self._written[key] = (view.uid, view.claim)

    def _trusted(self, view: EvcView) -> lifecycle.Claim:
        """The claim as decided on: its recorded facts, unless they differ from what this
        process wrote last -- then the later of the two (when unsure, later)."""
        uid, ours = self._written.get(view.key, (None, None))
        claim = view.claim
        if ours is None or uid != view.uid or (
                claim.recorded_phase, claim.recorded_unused_since) == (
                ours.recorded_phase, ours.recorded_unused_since):
            return claim
        log.warning("%s/%s: its status was changed by someone else; keeping the facts this "
                    "operator recorded.", view.namespace, view.name)
        if ours.recorded_phase is lifecycle.Phase.IN_USE or claim.recorded_unused_since is None:
            return dataclasses.replace(claim, recorded_phase=ours.recorded_phase,
                                       recorded_unused_since=ours.recorded_unused_since)
        if ours.recorded_unused_since is not None:
            later = max(ours.recorded_unused_since, claim.recorded_unused_since)
            return dataclasses.replace(claim, recorded_phase=ours.recorded_phase,
                                       recorded_unused_since=later)
        return dataclasses.replace(claim, recorded_phase=ours.recorded_phase)

    async def _delete(self, view: EvcView, decision: lifecycle.Decision,
                      logger: logging.LoggerAdapter[Any]) -> None:
        # Deleted only if it is still exactly the claim we decided on (uid and
        # resourceVersion preconditions): if anything changed it meanwhile, the API server
        # refuses (409) and we decide again. One write: no "Deleting" status before it.
        try:
            await kube.delete_evc(self.api, view.namespace, view.name, view.uid,
                                  view.resource_version)
        except kube.ApiException as error:
            if error.status == 404:
                self.forget(view.key)
                return
            if error.status == 409:
                logger.info("The claim changed just before deletion; deciding again.")
                self.poke(view.key)
                return
            raise
        metrics.DELETIONS.labels(str(decision.countdown)).inc()
        if decision.deletes_at is not None:
            lateness = (self.clock() - decision.deletes_at).total_seconds()
            metrics.DELETION_LATENESS.observe(max(0.0, lateness))
        event = status.deletion_event(decision, expiry_period=view.claim.expiry_period,
                                      grace_period=view.claim.grace_period, dry_run=False)
        await self._announce(view, event, logger)
        self.forget(view.key)

    async def _sync_pvc(self, view: EvcView, body: Mapping[str, Any],
                        previous: Mapping[str, Any], logger: logging.LoggerAdapter[Any],
                        ) -> tuple[status.Condition, list[status.Event]]:
        """Make the PVC match the EVC, if it is ours; say how it stands."""
        if any(problem.startswith("spec.size") for problem in view.problems):
            return status.Condition("PvcReady", False, "InvalidSpec",
                                    "No PersistentVolumeClaim without a valid spec.size."), []
        observed = self._observed_pvc(view.key)
        plan = plan_pvc(body, observed)
        if plan.step is PvcStep.CREATE:
            try:
                await kube.create_pvc(self.api, desired_pvc(body))
            except kube.ApiException as error:
                if error.status != 409:
                    raise
                # Our index had not seen it yet: read it, and never touch it if not ours.
                existing = await kube.read_pvc(self.api, view.namespace, view.name)
                observed = pvc_view(existing) if existing else None
                plan = plan_pvc(body, observed)
                if plan.step is PvcStep.CREATE:
                    raise  # there a moment ago and gone again: retry later
            else:
                recreated = _condition(previous, "PvcReady") is not None
                reason = "PvcRecreated" if recreated else "PvcCreated"
                size = body["spec"]["size"]
                message = (f"Recreated PersistentVolumeClaim {view.name}: it was deleted while "
                           f"the claim still exists." if recreated else
                           f"Created PersistentVolumeClaim {view.name} of {size}.")
                return (status.Condition("PvcReady", True, reason, message),
                        [status.Event("Normal", reason, message)])

        events: list[status.Event] = []
        if plan.step is PvcStep.CONFLICT:
            if _condition(previous, "PvcReady", field="reason") != "PvcConflict":
                events.append(status.Event("Warning", "PvcConflict", plan.message))
            return status.Condition("PvcReady", False, "PvcConflict", plan.message), events
        if plan.step is PvcStep.WAIT:
            return status.Condition(
                "PvcReady", False, "PvcDeleting",
                f"PersistentVolumeClaim {view.name} is being deleted; it will be "
                f"recreated once it is gone."), events
        labels = tuple(sorted((body["metadata"].get("labels") or {}).items()))
        attempt = (view.generation, labels, observed and observed.resource_version)
        if plan.step is PvcStep.PATCH and self._rejected.get(view.key) == attempt:
            return status.Condition("PvcReady", True, "PvcUpdateRejected",
                                    _condition(previous, "PvcReady", field="message") or ""), []
        if plan.step is PvcStep.PATCH and observed is not None:
            try:
                await kube.patch_pvc(self.api, view.namespace, view.name, observed.uid,
                                     observed.resource_version, plan.patch)
            except kube.ApiException as error:
                if error.status not in (403, 422):
                    raise  # 409 (it changed meanwhile) and outages: retry
                # Refused for good (e.g. its StorageClass cannot expand volumes): say so
                # once, and do not hammer the API server until the EVC changes.
                message = (f"PersistentVolumeClaim {view.name} refused the update: "
                           f"{kube.error_message(error)}")
                self._rejected[view.key] = attempt
                if _condition(previous, "PvcReady", field="reason") != "PvcUpdateRejected":
                    events.append(status.Event("Warning", "PvcUpdateRejected", message))
                return status.Condition("PvcReady", True, "PvcUpdateRejected", message), events
            if "spec" in plan.patch:
                size = plan.patch["spec"]["resources"]["requests"]["storage"]
                events.append(status.Event("Normal", "PvcResized",
                                           f"Requested {size} for PersistentVolumeClaim "
                                           f"{view.name} (was {observed.storage})."))
            if "metadata" in plan.patch:
                logger.info("Synced labels to PersistentVolumeClaim %s.", view.name)
        if (_condition(previous, "PvcReady") == "True" and not events and
                _condition(previous, "PvcReady", field="reason") in ("PvcCreated",
                                                                     "PvcRecreated")):
            # Still true as it was said when the PVC was made: rewording it would cost a
            # status write per claim and tell nothing new.
            return status.Condition(
                "PvcReady", True, _condition(previous, "PvcReady", field="reason") or "",
                _condition(previous, "PvcReady", field="message") or ""), events
        return status.Condition("PvcReady", True, "PvcReady",
                                f"PersistentVolumeClaim {view.name} is in place."), events


def _slim(body: Mapping[str, Any]) -> str:
    """What is kept of an EVC, as JSON: no managedFields, no status (its view holds that),
    no copy of itself that `kubectl apply` leaves in an annotation. Ten thousand bodies as
    dicts of strings would be among the largest things in memory; as JSON they are a
    fifth of that, and a reconciliation reads one in microseconds."""
    metadata = {key: value for key, value in body["metadata"].items() if key != "managedFields"}
    annotations = {key: value for key, value in (metadata.get("annotations") or {}).items()
                   if key != LAST_APPLIED}
    if annotations:
        metadata["annotations"] = annotations
    else:
        metadata.pop("annotations", None)
    return orjson.dumps({key: value for key, value in body.items() if key != "status"} | {
        "metadata": metadata}).decode()  # text: orjson's bytes keep a 4 KiB buffer each


def _describe(error: BaseException) -> str:
    if isinstance(error, kube.ApiException):
        return f"API error {error.status} {error.reason}"
    return f"{type(error).__name__}: {error}"


def _condition(previous: Mapping[str, Any], kind: str,
               field: str = "status") -> str | None:
    for condition in previous.get("conditions") or ():
        if condition.get("type") == kind:
            value = condition.get(field)
            return str(value) if value is not None else None
    return None
