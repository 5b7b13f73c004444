"""Workloads watched once for the whole cluster, each namespace seeing its part as its own.

An operator serving every namespace (`--all-namespaces`: the chart's and the image's
way) held, for each namespace with claims, a watch of every kind of its users and of its
PVCs: nine connections of about 67 KiB each (docs/benchmarks.md: 150 namespaces, 155 MiB
at rest). Seven are workload kinds (workloads.KINDS), which in most namespaces hold
little or nothing. Here each workload kind has one watch for the cluster, and each
namespace with claims reads its part of it through a `Slice`, an `informer.View` like its
own informer's would be; the pods and PVCs stay per namespace (pods are many). watched.py
uses these where the operator serves every namespace and may list and watch the
workloads cluster-wide (handlers.py).

Only the namespaces with claims are held, as before: the cluster-wide informer `keep`s
their objects and passes over the rest, so memory follows the claims' namespaces, not the
cluster's workloads; and it holds none itself (`hold=False`): each object is held once,
in its namespace's part. A namespace that gets its first claim while the watch runs is filled
by a list of its own, current to some version L; the watch's changes of that namespace
that come meanwhile wait, and only those past L are applied after it (the list holds the
rest), as are the later ones. A list of the cluster-wide informer itself (its first, or
one after 410 Gone) holds every namespace attached before it began: their parts are
taken from it whole. A namespace's own list is never cancelled once sent (the API server
would count it failed): one whose namespace was released meanwhile, or whose part a
list of the cluster-wide informer filled first, ends and is passed over.

Proofs hold the same (proof.py, barrier.py). resourceVersions are the cluster's, so the
cluster-wide informer's version means what a namespace's own did: every change up to it
is applied, in this namespace as in every other (a part filled by a list at L past it
holds more, never less); and a proof's short watch of one namespace from that version
brings the namespace's changes after it, in order, so it ends at the state of its
bookmark whatever the copy began with. A cluster-wide watch moves on with the changes of
every namespace, so it passes a proof's read sooner than a quiet namespace's would.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from evc_operator import listwatch
from evc_operator.informer import Failures, Informer, Source, by_name
from evc_operator.users import PodView
from evc_operator.workloads import UserKind

Changed = Callable[[str, PodView | None, PodView | None], None]


def namespaced(metadata: Mapping[str, Any]) -> str:
    """How a cluster-wide informer holds its objects: "namespace/name" (a namespace's
    name has no slash)."""
    return f"{metadata.get('namespace') or ''}/{metadata['name']}"


class _ClusterInformer(Informer[PodView]):
    """An informer of every namespace that tells `began` when each of its lists begins."""

    def __init__(self, began: Callable[[], None], *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.began = began

    async def _relist(self) -> str:
        self.began()
        return await super()._relist()


class _OfShared:
    """What a view of a `Shared` kind reads from its cluster-wide informer."""

    shared: Shared

    @property
    def kind(self) -> str:
        return self.shared.informer.kind

    @property
    def version(self) -> int:
        return self.shared.informer.version

    @property
    def breaks(self) -> int:
        return self.shared.informer.breaks

    def project(self, body: Any) -> PodView:
        return self.shared.informer.project(body)

    def reached(self, version: int) -> asyncio.Future[None]:
        return self.shared.informer.reached(version)


class Slice(_OfShared):
    """A namespace's part of a `Shared` kind, read as that namespace's own informer
    (`informer.View`): its objects by name, the cluster-wide informer's version and
    breaks; synced once its part is filled and the cluster-wide informer has listed.
    Proven through the whole kind (`scope`): one short watch, not one a namespace."""

    key = staticmethod(by_name)

    @property
    def scope(self) -> Whole:
        return self.shared.whole

    def filled(self) -> frozenset[str] | None:
        return None  # not synced until filled: a proof lists it instead

    def __init__(self, shared: Shared, namespace: str, changed: Changed,
                 listed: Callable[[], None]) -> None:
        self.shared = shared
        self.namespace = namespace
        self.changed = changed
        self.listed = listed
        self.held: dict[str, PodView] = {}
        self.filled_at: int | None = None  # the version its part is current to, once filled
        self.waiting: list[tuple[str, PodView | None, int]] = []  # changes while filling
        self.filling: asyncio.Task[None] | None = None

    @property
    def items(self) -> Mapping[str, PodView]:
        return self.held

    @property
    def synced(self) -> bool:
        return self.filled_at is not None and self.shared.informer.synced

    def apply(self, name: str, new: PodView | None) -> None:
        """One change of the namespace's part, told to its listener."""
        old = self.held.pop(name, None) if new is None else self.held.get(name)
        if new is not None:
            self.held[name] = new
        if old != new:
            self.changed(name, old, new)

    def fill(self, objects: Mapping[str, PodView], version: int) -> None:
        """The namespace's part as a list current to `version` has it, then the changes
        that came since, past that version."""
        for name in self.held.keys() - objects.keys():
            self.apply(name, None)
        for name, view in objects.items():
            self.apply(name, view)
        self.filled_at = version
        waiting, self.waiting = self.waiting, []
        for name, change, at in waiting:
            if at > version:
                self.apply(name, change)
        self.listed()


class Whole(_OfShared):
    """Every filled part of a `Shared` kind as one view of every namespace, keyed
    "namespace/name" (`key`): what one short watch of the kind in every namespace proves
    for all of them at once (barrier.py), where a watch of each namespace cost a new
    connection a second for each kind in each namespace with deadlines. A part filled
    past the informer's version holds more than its version says: the watch from that
    version brings its changes again, in order, and ends at the state of its bookmark."""

    key = staticmethod(namespaced)
    namespace = ""

    def __init__(self, shared: Shared) -> None:
        self.shared = shared

    @property
    def scope(self) -> Whole:
        return self

    def filled(self) -> frozenset[str] | None:
        return frozenset(namespace for namespace, part in self.shared.slices.items()
                         if part.filled_at is not None)

    @property
    def items(self) -> Mapping[str, PodView]:
        return {f"{namespace}/{name}": view
                for namespace, part in self.shared.slices.items() if part.filled_at is not None
                for name, view in part.held.items()}

    @property
    def synced(self) -> bool:
        return self.shared.informer.synced


class Shared:
    """One workload kind in every namespace with claims: its informer, and the namespaces'
    parts (`Slice`)."""

    def __init__(self, source: Source, kind: UserKind, *,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        self.source = source
        self.sleep = sleep
        self.slices: dict[str, Slice] = {}
        self._listing = False  # the informer's list is under way
        self._covered: set[str] = set()  # attached when it began: the list holds them whole
        self.informer = _ClusterInformer(
            self._began, source, kind.collection, "", kind.project,
            self._changed, self._listed, key=namespaced, keep=self._keeps, hold=False)
        self.task: asyncio.Task[None] | None = None
        self._fills: set[asyncio.Task[None]] = set()  # namespaces' own lists under way
        self.whole = Whole(self)

    def attach(self, namespace: str, changed: Changed, listed: Callable[[], None]) -> Slice:
        """The namespace's part, whose changes go to `changed`, and `listed` once filled."""
        part = self.slices[namespace] = Slice(self, namespace, changed, listed)
        if self.task is None:  # the informer's first list holds it, and those attached
            self._began()  # before it begins (not each a list of its own, cancelled after)
            self.task = asyncio.create_task(self.informer.run(),
                                            name=f"{self.informer.kind} in every namespace")
        elif not self._listing:  # else the list under way may have passed it: after it
            self._start_fill(part)
        return part

    def detach(self, namespace: str) -> None:
        # Attached again while the same list runs, it is not whole in that list either.
        self._covered.discard(namespace)
        self.slices.pop(namespace, None)  # a list of its own under way is passed over

    def _keeps(self, key: str) -> bool:
        return key.partition("/")[0] in self.slices

    def _began(self) -> None:
        self._listing = True
        self._covered = set(self.slices)

    def _changed(self, key: str, _old: PodView | None, new: PodView | None) -> None:
        namespace, _, name = key.partition("/")
        part = self.slices.get(namespace)
        if part is None or (self._listing and namespace not in self._covered):
            return  # a namespace attached during a list: its part is in none of it
        version = self.informer.version  # the change's own (set before it is told)
        if part.filled_at is None:
            part.waiting.append((name, new, version))
        elif version > part.filled_at:
            part.apply(name, new)

    def _listed(self) -> None:
        """The informer's list is in (its `items`, until this returns): the parts it
        holds whole are taken from it; those of namespaces attached while it ran are
        listed on their own now."""
        self._listing = False
        parts: dict[str, dict[str, PodView]] = {namespace: {} for namespace in self._covered
                                                if namespace in self.slices}
        for key, view in self.informer.items.items():
            namespace, _, name = key.partition("/")
            if namespace in parts:
                parts[namespace][name] = view
        for part in list(self.slices.values()):
            if part.namespace in parts:
                part.filling = None  # a list of its own under way is passed over
                part.waiting = []
                part.fill(parts[part.namespace], self.informer.version)
            elif part.filled_at is None and part.filling is None:
                self._start_fill(part)

    def _start_fill(self, part: Slice) -> None:
        part.filling = asyncio.create_task(self._fill(part),
                                           name=f"{self.informer.kind} in {part.namespace}")
        self._fills.add(part.filling)
        part.filling.add_done_callback(self._fills.discard)

    def _wanted(self, part: Slice) -> bool:
        """Whether a list of `part`'s own is still what fills it: its namespace is not
        released, and no list of the cluster-wide informer filled it first."""
        return self.slices.get(part.namespace) is part and part.filled_at is None

    async def _fill(self, part: Slice) -> None:
        """A namespace attached while the watch runs: its part, listed on its own. The
        watch's changes of it wait meanwhile; those past the list's version are applied."""
        failures = Failures(f"Listing {self.informer.kind} in {part.namespace}")
        objects: dict[str, PodView] = {}

        def take(item: dict[str, Any]) -> None:
            objects[item["metadata"]["name"]] = self.informer.project(item)

        while True:
            objects.clear()
            try:
                version = await self.source.list_all(self.informer.kind, part.namespace,
                                                     take)
                break
            except asyncio.CancelledError:
                raise
            except Exception as error:
                if not self._wanted(part):
                    return
                await self.sleep(failures.failed(error))
                if not self._wanted(part):
                    return
        if self._wanted(part):
            part.filling = None
            part.fill(objects, listwatch.as_number(version))

    async def close(self) -> None:
        tasks = [task for task in (self.task, *self._fills) if task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
