"""The PersistentVolumeClaim that an EphemeralVolumeClaim asks for. Pure: no API calls."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from evc_operator.resources import API_VERSION, KIND

DEFAULT_ACCESS_MODES = ("ReadWriteOnce",)


def desired_pvc(evc: Mapping[str, Any]) -> dict[str, Any]:
    """The PVC for this EVC: same name, namespace and labels, owned by the EVC.

    The owner reference (controller, blockOwnerDeletion) makes the garbage
    collector delete the PVC when the EVC goes; the PVC-protection finalizer then
    keeps the volume until no pod references it.
    """
    metadata = evc["metadata"]
    spec = evc.get("spec") or {}
    pvc_spec: dict[str, Any] = {
        "accessModes": list(spec.get("accessModes") or DEFAULT_ACCESS_MODES),
        "resources": {"requests": {"storage": str(spec["size"])}},
    }
    for field in ("storageClassName", "volumeMode", "dataSourceRef"):
        if spec.get(field) is not None:
            pvc_spec[field] = spec[field]
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {
            "name": metadata["name"],
            "namespace": metadata["namespace"],
            "labels": dict(metadata.get("labels") or {}),
            "ownerReferences": [owner_reference(evc)],
        },
        "spec": pvc_spec,
    }


def owner_reference(evc: Mapping[str, Any]) -> dict[str, Any]:
    metadata = evc["metadata"]
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "name": metadata["name"],
        "uid": metadata["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def is_owned_by(pvc: Mapping[str, Any], evc_uid: str) -> bool:
    """Whether the PVC's controlling owner is the EVC with this uid."""
    references = (pvc.get("metadata") or {}).get("ownerReferences") or []
    return any(ref.get("uid") == evc_uid and ref.get("controller") for ref in references)
