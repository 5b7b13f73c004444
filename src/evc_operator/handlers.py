"""Kopf handlers: read events, decide with the pure modules, apply through `kube`.

No handler here writes Kopf's own bookkeeping to objects: the EVC is handled
level-based with `on.event` (no diff-base annotation, no progress annotations,
no finalizer), so deleting an EVC never waits for this operator.
"""

from __future__ import annotations

from typing import Any

import kopf

from evc_operator import claims, kube
from evc_operator.resources import EVC, PVC
from evc_operator.settings import Settings, SettingsError


@kopf.on.startup()
async def start(settings: kopf.OperatorSettings, memo: kopf.Memo,
                logger: kopf.Logger, **_: Any) -> None:
    try:
        memo.settings = Settings.from_environ()
    except SettingsError as error:
        raise kopf.PermanentError(f"invalid configuration: {error}") from None
    # Decided once: Kopf's state for this operator lives in annotations, never in status.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage()
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage()
    memo.api = await kube.connect()
    logger.info("Settings: %s", memo.settings)


@kopf.on.cleanup()
async def stop(memo: kopf.Memo, **_: Any) -> None:
    api = memo.get("api")
    if api is not None:
        await api.close()


PvcOwners = kopf.Index[tuple[str, str], tuple[str, ...]]


@kopf.index(*PVC)
async def pvc_owners(name: str, namespace: str | None, body: kopf.Body,
                     **_: Any) -> dict[tuple[str, str], tuple[str, ...]]:
    """(namespace, name) -> uids of the PVC's controlling owners: a small projection."""
    references = body.metadata.get("ownerReferences") or []
    owners = tuple(ref["uid"] for ref in references if ref.get("controller"))
    return {(namespace or "", name): owners}


@kopf.on.event(*EVC)
async def evc_changed(type: str, body: kopf.Body, memo: kopf.Memo, logger: kopf.Logger,
                      **kwargs: Any) -> None:
    if type == "DELETED" or body.metadata.get("deletionTimestamp"):
        return
    pvc_owners: PvcOwners = kwargs["pvc_owners"]  # Kopf passes indexes by their name
    name, namespace, uid = body.metadata["name"], body.metadata["namespace"], body.metadata["uid"]
    if any(uid in owners for owners in pvc_owners.get((namespace, name), ())):
        return  # our PVC exists: nothing to do
    outcome = await kube.ensure_pvc(memo.api, claims.desired_pvc(body))
    if outcome.created:
        kopf.info(body, reason="PvcCreated",
                  message=f"Created PersistentVolumeClaim {name} of {body.spec['size']}.")
        logger.info("Created PersistentVolumeClaim %s.", name)
    elif not claims.is_owned_by(outcome.pvc, uid):
        message = (f"PersistentVolumeClaim {name} already exists and is not owned by this "
                   f"EphemeralVolumeClaim; it is left untouched.")
        kopf.warn(body, reason="PvcConflict", message=message)
        logger.warning(message)
