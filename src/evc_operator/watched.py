"""The users (pods, workloads) and PVCs of every namespace with a claim, watched.

Only the namespaces that hold EVCs are read at all, since a pod can use a claim of its
own namespace only: each gets an informer (informer.py) of its pods and one of its PVCs
when its first claim appears, and they stop when its last claim (or the namespace) is
gone. Workloads (workloads.KINDS: Jobs, CronJobs, Deployments, ...; and the custom
resources of USER_KINDS, customkinds.py) are users too, kept as a `PodView` named
`Kind/name` (`plural.group/name`) beside the pods', in the same index, so a claim's users
are found the same way: an informer of each kind per namespace or, once
`share_workloads` is called (an operator serving every namespace, allowed to list them
cluster-wide), one for the cluster that holds the parts of the namespaces with claims
(clusterwide.py): two watches a namespace instead of nine.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from evc_operator.claims import PvcView, pvc_view
from evc_operator.clusterwide import Shared
from evc_operator.evc import Key
from evc_operator.informer import Informer, Source, View
from evc_operator.users import ANY_ORDINAL, PodView, mounting_views, ordinal_marker, pod_view
from evc_operator.workloads import BUILT_IN, UserKind


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
                 namespace_synced: Callable[[str], None],
                 kinds: Sequence[UserKind] = BUILT_IN) -> None:
        self.source = source
        self.kinds = tuple(kinds)  # the workload kinds, and those of USER_KINDS
        self.pods_changed = pods_changed
        self.pvc_changed = pvc_changed
        self.namespace_synced = namespace_synced
        self.pods: dict[str, Informer[PodView]] = {}
        self.workloads: dict[str, list[View[PodView]]] = {}
        self.claims: dict[str, NamespacePods] = {}
        self.pvcs: dict[str, Informer[PvcView]] = {}
        self._tasks: dict[str, list[asyncio.Task[None]]] = {}
        self.shared: list[Shared] = []  # see `share_workloads`

    def share_workloads(self) -> None:
        """Watch each workload kind once for the cluster, for the namespaces watched
        from now on (those watched already keep their own informers)."""
        if not self.shared:
            self.shared = [Shared(self.source, kind) for kind in self.kinds]

    def ensure(self, namespace: str) -> None:
        """Start watching a namespace's users and PVCs (once)."""
        if namespace in self._tasks:
            return
        users = NamespacePods()

        def user_changed(name: str, old: PodView | None, new: PodView | None) -> None:
            # Indexed by the view's name ("Job/x" for a Job): a pod and a Job may both be
            # named x, and one's end must not take the other out of the claim's users.
            view = new or old
            touched = users.update(view.name if view else name, old, new)
            self.pods_changed(namespace, touched | self._beyond_ordinals(namespace, touched),
                              (old, new))

        def pvc_changed(name: str, _old: PvcView | None, _new: PvcView | None) -> None:
            self.pvc_changed((namespace, name))

        def listed() -> None:
            if self.synced(namespace):
                self.namespace_synced(namespace)

        self.claims[namespace] = users
        self.pods[namespace] = Informer(self.source, "pods", namespace, pod_view,
                                        user_changed, listed)
        self.pvcs[namespace] = Informer(self.source, "persistentvolumeclaims", namespace,
                                        pvc_view, pvc_changed, listed)
        own: list[Informer[Any]] = [self.pods[namespace], self.pvcs[namespace]]
        if self.shared:
            self.workloads[namespace] = [shared.attach(namespace, user_changed, listed)
                                         for shared in self.shared]
        else:
            workloads = [Informer(self.source, kind.collection, namespace, kind.project,
                                  user_changed, listed) for kind in self.kinds]
            self.workloads[namespace] = list(workloads)
            own += workloads
        self._tasks[namespace] = [
            asyncio.create_task(informer.run(), name=f"{informer.kind} in {namespace}")
            for informer in own]

    def _beyond_ordinals(self, namespace: str, touched: set[str]) -> set[str]:
        """The claims a StatefulSet's change concerns beyond those it names: the PVCs
        named for its claim templates' other ordinals (`ordinal_marker`), whose use by it
        now ends at its new last write. Looked for once the namespace is listed (its
        listing looks at every claim anyway); a scan of the namespace's PVCs, at each
        write of a StatefulSet with claim templates (its spec, scale, labels: the times
        in `managedFields`), not of its status."""
        markers = {claim for claim in touched if claim.endswith(ANY_ORDINAL)}
        pvcs = self.pvcs.get(namespace)
        if not markers or pvcs is None or not self.synced(namespace):
            return set()
        return {name for name in pvcs.items if ordinal_marker(name) in markers}

    def release(self, namespace: str) -> None:
        """Stop watching a namespace (its last claim is gone, or the namespace is)."""
        for task in self._tasks.pop(namespace, ()):
            task.cancel()
        for shared in self.shared:
            shared.detach(namespace)
        self.pods.pop(namespace, None)
        self.workloads.pop(namespace, None)
        self.claims.pop(namespace, None)
        self.pvcs.pop(namespace, None)

    def watching(self) -> list[str]:
        return list(self._tasks)

    def users(self, namespace: str) -> list[View[PodView]]:
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
        """The views that mount a claim, and the StatefulSets that list it by its
        `ordinal_marker` (users.users_of tells them apart), each once."""
        pods = self.claims.get(key[0])
        if not pods:
            return []
        by_claim = pods.by_claim
        return list(mounting_views(key[1], lambda name: by_claim.get(name, {}).values()))

    def pods_in(self, namespace: str) -> list[PodView]:
        """Every user-shaped view of a namespace: its pods and its workloads."""
        return [view for informer in self.users(namespace) for view in informer.items.values()]

    def pvc(self, key: Key) -> PvcView | None:
        informer = self.pvcs.get(key[0])
        return informer.items.get(key[1]) if informer else None

    def controller_seen(self, namespace: str, runner: str) -> bool | None:
        """Whether a pod's controller (`Kind.group/name`) is among the namespace's views
        of the kinds watched there: a built-in one by its kind and group, one of
        USER_KINDS by its group (its views are named by plural, not kind). None if no kind
        watched there could be its."""
        qualified, _, name = runner.partition("/")
        kind, _, group = qualified.partition(".")
        views = [view for user_kind, view in zip(self.kinds, self.workloads.get(namespace, ()),
                                                 strict=False)
                 if user_kind.group == group and (user_kind.name == kind
                                                  or "." in user_kind.name)]
        return any(name in view.items for view in views) if views else None

    async def close(self) -> None:
        tasks = [task for started in self._tasks.values() for task in started]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for shared in self.shared:
            await shared.close()


