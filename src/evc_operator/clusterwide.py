"""Workloads watched once for the whole cluster, each namespace seeing its part as its own.

An operator serving every namespace (`--all-namespaces`: the chart's and the image's
way) held, for each namespace with claims, a watch of every kind of its users and of its
PVCs: nine connections of about 67 KiB each (docs/benchmarks.md: 150 namespaces, 155 MiB
at rest). Seven are workload kinds (workloads.KINDS), which in most namespaces hold
little or nothing. Here each workload kind has one informer for the cluster, and each
namespace with claims reads its part of it through a `Slice`, an `informer.View` like its
own informer's would be; the pods and PVCs stay per namespace (pods are many, and only
the namespaces with claims are read). watched.py uses these where the operator serves
every namespace and may list and watch the workloads cluster-wide (handlers.py).

Proofs hold the same (proof.py, barrier.py). resourceVersions are the cluster's, so the
cluster-wide informer's version means what a namespace's own did: every change up to it
is applied, in this namespace as in every other; and a proof's short watch of one
namespace from that version brings the namespace's changes after it. A cluster-wide
watch moves on with the changes of every namespace, so it passes a proof's read sooner
than the watch of a quiet namespace, whose only news is a bookmark.

The objects of namespaces without claims are held too (a projection of a few hundred
bytes each): a namespace that gets its first claim has its workloads at once, with no
list of its own to reconcile with the cluster's watch.
"""

from __future__ import annotations

import asyncio
import functools
import types
from collections.abc import Callable, Mapping
from typing import Any

from evc_operator.informer import Informer, Source
from evc_operator.users import PodView
from evc_operator.workloads import collection, workload_view

Changed = Callable[[str, PodView | None, PodView | None], None]
_NONE: Mapping[str, PodView] = types.MappingProxyType({})


def namespaced(metadata: Mapping[str, Any]) -> str:
    """How a cluster-wide informer holds its objects: "namespace/name" (a namespace's
    name has no slash)."""
    return f"{metadata.get('namespace') or ''}/{metadata['name']}"


class Shared:
    """One workload kind in every namespace: the informer, its objects by namespace, and
    whom to tell of a change in each namespace with claims."""

    def __init__(self, source: Source, kind: str, *, listed: Callable[[], None]) -> None:
        self.by_namespace: dict[str, dict[str, PodView]] = {}
        self.listeners: dict[str, Changed] = {}
        self.informer = Informer(source, collection(kind), "",
                                 functools.partial(workload_view, kind), self._changed,
                                 listed, key=namespaced)
        self.task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self.task is None:
            self.task = asyncio.create_task(self.informer.run(),
                                            name=f"{self.informer.kind} in every namespace")

    def attach(self, namespace: str, changed: Changed) -> Slice:
        """The namespace's part, whose changes go to `changed` from now on."""
        self.listeners[namespace] = changed
        return Slice(self, namespace)

    def detach(self, namespace: str) -> None:
        self.listeners.pop(namespace, None)

    def _changed(self, key: str, old: PodView | None, new: PodView | None) -> None:
        namespace, _, name = key.partition("/")
        held = self.by_namespace.setdefault(namespace, {})
        if new is None:
            held.pop(name, None)
            if not held:
                del self.by_namespace[namespace]
        else:
            held[name] = new
        changed = self.listeners.get(namespace)
        if changed is not None:
            changed(name, old, new)

    async def close(self) -> None:
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)


class Slice:
    """A namespace's part of a `Shared` kind, read as that namespace's own informer
    (`informer.View`): its objects by name, the cluster-wide informer's version, breaks
    and sync."""

    def __init__(self, shared: Shared, namespace: str) -> None:
        self.shared = shared
        self.namespace = namespace

    @property
    def kind(self) -> str:
        return self.shared.informer.kind

    @property
    def items(self) -> Mapping[str, PodView]:
        return self.shared.by_namespace.get(self.namespace, _NONE)

    @property
    def version(self) -> int:
        return self.shared.informer.version

    @property
    def breaks(self) -> int:
        return self.shared.informer.breaks

    @property
    def synced(self) -> bool:
        return self.shared.informer.synced

    def project(self, body: Any) -> PodView:
        return self.shared.informer.project(body)

    def reached(self, version: int) -> asyncio.Future[None]:
        return self.shared.informer.reached(version)
