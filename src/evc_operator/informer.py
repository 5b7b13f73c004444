"""One kind of object, kept current by our own list+watch, as small projections.

Kopf's indexes were the first design; at scale they cost too much (docs/benchmarks.md):
every object passes through Kopf's per-object machinery, and while the operator starts,
each new object wakes every object already waiting for the indexes, so start-up grows
with the square of the number of pods. Here, per kind and namespace (or, for the
workloads of an operator serving every namespace, per kind: clusterwide.py), one paged
list and one watch keep small projections (`PodView`, `PvcView`) and nothing else. A
relist (after 410 Gone) is compared with what was held, so objects deleted while the
watch was away are noticed too. What they read of the API server is a `Source` (the
real one: `KubeSource`); unit tests pass a scripted one. Which namespaces are watched,
and how their users are indexed: watched.py.

`View` is what the proof that a view is current (proof.py, barrier.py) reads of one kind
in one namespace: an `Informer` of that namespace, or a namespace's slice of a
cluster-wide one. resourceVersions are the cluster's, so "current to version V" means
the same for both.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any, Generic, Protocol, TypeVar

from evc_operator import kube, listwatch
from evc_operator.errors import Gone, describe
from evc_operator.users import PodView, pod_view
from evc_operator.workqueue import backoff

log = logging.getLogger(__name__)
V = TypeVar("V")
V_co = TypeVar("V_co", covariant=True)
RETRY_CAP = 10.0  # seconds between attempts to list or watch, at most


class Failures:
    """A spell of failures of one list or watch: each waits longer before the next try
    (to RETRY_CAP), and the same failure again is told at DEBUG, so a long outage is one
    warning, not one every ten seconds."""

    def __init__(self, what: str) -> None:
        self.what = what
        self.count = 0
        self.told: str | None = None  # the failure logged last

    def reset(self) -> None:
        self.count, self.told = 0, None

    def failed(self, error: Exception) -> float:
        """Logs it; returns the seconds to wait before trying again."""
        self.count += 1
        delay = backoff(self.count, cap=RETRY_CAP)
        why = describe(error)
        log.log(logging.DEBUG if why == self.told else logging.WARNING,
                "%s failed (%s); again in %.0f s.", self.what, why, delay)
        self.told = why
        return delay


# A watch that brought nothing and ended sooner than this (seconds) ended early. The API
# server's bookmarks (one a minute) are not promised: a quiet kind's full-length watch may
# bring nothing, and that is no failure.
EARLY_END = listwatch.WATCH_SECONDS / 2


class EndedEmpty(Exception):
    """A watch that ended early with no event nor bookmark. Reopened at once, it was a
    loop of requests."""

    def __str__(self) -> str:
        return "the watch ended with nothing"


class Source(Protocol):
    """What the informers, and the proof that one is current, read of the API server."""

    async def list_all(self, kind: str, namespace: str,
                       each: Callable[[dict[str, Any]], None]) -> str: ...

    def watch(self, kind: str, namespace: str, resource_version: str,
              seconds: int = listwatch.WATCH_SECONDS) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        ...

    async def collection_version(self, kind: str, namespace: str) -> int: ...

    async def list_pods(self, namespace: str) -> tuple[list[PodView], int]: ...


class KubeSource:
    """`Source` on the real API server, through `kube`."""

    def __init__(self, api: kube.Api) -> None:
        self.api = api

    async def list_all(self, kind: str, namespace: str,
                       each: Callable[[dict[str, Any]], None]) -> str:
        return await listwatch.list_all(self.api, kind, namespace, each)

    def watch(self, kind: str, namespace: str, resource_version: str,
              seconds: int = listwatch.WATCH_SECONDS) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        return listwatch.watch(self.api, kind, namespace, resource_version, seconds)

    async def collection_version(self, kind: str, namespace: str) -> int:
        return await listwatch.collection_version(self.api, kind, namespace)

    async def list_pods(self, namespace: str) -> tuple[list[PodView], int]:
        return await list_pods(self.api, namespace)


def by_name(metadata: Mapping[str, Any]) -> str:
    """How an informer of one namespace holds its objects: by name."""
    return str(metadata["name"])


def every(key: str) -> bool:
    """An informer that holds every object it lists and watches."""
    return True


class View(Protocol[V_co]):
    """One kind of object in one namespace, as a proof reads it (see the module's doc)."""

    @property
    def kind(self) -> str: ...

    @property
    def namespace(self) -> str: ...

    @property
    def items(self) -> Mapping[str, V_co]:
        """The namespace's objects of the kind, by name."""

    @property
    def version(self) -> int:
        """Every change up to this resourceVersion (the cluster's) is in `items`."""

    @property
    def breaks(self) -> int:
        """Watches that failed: while it stays the same, no change was missed."""

    @property
    def synced(self) -> bool: ...

    @property
    def scope(self) -> View[V_co]:
        """What a short watch proving this view watches (barrier.py): the view itself, or
        for a namespace's part of a kind watched for the whole cluster, the whole kind."""

    def key(self, metadata: Mapping[str, Any]) -> str:
        """How `items` hold an object, from its metadata: by name (clusterwide.Whole: by
        "namespace/name")."""

    def filled(self) -> frozenset[str] | None:
        """The namespaces whose objects `items` hold whole now; None: every one it
        watches (clusterwide.Whole: only the namespaces whose parts are filled)."""

    def project(self, body: Any) -> V_co: ...

    def reached(self, version: int) -> asyncio.Future[None]: ...


class Informer(Generic[V]):
    """One kind of object in one namespace ("": every namespace): list, then watch;
    projections only, held by `key` (the name; clusterwide.py keys by namespace too), of
    the objects it `keep`s (all, but for clusterwide.py: those of namespaces with claims).

    One that does not `hold` (clusterwide.py, whose namespaces' parts hold their objects)
    tells each change its watch brings of what it keeps, with no old value; a list it
    tells by `listed` alone, which reads the list's objects in `items` (emptied after)."""

    def __init__(self, source: Source, kind: str, namespace: str,
                 project: Callable[[Any], V],
                 changed: Callable[[str, V | None, V | None], None],
                 listed: Callable[[], None], *,
                 key: Callable[[Mapping[str, Any]], str] = by_name,
                 keep: Callable[[str], bool] = every, hold: bool = True,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.source = source
        self.sleep = sleep  # between failed attempts (tests pass one that does not wait)
        self.clock = clock  # how long a watch lasted
        self.kind = kind
        self.namespace = namespace
        self.project = project
        self.key = key  # of an object's metadata
        self.keep = keep  # by key: the others are neither projected nor held
        self.hold = hold
        self.changed = changed
        self.listed = listed  # after every complete list
        self.items: dict[str, V] = {}
        self._version = 0
        self._reaching: list[tuple[int, asyncio.Future[None]]] = []  # see `reached`
        self.synced = False
        self.breaks = 0  # watches that failed (not those the API server ended on time)
        self.progressed = False  # listed, or an event came, since the last failure
        self.events = 0  # events and bookmarks its watches brought

    @property
    def scope(self) -> Informer[V]:
        return self

    def filled(self) -> frozenset[str] | None:
        return None

    @property
    def version(self) -> int:
        """The resourceVersion `items` are current to: every change up to it is applied
        (set only after `items` hold it)."""
        return self._version

    @version.setter
    def version(self, version: int) -> None:
        self._version = version
        if self._reaching:
            waiting = []
            for target, future in self._reaching:
                if future.done():
                    continue
                if version >= target:
                    future.set_result(None)
                else:
                    waiting.append((target, future))
            self._reaching = waiting

    def reached(self, version: int) -> asyncio.Future[None]:
        """Done once `items` are current to `version` or later: this informer's own
        events, a bookmark or a list have brought it that far. Cancel it to stop waiting."""
        future = asyncio.get_running_loop().create_future()
        if self._version >= version:
            future.set_result(None)
        else:  # those given up on go now, not at the next change of a quiet namespace
            self._reaching = [(target, waiting) for target, waiting in self._reaching
                              if not waiting.done()]
            self._reaching.append((version, future))
        return future

    async def run(self) -> None:
        version: str | None = None
        failures = Failures(f"Watching {self.kind} in {self.namespace or 'every namespace'}")
        while True:
            self.progressed = False
            try:
                if version is None:
                    version = await self._relist()
                began, opened = self.events, self.clock()
                version = await self._watch(version)
                if self.events == began and self.clock() - opened < EARLY_END:
                    raise EndedEmpty()  # an API server going away, a proxy
                failures.reset()
            except Gone:
                self.breaks += 1
                version = None  # too old to resume from: list again
            except asyncio.CancelledError:
                raise
            except Exception as error:
                self.breaks += 1
                if version is not None:
                    # Resumed from the last change applied, not from where the broken
                    # watch began: replayed, its changes would take the view back in
                    # time (a pod seen finished, running again) until they came round.
                    version = str(self.version)
                if self.progressed:  # it worked since the last failure: a new spell, which
                    failures.reset()  # starts again at the shortest wait
                await self.sleep(failures.failed(error))

    async def _relist(self) -> str:
        fresh: dict[str, V] = {}

        def take(item: dict[str, Any]) -> None:
            key = self.key(item["metadata"])
            if self.keep(key):
                fresh[key] = self.project(item)

        version = await self.source.list_all(self.kind, self.namespace, take)
        held, self.items = self.items, fresh
        self.version = int(version)
        if self.hold:
            for name in held.keys() - fresh.keys():
                self.changed(name, held[name], None)
            for name, view in fresh.items():
                if held.get(name) != view:
                    self.changed(name, held.get(name), view)
        self.synced = True
        self.progressed = True
        self.listed()
        if not self.hold:
            self.items = {}
        return version

    async def _watch(self, version: str) -> str:
        async for kind, body in self.source.watch(self.kind, self.namespace, version):
            version = body["metadata"]["resourceVersion"]
            self.progressed = True
            self.events += 1
            if kind == "BOOKMARK":
                self.version = int(version)
                continue
            name = self.key(body["metadata"])
            if not self.keep(name):
                self.version = int(version)
                continue
            held = self.items.get(name)
            if kind == "DELETED":
                self.items.pop(name, None)
                self.version = int(version)
                self.changed(name, held, None)
                continue
            view = self.project(body)
            if self.hold:
                self.items[name] = view
            self.version = int(version)
            if held != view:
                self.changed(name, held, view)
        return version


@kube.counted("list_pods")
async def list_pods(api: kube.Api, namespace: str) -> tuple[list[PodView], int]:
    """All pods of a namespace, read from the API server itself (not a cache), projected,
    and the resourceVersion the list is current to."""
    views: list[PodView] = []
    version = await listwatch.list_all(api, "pods", namespace,
                                       lambda item: views.append(pod_view(item)))
    return views, listwatch.as_number(version)
