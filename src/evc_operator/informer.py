"""Users (pods and workloads) and PVCs of the namespaces that have claims, kept current by
our own list+watch.

Kopf's indexes were the first design; at scale they cost too much (docs/benchmarks.md):
every object passes through Kopf's per-object machinery, and while the operator starts,
each new object wakes every object already waiting for the indexes, so start-up grows
with the square of the number of pods. Here, per namespace and kind, one paged list and
one watch keep small projections (`PodView`, `PvcView`) and nothing else; only the
namespaces that hold EVCs are read at all, since a pod can use a claim of its own
namespace only. A relist (after 410 Gone) is compared with what was held, so objects
deleted while the watch was away are noticed too. What they read of the API server is a
`Source` (the real one: `KubeSource`); unit tests pass a scripted one.

Workloads (workloads.KINDS: Jobs, CronJobs, Deployments, ...) are users too: each kind has
an informer per namespace, and keeps the workload's `PodView` projection (named
`Kind/name`) beside the pods', in the same index, so a claim's users are found the same way.
When the last claim of a namespace is gone, or the namespace is, its informers stop.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any, Generic, Protocol, TypeVar

from evc_operator import kube, listwatch
from evc_operator.claims import PvcView, pvc_view
from evc_operator.errors import Gone, describe
from evc_operator.evc import Key
from evc_operator.users import PodView, pod_view
from evc_operator.workloads import KINDS, collection, workload_view
from evc_operator.workqueue import backoff

log = logging.getLogger(__name__)
V = TypeVar("V")
RETRY_CAP = 10.0  # seconds between attempts to list or watch, at most


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


class Informer(Generic[V]):
    """One kind of object in one namespace: list, then watch; projections only."""

    def __init__(self, source: Source, kind: str, namespace: str,
                 project: Callable[[Any], V],
                 changed: Callable[[str, V | None, V | None], None],
                 listed: Callable[[], None], *,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        self.source = source
        self.sleep = sleep  # between failed attempts (tests pass one that does not wait)
        self.kind = kind
        self.namespace = namespace
        self.project = project
        self.changed = changed
        self.listed = listed  # after every complete list
        self.items: dict[str, V] = {}
        self._version = 0
        self._reaching: list[tuple[int, asyncio.Future[None]]] = []  # see `reached`
        self.synced = False
        self.breaks = 0  # watches that failed (not those the API server ended on time)
        self.progressed = False  # listed, or an event came, since the last failure

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
        failures = 0
        told: str | None = None  # the failure logged last: the same again is DEBUG
        while True:
            self.progressed = False
            try:
                if version is None:
                    version = await self._relist()
                version = await self._watch(version)
                failures, told = 0, None
            except Gone:
                self.breaks += 1
                version = None  # too old to resume from: list again
            except asyncio.CancelledError:
                raise
            except Exception as error:
                self.breaks += 1
                if self.progressed:  # it worked since the last failure: a new spell, which
                    failures, told = 0, None  # starts again at the shortest wait
                failures += 1
                delay = backoff(failures, cap=RETRY_CAP)
                why = describe(error)
                log.log(logging.DEBUG if why == told else logging.WARNING,
                        "Watching %s in %s failed (%s); again in %.0f s.", self.kind,
                        self.namespace, why, delay)
                told = why
                await self.sleep(delay)

    async def _relist(self) -> str:
        fresh: dict[str, V] = {}
        version = await self.source.list_all(self.kind, self.namespace,
                                             lambda item: fresh.__setitem__(
                                                 item["metadata"]["name"], self.project(item)))
        held, self.items = self.items, fresh
        self.version = int(version)
        for name in held.keys() - fresh.keys():
            self.changed(name, held[name], None)
        for name, view in fresh.items():
            if held.get(name) != view:
                self.changed(name, held.get(name), view)
        self.synced = True
        self.progressed = True
        self.listed()
        return version

    async def _watch(self, version: str) -> str:
        async for kind, body in self.source.watch(self.kind, self.namespace, version):
            version = body["metadata"]["resourceVersion"]
            self.progressed = True
            if kind == "BOOKMARK":
                self.version = int(version)
                continue
            name = body["metadata"]["name"]
            held = self.items.get(name)
            if kind == "DELETED":
                self.items.pop(name, None)
                self.version = int(version)
                self.changed(name, held, None)
                continue
            view = self.project(body)
            self.items[name] = view
            self.version = int(version)
            if held != view:
                self.changed(name, held, view)
        return version


class NamespacePods:
    """A namespace's pods, and those that mount each claim (found without a scan)."""

    def __init__(self) -> None:
        self.by_claim: dict[str, dict[str, PodView]] = {}

    def update(self, name: str, old: PodView | None, new: PodView | None) -> set[str]:
        """Keep by_claim current; returns the claims whose users may have changed."""
        touched = set(old.claims if old else ()) | set(new.claims if new else ())
        for claim in old.claims if old else ():
            users = self.by_claim.get(claim, {})
            users.pop(name, None)
            if not users:
                self.by_claim.pop(claim, None)
        if new is not None:
            for claim in new.claims:
                self.by_claim.setdefault(claim, {})[name] = new
        return touched


class Watched:
    """Informers of users (pods, workloads) and PVCs for every namespace with a claim.

    `pods_changed(namespace, claims, views)` (the claims it mounted or mounts, and the
    pod before and after) and `pvc_changed(key)` tell the scheduler what to look at again
    (a workload's change comes as a pod's); `namespace_synced(namespace)`
    when every list of a namespace is in.
    """

    def __init__(self, source: Source, *,
                 pods_changed: Callable[[str, Iterable[str],
                                         tuple[PodView | None, PodView | None]], None],
                 pvc_changed: Callable[[Key], None],
                 namespace_synced: Callable[[str], None]) -> None:
        self.source = source
        self.pods_changed = pods_changed
        self.pvc_changed = pvc_changed
        self.namespace_synced = namespace_synced
        self.pods: dict[str, Informer[PodView]] = {}
        self.workloads: dict[str, list[Informer[PodView]]] = {}
        self.claims: dict[str, NamespacePods] = {}
        self.pvcs: dict[str, Informer[PvcView]] = {}
        self._tasks: dict[str, list[asyncio.Task[None]]] = {}

    def ensure(self, namespace: str) -> None:
        """Start watching a namespace's users and PVCs (once)."""
        if namespace in self._tasks:
            return
        users = NamespacePods()

        def user_changed(name: str, old: PodView | None, new: PodView | None) -> None:
            self.pods_changed(namespace, users.update(name, old, new), (old, new))

        def pvc_changed(name: str, _old: PvcView | None, _new: PvcView | None) -> None:
            self.pvc_changed((namespace, name))

        def listed() -> None:
            if self.synced(namespace):
                self.namespace_synced(namespace)

        self.claims[namespace] = users
        self.pods[namespace] = Informer(self.source, "pods", namespace, pod_view,
                                        user_changed, listed)
        self.workloads[namespace] = [
            Informer(self.source, collection(kind), namespace,
                     functools.partial(workload_view, kind), user_changed, listed)
            for kind in KINDS]
        self.pvcs[namespace] = Informer(self.source, "persistentvolumeclaims", namespace,
                                        pvc_view, pvc_changed, listed)
        runs = [(informer.kind, informer.run()) for informer in self.users(namespace)]
        runs.append(("persistentvolumeclaims", self.pvcs[namespace].run()))
        self._tasks[namespace] = [asyncio.create_task(run, name=f"{kind} in {namespace}")
                                  for kind, run in runs]

    def release(self, namespace: str) -> None:
        """Stop watching a namespace (its last claim is gone, or the namespace is)."""
        for task in self._tasks.pop(namespace, ()):
            task.cancel()
        self.pods.pop(namespace, None)
        self.workloads.pop(namespace, None)
        self.claims.pop(namespace, None)
        self.pvcs.pop(namespace, None)

    def watching(self) -> list[str]:
        return list(self._tasks)

    def users(self, namespace: str) -> list[Informer[PodView]]:
        """The informers of a namespace's users: its pods' first, then each workload kind's."""
        pods = self.pods.get(namespace)
        return [pods, *self.workloads.get(namespace, ())] if pods else []

    def synced(self, namespace: str) -> bool:
        pvcs, users = self.pvcs.get(namespace), self.users(namespace)
        return bool(pvcs and pvcs.synced and users and all(user.synced for user in users))

    def all_synced(self) -> bool:
        return all(self.synced(namespace) for namespace in self._tasks)

    # --- what the reconcile reads (the shape of reconcile.PodIndex) -----------------------

    def pods_of_claim(self, key: Key) -> list[PodView]:
        pods = self.claims.get(key[0])
        return list(pods.by_claim.get(key[1], {}).values()) if pods else []

    def pods_in(self, namespace: str) -> list[PodView]:
        """Every user-shaped view of a namespace: its pods and its workloads."""
        return [view for informer in self.users(namespace) for view in informer.items.values()]

    def pvc(self, key: Key) -> PvcView | None:
        informer = self.pvcs.get(key[0])
        return informer.items.get(key[1]) if informer else None

    async def close(self) -> None:
        tasks = [task for started in self._tasks.values() for task in started]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


@kube.counted("list_pods")
async def list_pods(api: kube.Api, namespace: str) -> tuple[list[PodView], int]:
    """All pods of a namespace, read from the API server itself (not a cache), projected,
    and the resourceVersion the list is current to."""
    views: list[PodView] = []
    version = await listwatch.list_all(api, "pods", namespace,
                                       lambda item: views.append(pod_view(item)))
    return views, int(version or 0)
