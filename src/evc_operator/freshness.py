"""When a view of a namespace's users is current enough to delete on: the rule, in one place.

A claim is decided on the live index (informer.py) as events come. A deletion is final,
and the index may lag (a stalled or slow watch), so before one:

1. Kopf must have listed every EVC (`pods_view_complete`): until then a pod's claim may
   be one the operator has not seen yet;
2. the namespace's pods and PVCs must be listed (`may_decide`);
3. the decision must rest on a view that provably holds every change to the namespace's
   pods and workloads up to the claim's deadline (`FreshPods.get`): a proof
   (`prove_current`) or a full list whose consistent reads of the API server were made
   after the deadline had passed: one that began at the deadline or later, however late
   the decision itself comes (a backlog does not make it wait for a later view). With such a
   proof the live index decides if it is still `live` (it has itself applied every
   change the proof saw, with its watch unbroken since), else the proof's own copy.

A proof begun before the deadline is not enough, however live its informer's watch: an
unbroken watch brings every later change *eventually*, but a pod created a moment before
the deadline may not have reached the informer when the claim is decided. So the proof
starts at the deadline (`prepare`, scheduled by `proof_due`), shared by the claims due
in that second. A kind whose informer holds few objects (most workload kinds, small
namespaces) is listed outright: one request, no wait (if the informer holds the same,
the live index still decides). A larger one is proven by a consistent read of its
collection and, unless the informer has seen that far, whichever comes first: the
informer's own watch reaching that far (in a busy namespace, its next change) or a short
watch up to the API server's bookmark (in a quiet one: the API server sends bookmarks on
a timer of 1 to 1.25 s, and to a watch only from a second into it, so 0.6 to 2.3 s: the
lateness this rule costs).
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import functools
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from evc_operator.errors import Gone
from evc_operator.informer import Informer, Watched
from evc_operator.timestamps import utcnow
from evc_operator.users import PodView
from evc_operator.workloads import KINDS, collection, workload_view

log = logging.getLogger(__name__)
# Views older than this serve nobody (one serves the decisions of its own second only):
# the scheduler forgets them.
PROOF_MAX_AGE = datetime.timedelta(seconds=5)
# A kind whose informer holds fewer objects than this is listed outright to prove it
# current: one request, no bookmark to wait for. Measured on the project's control plane
# (2 cores, heavily shared): a list of 200 pods took 0.3 s (median), the bookmark 1.3 to
# 2.6 s; 500 pods, 0.8 s. Beyond this the operator's parsing cost grows with every wave.
LIST_OUTRIGHT = 200
# A proof-of-freshness watch lasts this long; the API server sends its bookmark about
# 2 s before a watch's end (with 2 s or less, often none at all).
BARRIER_WATCH_SECONDS = 3


def _never() -> bool:
    return False


@dataclasses.dataclass(frozen=True)
class PodSnapshot:
    """A namespace's pods as they were at one moment, read or proven from the API server.

    `live()` says whether the informer's watch has run without a break since that moment
    and has seen at least that far: then this snapshot and the live view, taken together,
    leave no gap. A full list has no such continuation.
    """

    pods: Sequence[PodView]
    live: Callable[[], bool] = _never


class PodList:
    """One fresh view of a namespace's pods, with those mounting each claim found once:
    a wave of deletions would otherwise scan every pod once per claim.

    Both are built when first asked, and most views never are: a proof whose informers
    are still live serves through the live index (`FreshPods.get`), so a wave of
    deletions in a namespace of 5,000 pods no longer indexes them all each second. (It
    was thought to be the restarted operator's peak of memory at 10,000 claims; measured,
    it was not: docs/benchmarks.md.)"""

    def __init__(self, snapshot: PodSnapshot) -> None:
        self._snapshot = snapshot
        self.live = snapshot.live  # see PodSnapshot

    @classmethod
    def of(cls, snapshot: PodSnapshot) -> PodList:
        return cls(snapshot)

    @functools.cached_property
    def pods(self) -> tuple[PodView, ...]:
        return tuple(self._snapshot.pods)

    @functools.cached_property
    def by_claim(self) -> Mapping[str, tuple[PodView, ...]]:
        found: dict[str, list[PodView]] = {}
        for pod in self.pods:
            for claim in pod.claims:
                found.setdefault(claim, []).append(pod)
        return {claim: tuple(users) for claim, users in found.items()}


@dataclasses.dataclass(frozen=True)
class _Wave:
    started: datetime.datetime  # before the lister's first request
    result: asyncio.Future[PodList]

    def failed(self) -> bool:
        return self.result.done() and (self.result.cancelled()
                                       or self.result.exception() is not None)

    def serves(self, since: datetime.datetime) -> bool:
        """Whether it can serve a view asked of no earlier than `since` (done or not)."""
        return not self.failed() and self.started >= since


class FreshPods:
    """Fresh views of a namespace's pods, shared between requests. The lister is
    `prove_current`: a proof that the informer is current, else a full list.

    A deletion needs a view that began no earlier than a given moment (its deadline):
    every consistent read it rests on was made after that moment. `prefetch` starts one
    at the deadline, before the claims due then are decided, so they share it. A request
    that no view serves starts one at once, which every request made meanwhile shares:
    a view in flight that began too early serves it nothing, so it does not wait for it
    (with deadlines every second in a namespace, waiting for it would make each
    deletion wait for two proofs).
    """

    def __init__(self, lister: Callable[[str], Awaitable[PodSnapshot]],
                 clock: Callable[[], datetime.datetime] = utcnow) -> None:
        self._lister = lister
        self._clock = clock
        self._latest: dict[str, _Wave] = {}  # the last started: in flight or done
        self._done: dict[str, _Wave] = {}  # the latest started of those that succeeded
        self._listing: set[asyncio.Task[None]] = set()

    def prefetch(self, namespace: str, not_before: datetime.datetime) -> None:
        """Have a view of the namespace start now, unless one that started no earlier
        than `not_before` is in flight or done."""
        wave = self._latest.get(namespace)
        if wave is None or not wave.serves(not_before):
            self._start(namespace)

    async def get(self, namespace: str, since: datetime.datetime) -> PodList | None:
        """A view that began no earlier than `since`; None when it is a proof whose
        informers are still live: then the live index, which holds everything the proof
        does and whatever came after, is the view (a pod may have finished since).

        A finished view that serves is taken before one in flight.
        """
        for wave in (self._done.get(namespace), self._latest.get(namespace)):
            if wave is not None and wave.serves(since):
                break
        else:
            wave = self._start(namespace)
        # One waiter cancelled (its claim forgotten, say) must not cancel the others'.
        pods = await asyncio.shield(wave.result)
        return None if pods.live() else pods

    def ready(self, namespace: str, since: datetime.datetime) -> bool:
        """Whether a view that serves `since` is made already: `get` answers at once."""
        wave = self._done.get(namespace)
        return wave is not None and wave.serves(since) and wave.result.done()

    def forget_older_than(self, moment: datetime.datetime) -> None:
        """Drop views too old to serve anyone: they hold pods that may be long gone."""
        for held in (self._latest, self._done):
            for namespace, wave in list(held.items()):
                if wave.result.done() and wave.started < moment:
                    del held[namespace]

    def _start(self, namespace: str) -> _Wave:
        wave = _Wave(self._clock(), asyncio.get_running_loop().create_future())
        self._latest[namespace] = wave
        # Retrieve a failure even if every waiter was cancelled: no stray warning.
        wave.result.add_done_callback(lambda done: done.cancelled() or done.exception())
        task = asyncio.create_task(self._list(namespace, wave))
        self._listing.add(task)
        task.add_done_callback(functools.partial(self._listed, wave))
        return wave

    async def _list(self, namespace: str, wave: _Wave) -> None:
        try:
            pods = PodList.of(await self._lister(namespace))
        except Exception as error:
            wave.result.set_exception(error)
        else:
            wave.result.set_result(pods)
            done = self._done.get(namespace)
            if done is None or done.started <= wave.started:
                self._done[namespace] = wave

    def _listed(self, wave: _Wave, task: asyncio.Task[None]) -> None:
        self._listing.discard(task)
        if not wave.result.done():  # cancelled, even before it began
            wave.result.cancel()

    def close(self) -> None:
        """Stop listing: whoever still waits is cancelled (the operator is stopping)."""
        for task in self._listing:
            task.cancel()  # its wave is cancelled when it ends
        self._done.clear()


Lister = Callable[[str], Awaitable[PodSnapshot]]


class Freshness:
    """The rules above, for the scheduler and the per-claim reconcile to ask."""

    def __init__(self, synced: Callable[[str], bool], lister: Lister,
                 clock: Callable[[], datetime.datetime] = utcnow) -> None:
        self.synced = synced
        self.pods = FreshPods(lister, clock)
        self.pods_view_complete = False  # rule 1: set once Kopf has listed the EVCs

    def may_decide(self, namespace: str) -> bool:
        """Rule 2: whether the namespace's claims may be decided on at all."""
        return self.synced(namespace)

    async def for_deletion(self, namespace: str,
                           deadline: datetime.datetime) -> PodList | None:
        """Rule 3: the view a deletion due at `deadline` must be checked against (None:
        the live index, proven current): one that began no earlier than the deadline,
        however long after it the deletion is decided (a backlog must not make it wait
        for a later proof than its own)."""
        return await self.pods.get(namespace, deadline)

    def ready(self, namespace: str, deadline: datetime.datetime) -> bool:
        """Whether `for_deletion` has its view made already (it will not wait)."""
        return self.pods.ready(namespace, deadline)

    @staticmethod
    def proof_due(deletes_at: datetime.datetime) -> datetime.datetime:
        """When to start proving the namespace current for a deletion at `deletes_at`:
        at the deadline itself, since no proof begun earlier can serve it."""
        return deletes_at

    def prepare(self, namespace: str, deletes_at: datetime.datetime) -> None:
        """Start proving the namespace's users current for the deletions due now."""
        if self.pods_view_complete and self.synced(namespace):
            self.pods.prefetch(namespace, not_before=deletes_at)

    def forget_older_than(self, moment: datetime.datetime) -> None:
        self.pods.forget_older_than(moment)

    def close(self) -> None:
        self.pods.close()


async def prove_current(watched: Watched, namespace: str) -> PodSnapshot:
    """The namespace's users (pods and workloads) as they are at some moment after this
    call began.

    Before a deletion the operator must not decide on a view that lags (a stalled or
    slow watch). A full list proves freshness but costs every pod of the namespace,
    for every wave of deletions. Instead: a consistent read of the pods' resourceVersion
    now (one object); if an informer has seen that far, its view is current. Otherwise a
    short watch from where the informer stands: its events, applied to a copy of the
    informer's view up to a bookmark or event at or past that version, give the state as
    of then. Without such proof, the full list of that kind.

    Workloads need the same proof: a Job created a moment before a deadline is a user at
    the deadline, and its own watch may lag as a pod's may. Each kind is proven the same
    way, all at once, each from a consistent read of its own collection (which also has
    the API server's watch cache of that kind catch up, so a quiet kind's short watch
    soon brings a bookmark that far); each proof holds as of a moment after this call
    began, and so does the whole.

    A kind whose informer holds fewer than `LIST_OUTRIGHT` objects is listed outright
    instead: as cheap as the consistent read, and it needs no bookmark (which the API
    server sends only a second or two into a watch). If the informer then holds the same
    (every object projected alike), that kind stays `live` as long as its watch runs on
    unbroken: otherwise a single empty workload kind made every proof of its namespace
    not live, and each wave of deletions indexed the proof's copy of 5,000 pods again.

    The snapshot stays `live` while every informer's watch runs on unbroken and has
    itself applied every change up to the proof (with none, nothing is missing: the rest
    comes through the same watch, in order): the live index then holds all the proof
    does. A proof holds as of its consistent reads, not earlier: it serves only the
    deadlines that had passed when it began (`FreshPods.get`).
    """
    informers = watched.users(namespace)
    if not informers or not all(informer.synced for informer in informers):
        views = await watched.source.list_pods(namespace)
        for kind in KINDS:
            views += await _list(watched, collection(kind), namespace,
                                 functools.partial(workload_view, kind))
        return PodSnapshot(views)
    proofs = await asyncio.gather(*(_prove(watched, informer) for informer in informers))
    lives = [proof.live for proof in proofs]
    return PodSnapshot([view for proof in proofs for view in proof.pods],
                       lambda: all(live() for live in lives))


async def _list(watched: Watched, kind: str, namespace: str,
                project: Callable[[Any], PodView]) -> list[PodView]:
    """One kind of users of a namespace, read from the API server itself."""
    if kind == "pods":
        return await watched.source.list_pods(namespace)
    views: list[PodView] = []
    await watched.source.list_all(kind, namespace, lambda item: views.append(project(item)))
    return views


async def _prove(watched: Watched, informer: Informer[PodView]) -> PodSnapshot:
    """One informer's view as of a moment after this call began, proven or listed."""
    breaks = informer.breaks
    if len(informer.items) < LIST_OUTRIGHT:
        listed = await _list(watched, informer.kind, informer.namespace, informer.project)
        if not _holds(informer, listed):
            return PodSnapshot(listed)  # the list is the view: the index lags or differs
        # The informer holds what the list says, as of a moment after the list's own
        # read (or later): with its watch unbroken, the live index holds it all too.
        return PodSnapshot(listed, lambda: informer.breaks == breaks)
    target = await watched.source.collection_version(informer.kind, informer.namespace)
    # What the informer must have applied for its live view to hold everything up to
    # `target`: the last change at or before it (bookmarks change nothing).
    needed = min(informer.version, target)

    def live() -> bool:
        return informer.breaks == breaks and informer.version >= needed

    if informer.version >= target:
        return PodSnapshot(list(informer.items.values()), live)
    # Whichever proves it first: the informer's own watch reaching that far (in a busy
    # namespace, its next change), or a short watch of the proof's own up to a bookmark
    # (in a quiet one: the API server sends bookmarks on a timer, a second or two).
    caught_up = informer.reached(target)
    barrier = asyncio.ensure_future(_barrier(watched, informer, target))
    try:
        await asyncio.wait((caught_up, barrier), return_when=asyncio.FIRST_COMPLETED)
    finally:
        caught_up.cancel()
        if not barrier.done():
            barrier.cancel()
            await asyncio.gather(barrier, return_exceptions=True)
    if caught_up.done() and not caught_up.cancelled():
        return PodSnapshot(list(informer.items.values()), live)
    proven = barrier.result()
    if proven is not None:
        pods, last = proven
        if last is not None:
            needed = last
        return PodSnapshot(pods, live)
    log.info("No proof that the %s of %s are current; listing them all.", informer.kind,
             informer.namespace)
    return PodSnapshot(await _list(watched, informer.kind, informer.namespace,
                                   informer.project))


def _holds(informer: Informer[PodView], listed: Sequence[PodView]) -> bool:
    """Whether the informer's view is, as far as decisions go, the same as `listed`."""
    items = informer.items
    return len(listed) == len(items) and all(items.get(view.name) == view
                                              for view in listed)


async def _barrier(watched: Watched, informer: Informer[PodView],
                   target: int) -> tuple[list[PodView], int | None] | None:
    """A copy of the informer's view brought up to `target` by a short watch from where
    the informer stands, and the last change at or before `target` it applied (None: no
    change); None without proof (410 Gone, or the watch ended before reaching it)."""
    items, last = dict(informer.items), None
    try:
        async for kind, body in watched.source.watch(informer.kind, informer.namespace,
                                                     str(informer.version),
                                                     seconds=BARRIER_WATCH_SECONDS):
            version = int(body["metadata"]["resourceVersion"])
            if kind == "DELETED":
                items.pop(body["metadata"]["name"], None)
            elif kind != "BOOKMARK":
                items[body["metadata"]["name"]] = informer.project(body)
            if kind != "BOOKMARK" and version <= target:
                last = version
            if version >= target:
                return list(items.values()), last
    except Gone:
        pass
    return None
