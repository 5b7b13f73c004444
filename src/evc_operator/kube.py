"""The one module that talks to the Kubernetes API on the operator's behalf.

Everything here is async (kubernetes_asyncio) because it runs inside Kopf's
event loop; a sync client there would stall every other handler.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, cast

from kubernetes_asyncio import client, config
from kubernetes_asyncio.client.exceptions import ApiException


async def connect() -> client.ApiClient:
    """An API client for the cluster this process runs in, else the kubeconfig's."""
    configuration = client.Configuration()
    try:
        config.load_incluster_config(  # type: ignore[no-untyped-call]
            client_configuration=configuration)
    except config.ConfigException:
        await config.load_kube_config(client_configuration=configuration)
    return client.ApiClient(configuration)


@dataclasses.dataclass(frozen=True)
class PvcOutcome:
    """What ensure_pvc found: `created` is True when this call created the PVC."""

    created: bool
    pvc: dict[str, Any]


async def ensure_pvc(api: client.ApiClient, desired: Mapping[str, Any]) -> PvcOutcome:
    """Create the PVC; if one of that name exists, return it untouched.

    Create-first (not read-then-create) leaves no gap for a race, and an
    existing PVC is never modified here: the caller decides whether it is ours.
    """
    core = client.CoreV1Api(api)
    namespace = desired["metadata"]["namespace"]
    try:
        # The client serialises plain dicts as they are; its models would add nothing here.
        body = cast(client.V1PersistentVolumeClaim, dict(desired))
        created = await core.create_namespaced_persistent_volume_claim(namespace, body)
        return PvcOutcome(created=True, pvc=api.sanitize_for_serialization(created))
    except ApiException as error:
        if error.status != 409:
            raise
    existing = await core.read_namespaced_persistent_volume_claim(
        desired["metadata"]["name"], namespace)
    return PvcOutcome(created=False, pvc=api.sanitize_for_serialization(existing))
