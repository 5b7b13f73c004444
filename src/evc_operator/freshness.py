"""When a view of a namespace's users is current enough to delete on: the rule, in one place.

A claim is decided on the live index (informer.py) as events come. A deletion is final,
and the index may lag (a stalled or slow watch), so before one:

1. Kopf must have listed every EVC (`pods_view_complete`): until then a pod's claim may
   be one the operator has not seen yet;
2. the namespace's pods and PVCs must be listed (`may_decide`);
3. the decision must rest on a view that provably holds every change to the namespace's
   pods and workloads up to the claim's deadline (`FreshPods.get`): a proof
   (`proof.prove_current`) or a full list whose consistent reads of the API server were made
   after the deadline had passed: one that began at the deadline or later, however late
   the decision itself comes (a backlog does not make it wait for a later view). With such a
   proof the live index decides if it is still `live` (it has itself applied every
   change the proof saw, with its watch unbroken since), else the proof's own copy; and
   a claim kept by that copy (a user the index lacks yet) is decided on it until the
   informers have come as far (`PodSnapshot.behind`), not on an index that would take
   the user back.

A proof begun before the deadline is not enough, however live its informer's watch: an
unbroken watch brings every later change *eventually*, but a pod created a moment before
the deadline may not have reached the informer when the claim is decided. So the proof
starts at the deadline (`prepare`, scheduled by `proof_due`), shared by the claims due
in that second; how a namespace is proven is proof.py's. A second before it
(`anticipate`, at `anticipation_due`) only a short watch is opened, which proves nothing
by itself: it has the API server's bookmark come sooner after the proof's own read
(barrier.py).
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import functools
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence

from evc_operator import metrics
from evc_operator.timestamps import utcnow
from evc_operator.users import PodView, mounting_views

# Views older than this serve nobody (one serves the decisions of its own second only):
# the scheduler forgets them.
PROOF_MAX_AGE = datetime.timedelta(seconds=5)
# A second before a deadline, the proofs' short watches are opened (barrier.py).
ANTICIPATION = datetime.timedelta(seconds=1)


def never() -> bool:
    """Not live, not behind: a snapshot with no informer to go on from."""
    return False


@dataclasses.dataclass(frozen=True)
class PodSnapshot:
    """A namespace's pods as they were at one moment, read or proven from the API server.

    `live()` says whether the informer's watch has run without a break since that moment
    and has seen at least that far: then this snapshot and the live view, taken together,
    leave no gap. A full list has no such continuation.

    `behind()` says whether an informer has still not applied every change this snapshot
    holds (its watch lags, or it relists after a break): until it has, the snapshot is
    the later view of the two, and a claim decided on it goes on being decided on it
    (reconcile.py), not on an index that would take back what the snapshot showed.
    """

    pods: Sequence[PodView]
    live: Callable[[], bool] = never
    behind: Callable[[], bool] = never


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
        self.behind = snapshot.behind

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

    def mounting(self, claim: str) -> tuple[PodView, ...]:
        """The views that mount a claim, and the StatefulSets that list it by its
        `ordinal_marker` (users.users_of tells them apart), each once."""
        return tuple(mounting_views(claim, lambda name: self.by_claim.get(name, ())))


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
    `proof.prove_current`: a proof that the informer is current, else a full list.

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
        began = time.monotonic()
        try:
            pods = PodList.of(await self._lister(namespace))
        except Exception as error:
            wave.result.set_exception(error)
        else:
            metrics.PROOF.observe(time.monotonic() - began)
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
                 clock: Callable[[], datetime.datetime] = utcnow,
                 ahead: Callable[[str], None] | None = None) -> None:
        self.synced = synced
        self.pods = FreshPods(lister, clock)
        self._ahead = ahead  # opens a namespace's proof watches early (proof.Prover)
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

    @staticmethod
    def anticipation_due(deletes_at: datetime.datetime) -> datetime.datetime:
        """When to open the short watches a proof for `deletes_at` will wait on."""
        return deletes_at - ANTICIPATION

    def anticipate(self, namespace: str) -> None:
        """Open the short watches the proof of a deletion due in a second will wait on
        (barrier.py): they prove nothing by themselves, and need no rule."""
        if self._ahead is not None and self.pods_view_complete and self.synced(namespace):
            self._ahead(namespace)

    def prepare(self, namespace: str, deletes_at: datetime.datetime) -> None:
        """Start proving the namespace's users current for the deletions due now."""
        if self.pods_view_complete and self.synced(namespace):
            self.pods.prefetch(namespace, not_before=deletes_at)

    def forget_older_than(self, moment: datetime.datetime) -> None:
        self.pods.forget_older_than(moment)

    def close(self) -> None:
        self.pods.close()
