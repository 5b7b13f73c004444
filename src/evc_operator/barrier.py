"""Short watches that prove an informer's view current up to a resourceVersion (proof.py).

In a quiet namespace of many objects, a proof before a deletion ends at a bookmark: the
informer's own watch brings nothing, so a short watch from where it stands runs until
the API server says it has passed the version of the proof's consistent read. When that
bookmark comes is the API server's own timing (`k8s.io/apiserver`, `pkg/storage/cacher`,
read in its source; docs/benchmarks.md):

- a watch with a timeout is due for one bookmark 2 s before it ends, and never another;
- due watches wait in buckets of one second, counted from the watch cache's start, and a
  timer of 1 to 1.25 s sends a bookmark to every watch whose bucket has begun.

So a 3-second watch opened at the proof's read gets its bookmark at the first tick after
the start of the next bucket: 1 to 2.25 s after the read. A watch opened a second earlier
is a bucket ahead: if the timer ticks between that bucket's start and the read, its
bookmark comes too soon (short of the read's version) and proves nothing; otherwise it
comes at the first tick after the read. With both, a proof ends at the first tick after
its read, 0 to 1.25 s, whatever the buckets' phase. Hence `Barriers`: the scheduler has
one opened a second before each deadline (`anticipate`), and a proof waits on every
barrier open for its informer, with one opened at its read unless one was opened in the
last half second (with deadlines every second, the one anticipated for the next second:
no more watches than before, one a second).

Any barrier proves any version its watch has reached, whenever it was opened: its view is
a copy of the informer's as it stood at the opening, with every change its own watch
brought since applied in order, so a bookmark or a change at or past a version gives the
state as of then, and of the objects deleted since the opening, their last state. The
safety rests on the versions compared, never on when a watch began.
"""

from __future__ import annotations

import asyncio
import bisect
import dataclasses
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any

from evc_operator.errors import Gone, describe
from evc_operator.informer import Source, View
from evc_operator.users import PodView

log = logging.getLogger(__name__)
# A barrier's watch lasts this long: the API server sends its bookmark 2 s before a
# watch's end (with 2 s or less, often none at all).
WATCH_SECONDS = 3
# A proof opens a barrier of its own unless one was opened this recently (seconds): then
# that one is a second later than the one anticipated for its deadline, as the pair needs.
REUSE_SECONDS = 0.5


@dataclasses.dataclass(frozen=True)
class Proven:
    """An informer's objects as of a version at or past the one asked for."""

    items: list[PodView]
    last: int | None  # the last change at or before the version asked for (None: none)


class Barrier:
    """One short watch from where an informer stood, and the view it brings up to date."""

    def __init__(self, source: Source, informer: View[PodView], *,
                 seconds: int = WATCH_SECONDS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.opened = clock()
        self._project = informer.project
        self._key = informer.key  # by name, or by "namespace/name" (clusterwide.Whole)
        self._items = dict(informer.items)  # as of `informer.version`
        # The namespaces it proves (None: all it watches): of a kind watched for the
        # cluster, those whose parts were filled when it was copied. Another's objects
        # are not in the copy, only its changes since: its view would lack what it held.
        self.filled = informer.filled()
        self._changes: list[int] = []  # the versions of the changes applied, in order
        self._seen = informer.version  # every change up to this is applied
        self._waiting: list[tuple[int, asyncio.Future[Proven | None]]] = []
        self._ended = False
        # From the copy's version, taken now: the task starts later, and the informer may
        # have applied a change by then that the copy lacks.
        stream = source.watch(informer.kind, informer.namespace, str(self._seen),
                              seconds=seconds)
        self.task = asyncio.create_task(self._run(stream, informer.kind, informer.namespace))

    @property
    def ended(self) -> bool:
        return self._ended

    def proves(self, namespace: str) -> bool:
        """Whether its view holds the namespace's objects whole."""
        return not self._ended and (self.filled is None or namespace in self.filled)

    def reached(self, target: int) -> asyncio.Future[Proven | None]:
        """The view as of `target` or later once the watch has seen that far; None if it
        ended short of it (timed out, 410 Gone, failed). Cancel it to stop waiting."""
        future: asyncio.Future[Proven | None] = asyncio.get_running_loop().create_future()
        self._waiting.append((target, future))
        self._wake()  # answered at once if it has seen that far, or ended
        return future

    def _proven(self, target: int) -> Proven:
        before = bisect.bisect_right(self._changes, target)
        return Proven(list(self._items.values()), self._changes[before - 1] if before else None)

    async def _run(self, stream: AsyncIterator[tuple[str, dict[str, Any]]], kind: str,
                   namespace: str) -> None:
        try:
            async for event, body in stream:
                version = int(body["metadata"]["resourceVersion"])
                if event != "BOOKMARK":
                    # A deleted object stays, as its deletion last showed it: a pod
                    # running when deleted was in use until then, after the informer's
                    # version, perhaps after the claim's deadline; dropped, its use
                    # would leave no trace in the proof's view (tracked.py: `depart`).
                    self._items[self._key(body["metadata"])] = self._project(body)
                    self._changes.append(version)
                self._seen = max(self._seen, version)
                self._wake()
                if event == "BOOKMARK":
                    break  # a watch gets one bookmark: nothing more will prove anything
        except Gone:
            pass  # too old to resume from: whoever waits lists instead
        except Exception as error:
            log.debug("A proof's watch of the %s of %s failed: %s.", kind, namespace,
                      describe(error))
        finally:
            self._ended = True
            self._wake()
            close = getattr(stream, "aclose", None)
            if close is not None:
                await close()

    def _wake(self) -> None:
        waiting = []
        for target, future in self._waiting:
            if future.done():
                continue
            if self._seen >= target:
                future.set_result(self._proven(target))
            elif self._ended:
                future.set_result(None)
            else:
                waiting.append((target, future))
        self._waiting = waiting


class Barriers:
    """The barriers open for each informer, shared by the proofs that come while they run
    (and `sleep`, how a proof waits before it opens another: tests pass their own)."""

    def __init__(self, source: Source, *, seconds: int = WATCH_SECONDS,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        self.source = source
        self.seconds = seconds
        self.clock = clock
        self.sleep = sleep
        self._open: dict[View[PodView], list[Barrier]] = {}

    def anticipate(self, informers: Iterable[View[PodView]]) -> None:
        """Open a barrier for each of these now, a second before a deadline."""
        for informer in informers:
            self._ensure(informer.scope, informer.namespace)

    def for_proof(self, informer: View[PodView]) -> list[Barrier]:
        """Every barrier open for the informer, one opened now among them unless one was
        opened in the last `REUSE_SECONDS`. A namespace's part of a kind watched for the
        whole cluster (clusterwide.Slice) shares those of the whole kind: their views
        hold every namespace's objects (a proof takes its namespace's), but only those
        opened once the namespace's part was filled."""
        scope = informer.scope
        self._ensure(scope, informer.namespace)
        return [barrier for barrier in self._open.get(scope, ())
                if barrier.proves(informer.namespace)]

    def __len__(self) -> int:
        return sum(len(held) for held in self._open.values())

    def _ensure(self, informer: View[PodView], namespace: str) -> None:
        held = self._open.setdefault(informer, [])
        now = self.clock()
        if any(barrier.proves(namespace) and now - barrier.opened < REUSE_SECONDS
               for barrier in held):
            return
        barrier = Barrier(self.source, informer, seconds=self.seconds, clock=self.clock)
        held.append(barrier)
        barrier.task.add_done_callback(lambda _task: self._forget(informer, barrier))

    def _forget(self, informer: View[PodView], barrier: Barrier) -> None:
        held = self._open.get(informer)
        if held is not None and barrier in held:
            held.remove(barrier)
            if not held:
                del self._open[informer]

    async def close(self) -> None:
        """Stop every barrier's watch (those waiting on one get None)."""
        tasks = [barrier.task for held in self._open.values() for barrier in held]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._open.clear()

