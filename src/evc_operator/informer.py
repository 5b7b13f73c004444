"""Pods and PVCs of the namespaces that have claims, kept current by our own list+watch.

Kopf's indexes were the first design; at scale they cost too much (docs/benchmarks.md):
every object passes through Kopf's per-object machinery, and while the operator starts,
each new object wakes every object already waiting for the indexes, so start-up grows
with the square of the number of pods. Here, per namespace and kind, one paged list and
one watch keep small projections (`PodView`, `PvcView`) and nothing else; only the
namespaces that hold EVCs are read at all, since a pod can use a claim of its own
namespace only. A relist (after 410 Gone) is compared with what was held, so objects
deleted while the watch was away are noticed too.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Generic, TypeVar

from evc_operator import kube
from evc_operator.claims import PvcView, pvc_view
from evc_operator.users import PodSnapshot, PodView, pod_view

log = logging.getLogger(__name__)
V = TypeVar("V")
Key = tuple[str, str]
RETRY_DELAYS = (1.0, 2.0, 5.0, 10.0)
# A proof-of-freshness watch lasts this long; the API server sends its bookmark about
# 2 s before a watch's end (with 2 s or less, often none at all).
BARRIER_WATCH_SECONDS = 3


class Informer(Generic[V]):
    """One kind of object in one namespace: list, then watch; projections only."""

    def __init__(self, api: Any, kind: str, namespace: str, project: Callable[[Any], V],
                 changed: Callable[[str, V | None, V | None], None],
                 listed: Callable[[], None]) -> None:
        self.api = api
        self.kind = kind
        self.namespace = namespace
        self.project = project
        self.changed = changed
        self.listed = listed  # after every complete list
        self.items: dict[str, V] = {}
        self.version = 0  # the resourceVersion `items` are current to
        self.synced = False
        self.breaks = 0  # watches that failed (not those the API server ended on time)

    async def run(self) -> None:
        version: str | None = None
        failures = 0
        while True:
            try:
                if version is None:
                    version = await self._relist()
                version = await self._watch(version)
                failures = 0
            except kube.Gone:
                self.breaks += 1
                version = None  # too old to resume from: list again
            except asyncio.CancelledError:
                raise
            except Exception as error:
                self.breaks += 1
                delay = RETRY_DELAYS[min(failures, len(RETRY_DELAYS) - 1)]
                failures += 1
                log.warning("Watching %s in %s failed (%s); again in %.0f s.", self.kind,
                            self.namespace, kube.describe(error), delay)
                await asyncio.sleep(delay)

    async def _relist(self) -> str:
        fresh: dict[str, V] = {}
        version = await kube.list_all(self.api, self.kind, self.namespace,
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
        self.listed()
        return version

    async def _watch(self, version: str) -> str:
        async for kind, body in kube.watch(self.api, self.kind, self.namespace, version):
            version = body["metadata"]["resourceVersion"]
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
    """Informers of pods and PVCs for every namespace that holds a claim.

    `pods_changed(namespace, claims)` and `pvc_changed(key)` tell the reconciler what to
    look at again; `namespace_synced(namespace)` when both lists of a namespace are in.
    """

    def __init__(self, api: Any, *, pods_changed: Callable[[str, Iterable[str]], None],
                 pvc_changed: Callable[[Key], None],
                 namespace_synced: Callable[[str], None]) -> None:
        self.api = api
        self.pods_changed = pods_changed
        self.pvc_changed = pvc_changed
        self.namespace_synced = namespace_synced
        self.pods: dict[str, Informer[PodView]] = {}
        self.claims: dict[str, NamespacePods] = {}
        self.pvcs: dict[str, Informer[PvcView]] = {}
        self._tasks: dict[str, list[asyncio.Task[None]]] = {}

    def ensure(self, namespace: str) -> None:
        """Start watching a namespace's pods and PVCs (once)."""
        if namespace in self._tasks:
            return
        pods = NamespacePods()

        def pod_changed(name: str, old: PodView | None, new: PodView | None) -> None:
            self.pods_changed(namespace, pods.update(name, old, new))

        def pvc_changed(name: str, _old: PvcView | None, _new: PvcView | None) -> None:
            self.pvc_changed((namespace, name))

        def listed() -> None:
            if self.synced(namespace):
                self.namespace_synced(namespace)

        self.claims[namespace] = pods
        self.pods[namespace] = Informer(self.api, "pods", namespace, pod_view, pod_changed,
                                        listed)
        self.pvcs[namespace] = Informer(self.api, "persistentvolumeclaims", namespace,
                                        pvc_view, pvc_changed, listed)
        self._tasks[namespace] = [
            asyncio.create_task(self.pods[namespace].run(), name=f"pods in {namespace}"),
            asyncio.create_task(self.pvcs[namespace].run(), name=f"pvcs in {namespace}")]

    def synced(self, namespace: str) -> bool:
        pods, pvcs = self.pods.get(namespace), self.pvcs.get(namespace)
        return bool(pods and pods.synced and pvcs and pvcs.synced)

    def all_synced(self) -> bool:
        return all(self.synced(namespace) for namespace in self._tasks)

    async def current_pods(self, namespace: str) -> PodSnapshot:
        """The namespace's pods as they are at some moment after this call began.

        Before a deletion the operator must not decide on a view that lags (a stalled or
        slow watch). A full list proves freshness but costs every pod of the namespace,
        for every wave of deletions. Instead: a consistent read of the collection's
        resourceVersion now (one object); if the informer has seen that far, its view is
        current. Otherwise a short watch from where the informer stands: its events,
        applied to a copy of the informer's view up to a bookmark or event at or past
        that version, give the state as of then. Without such proof, the full list.

        The snapshot stays `live` while the informer's watch runs on unbroken and has
        itself applied every pod change up to the proof (with none, nothing is missing:
        the rest comes through the same watch, in order). The reconciler may then prove
        freshness a little ahead of a deadline and decide at the deadline on the snapshot
        and the live view.
        """
        informer = self.pods.get(namespace)
        if informer is None or not informer.synced:
            return PodSnapshot(await kube.list_pod_views(self.api, namespace))
        breaks = informer.breaks
        target = await kube.collection_version(self.api, "pods", namespace)
        # What the informer must have applied for its live view to hold everything up to
        # `target`: the last pod change at or before it (bookmarks change nothing).
        needed = min(informer.version, target)

        def live() -> bool:
            return informer.breaks == breaks and informer.version >= needed

        if informer.version >= target:
            return PodSnapshot(list(informer.items.values()), live)
        items, start = dict(informer.items), informer.version
        try:
            async for kind, body in kube.watch(self.api, "pods", namespace, str(start),
                                               seconds=BARRIER_WATCH_SECONDS):
                version = int(body["metadata"]["resourceVersion"])
                if kind == "DELETED":
                    items.pop(body["metadata"]["name"], None)
                elif kind != "BOOKMARK":
                    items[body["metadata"]["name"]] = pod_view(body)
                if kind != "BOOKMARK" and version <= target:
                    needed = version
                if version >= target:
                    return PodSnapshot(list(items.values()), live)
        except kube.Gone:
            pass
        log.info("No proof that the pods of %s are current; listing them all.", namespace)
        return PodSnapshot(await kube.list_pod_views(self.api, namespace))

    # --- what the reconciler reads (the shape of its `Lookup`s) -----------------------------

    def pods_of_claim(self, key: Key) -> list[PodView]:
        pods = self.claims.get(key[0])
        return list(pods.by_claim.get(key[1], {}).values()) if pods else []

    def pods_in(self, namespace: str) -> list[PodView]:
        informer = self.pods.get(namespace)
        return list(informer.items.values()) if informer else []

    def pvc(self, key: Key) -> list[PvcView]:
        informer = self.pvcs.get(key[0])
        found = informer.items.get(key[1]) if informer else None
        return [found] if found else []

    async def close(self) -> None:
        tasks = [task for started in self._tasks.values() for task in started]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


class Lookup:
    """A read function in the `get(key, default)` shape the reconciler reads indexes by."""

    def __init__(self, read: Callable[[Any], list[Any]]) -> None:
        self.read = read

    def get(self, key: Any, default: Any = (), /) -> Any:
        return self.read(key) or default


def lookups(watched: Watched) -> Mapping[str, Lookup]:
    return {"pods_by_claim": Lookup(watched.pods_of_claim),
            "pods_by_namespace": Lookup(watched.pods_in),
            "pvcs": Lookup(watched.pvc)}
