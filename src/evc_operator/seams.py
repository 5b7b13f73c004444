"""What the per-claim reconcile needs from the cluster, as small Protocols, and the real ones.

`ClaimApi` is the API calls a reconciliation makes; `PodIndex` the live views it reads
(watched.Watched is one). Unit tests pass fakes of both; `KubeClaimApi` is the real API.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from evc_operator import kube
from evc_operator.claims import PvcView
from evc_operator.evc import Key
from evc_operator.status import Event
from evc_operator.users import PodView


class ClaimApi(Protocol):
    """The writes (and the two reads) of a reconciliation; errors as in `errors`."""

    async def create_pvc(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """Returns the PVC as stored."""
        ...

    async def read_pvc(self, namespace: str, name: str) -> dict[str, Any] | None: ...

    async def patch_pvc(self, namespace: str, name: str, uid: str, resource_version: str,
                        patch: Mapping[str, Any]) -> str:
        """Returns the patched PVC's resourceVersion."""
        ...

    async def read_evc(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The EVC as stored now (None: gone): whether a record is still as written."""
        ...

    async def patch_evc_status(self, namespace: str, name: str,
                               status: Mapping[str, Any]) -> dict[str, Any]: ...

    async def delete_evc(self, namespace: str, name: str, uid: str,
                         resource_version: str, orphan: bool = False) -> None: ...

    async def post_event(self, namespace: str, name: str, uid: str, event: Event,
                         now: datetime.datetime) -> None: ...


class PodIndex(Protocol):
    """The live views of pods and PVCs, per namespace."""

    def pods_of_claim(self, key: Key) -> Sequence[PodView]: ...

    def pods_in(self, namespace: str) -> Sequence[PodView]: ...

    def pvc(self, key: Key) -> PvcView | None: ...

    def controller_seen(self, namespace: str, runner: str) -> bool | None:
        """Whether a pod's controller (`Kind.group/name`: unwatched.runner) is among the
        namespace's views; None if no kind watched there could hold it."""

    def synced(self, namespace: str) -> bool: ...

    def all_synced(self) -> bool: ...


class KubeClaimApi:
    """`ClaimApi` on the real API server, through `kube`."""

    def __init__(self, api: kube.Api) -> None:
        self.api = api

    async def create_pvc(self, body: Mapping[str, Any]) -> dict[str, Any]:
        return await kube.create_pvc(self.api, body)

    async def read_pvc(self, namespace: str, name: str) -> dict[str, Any] | None:
        return await kube.read_pvc(self.api, namespace, name)

    async def patch_pvc(self, namespace: str, name: str, uid: str, resource_version: str,
                        patch: Mapping[str, Any]) -> str:
        patched = await kube.patch_pvc(self.api, namespace, name, uid, resource_version, patch)
        return str(patched["metadata"]["resourceVersion"])

    async def read_evc(self, namespace: str, name: str) -> dict[str, Any] | None:
        return await kube.read_evc(self.api, namespace, name)

    async def patch_evc_status(self, namespace: str, name: str,
                               status: Mapping[str, Any]) -> dict[str, Any]:
        return await kube.patch_evc_status(self.api, namespace, name, status)

    async def delete_evc(self, namespace: str, name: str, uid: str,
                         resource_version: str, orphan: bool = False) -> None:
        await kube.delete_evc(self.api, namespace, name, uid, resource_version, orphan)

    async def post_event(self, namespace: str, name: str, uid: str, event: Event,
                         now: datetime.datetime) -> None:
        await kube.post_event(self.api, namespace, name, uid, type=event.type,
                              reason=event.reason, message=event.message, now=now)
