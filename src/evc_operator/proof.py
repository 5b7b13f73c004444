"""How a namespace's users are proven current before a deletion (the rule: freshness.py).

A full list proves freshness but costs every pod of the namespace, for every wave of
deletions. Instead each kind is proven by a consistent read of its collection's
resourceVersion (one object) and, unless its informer has seen that far, whichever comes
first: the informer's own watch reaching that far (in a busy namespace, its next change)
or a short watch's bookmark (in a quiet one; barrier.py says when the API server sends
it, and why short watches are also opened a second before each deadline: `Prover`).
A kind of few objects too: a list of it that the informer holds alike was once taken as
proof, but a list lacks what was created and deleted while the informer lagged (a pod
that used the claim), and so does the lagging informer.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from evc_operator import listwatch
from evc_operator.barrier import Barriers, Proven
from evc_operator.freshness import PodSnapshot, never
from evc_operator.informer import View
from evc_operator.users import PodView
from evc_operator.watched import Watched

log = logging.getLogger(__name__)
# Short watches a proof opens for a kind, one after another while each ends short of the
# proof's read (its bookmark too soon, the watch cache behind the read, the watch failed
# or timed out), before it lists the kind: a list lacks what was created and deleted while
# the informer lagged (docs/lifecycle.md, "What cannot be known"), so it is the last resort.
ATTEMPTS = 5
# Seconds between one that ended short and the next.
RETRY_SECONDS = 1.0


class Prover:
    """`prove_current` with short watches shared between proofs and opened ahead of
    deadlines (the scheduler's lister, and its `anticipate`)."""

    def __init__(self, watched: Watched, *,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        self.watched = watched
        self.barriers = Barriers(watched.source, clock=clock, sleep=sleep)

    async def __call__(self, namespace: str) -> PodSnapshot:
        return await prove_current(self.watched, namespace, self.barriers)

    def anticipate(self, namespace: str) -> None:
        """Open short watches for the kinds of the namespace a bookmark will prove."""
        self.barriers.anticipate(informer for informer in self.watched.users(namespace)
                                 if informer.synced)

    async def close(self) -> None:
        await self.barriers.close()


async def prove_current(watched: Watched, namespace: str,
                        barriers: Barriers | None = None) -> PodSnapshot:
    """The namespace's users (pods and workloads) as they are at some moment after this
    call began.

    Before a deletion the operator must not decide on a view that lags (a stalled or
    slow watch). A consistent read of the pods' resourceVersion now (one object); if an
    informer has seen that far, its view is current. Otherwise the short watches from
    where the informer stood (barrier.py): their events, applied to a copy of the
    informer's view up to a bookmark or event at or past that version, give the state as
    of then; one that ends short of it, another a little later (`ATTEMPTS`). Without such
    proof, the full list of that kind (what it cannot know: docs/lifecycle.md).

    Workloads need the same proof: a Job created a moment before a deadline is a user at
    the deadline, and its own watch may lag as a pod's may. Each kind is proven the same
    way, all at once, each from a consistent read of its own collection (which also has
    the API server's watch cache of that kind catch up, so a quiet kind's short watch
    soon brings a bookmark that far); each proof holds as of a moment after this call
    began, and so does the whole.

    A kind proven with no change since its informer's version (a quiet kind, an empty
    workload kind) stays `live` as long as its watch runs on unbroken: a single empty
    workload kind must not make every proof of its namespace not live (each wave of
    deletions then indexed the proof's copy of 5,000 pods again).

    The snapshot stays `live` while every informer's watch runs on unbroken and has
    itself applied every change up to the proof (with none, nothing is missing: the rest
    comes through the same watch, in order): the live index then holds all the proof
    does. A proof holds as of its consistent reads, not earlier: it serves only the
    deadlines that had passed when it began (`FreshPods.get`).
    """
    informers = watched.users(namespace)
    if not informers or not all(informer.synced for informer in informers):
        views, _ = await watched.source.list_pods(namespace)
        for kind in watched.kinds:
            listed, _ = await _list(watched, kind.collection, namespace, kind.project)
            views += listed
        return PodSnapshot(views)
    own = barriers is None  # its short watches end with it
    held = Barriers(watched.source) if barriers is None else barriers
    try:
        proofs = await asyncio.gather(*(_prove(watched, informer, held)
                                        for informer in informers))
    finally:
        if own:
            await held.close()
    lives = [proof.live for proof in proofs]
    behinds = [proof.behind for proof in proofs]
    return PodSnapshot([view for proof in proofs for view in proof.pods],
                       lambda: all(live() for live in lives),
                       lambda: any(behind() for behind in behinds))


async def _list(watched: Watched, kind: str, namespace: str,
                project: Callable[[Any], PodView]) -> tuple[list[PodView], int]:
    """One kind of users of a namespace, read from the API server itself, and the
    resourceVersion the list is current to."""
    if kind == "pods":
        return await watched.source.list_pods(namespace)
    views: list[PodView] = []
    version = await watched.source.list_all(kind, namespace,
                                            lambda item: views.append(project(item)))
    return views, listwatch.as_number(version)


def _listed(informer: View[PodView], listed: Sequence[PodView], version: int,
            live: Callable[[], bool] = never) -> PodSnapshot:
    """A kind's snapshot made by a list current to `version`: behind (its informer lags
    it) while the informer has not come that far and does not hold what was listed.
    Once it holds it, or has applied a change past it (or relisted), it is not."""
    def behind() -> bool:
        return informer.version < version and not _holds(informer, listed)

    return PodSnapshot(listed, live, behind)


async def _prove(watched: Watched, informer: View[PodView],
                 barriers: Barriers) -> PodSnapshot:
    """One informer's view as of a moment after this call began, proven or listed."""
    breaks = informer.breaks
    # Of a kind of few objects too: a list that its lagging informer holds alike proves
    # nothing of what changed since the informer's version (an object created and deleted
    # meanwhile, a pod that used the claim, is in neither). Only the changes since do.
    target = await watched.source.collection_version(informer.kind, informer.namespace)
    # What the informer must have applied for its live view to hold everything up to
    # `target`: the last change at or before it (bookmarks change nothing).
    needed = min(informer.version, target)

    def live() -> bool:
        return informer.breaks == breaks and informer.version >= needed

    def behind() -> bool:  # a relist after a break brings it past `needed` too
        return informer.version < needed

    if informer.version >= target:
        return PodSnapshot(list(informer.items.values()), live, behind)
    proven = await _first_proof(informer, target, barriers)
    if proven is not None:
        if proven.last is not None:
            needed = proven.last
        return PodSnapshot(proven.items, live, behind)
    log.info("No proof that the %s of %s are current; listing them all.", informer.kind,
             informer.namespace)
    return _listed(informer, *await _list(watched, informer.kind, informer.namespace,
                                          informer.project))


async def _first_proof(informer: View[PodView], target: int,
                       barriers: Barriers) -> Proven | None:
    """Whichever proves the informer's kind current to `target` first: the informer's own
    watch reaching that far (its own view, with no change to wait for), or a short
    watch's view (barrier.py); None if the short watches of `ATTEMPTS` openings, a
    `RETRY_SECONDS` apart, all ended short of it (the informer's own watch may prove it
    meanwhile too)."""
    caught_up = informer.reached(target)
    watches = {barrier.reached(target) for barrier in barriers.for_proof(informer)}
    pause: asyncio.Future[None] | None = None
    attempts = 1
    try:
        while watches or pause is not None:
            waiting: set[asyncio.Future[Any]] = {caught_up, *watches}
            if pause is not None:
                waiting.add(pause)
            done, _ = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
            if caught_up in done:
                return Proven(list(informer.items.values()), None)
            for finished in watches & done:
                watches.discard(finished)
                proven = finished.result()
                if proven is not None:  # of this namespace (a barrier may watch them all)
                    return Proven([view for view in proven.items
                                   if view.namespace == informer.namespace], proven.last)
            if pause is not None and pause.done():
                pause = None
                watches = {barrier.reached(target)
                           for barrier in barriers.for_proof(informer)}
            elif not watches and pause is None and attempts < ATTEMPTS:
                attempts += 1
                pause = asyncio.ensure_future(barriers.sleep(RETRY_SECONDS))
        return None
    finally:
        caught_up.cancel()
        for watch in watches:
            watch.cancel()
        if pause is not None:
            pause.cancel()


def _holds(informer: View[PodView], listed: Sequence[PodView]) -> bool:
    """Whether the informer's view is, as far as decisions go, the same as `listed`."""
    items = informer.items
    return len(listed) == len(items) and all(items.get(view.name) == view
                                              for view in listed)
