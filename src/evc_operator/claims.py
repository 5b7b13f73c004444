"""The PersistentVolumeClaim that an EphemeralVolumeClaim asks for. Pure: no API calls.

`desired_pvc` is what to create; `plan_pvc` compares it with the PVC observed
and says what to do: create, patch (grow, sync labels), report a conflict, or
nothing. A PVC that the EVC does not control is never planned for change.
"""

from __future__ import annotations

import dataclasses
import decimal
import enum
import json
import re
from collections.abc import Mapping
from typing import Any

from evc_operator.interning import interned
from evc_operator.resources import API_VERSION, KIND

DEFAULT_ACCESS_MODES = ("ReadWriteOnce",)
# Which labels the operator put on the PVC, so that labels removed from the EVC are
# removed from the PVC too, while labels others put there stay.
MANAGED_LABELS_ANNOTATION = "evc.zalando.org/managed-labels"
MAX_MANAGED_ANNOTATION = 65536  # far above the keys of the largest labels a claim may copy
# The most a claim's labels may take (keys and values, in bytes) to be copied to its PVC.
# A claim's metadata is its author's to fill, the operator's memory everyone's: larger
# labels are not kept, and no PVC is created or updated for such a claim (the policy in
# config/admission refuses it at admission, with the same limit).
MAX_LABEL_BYTES = 8192

_QUANTITY = re.compile(r"^([+-]?[0-9.]+)([eE][+-]?[0-9]+|[KMGTPE]i|[numkMGTPE])?$")
_SUFFIX: dict[str, decimal.Decimal | int] = {
    "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60,
    "n": decimal.Decimal("1e-9"), "u": decimal.Decimal("1e-6"), "m": decimal.Decimal("1e-3"),
    "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15, "E": 10**18,
}


def parse_quantity(value: object) -> decimal.Decimal:
    """A Kubernetes quantity ('1Gi', '500M', '1e3', 1024) as a number of units."""
    match = _QUANTITY.match(str(value).strip())
    if not match:
        raise ValueError(f"not a quantity: {value!r}")
    suffix = match.group(2) or ""
    try:
        number = decimal.Decimal(match.group(1))
        if suffix in _SUFFIX:  # before exponents: 'E' and 'Ei' are exa, not 'e'
            return number * decimal.Decimal(_SUFFIX[suffix])
        if suffix:
            return number * decimal.Decimal(10) ** int(suffix[1:])
    except decimal.DecimalException:  # not a number, or out of any range (1e1000000)
        raise ValueError(f"not a quantity: {value!r}") from None
    return number


@dataclasses.dataclass(frozen=True, slots=True)
class PvcView:
    """A small projection of an observed PVC."""

    name: str
    namespace: str
    uid: str
    resource_version: str
    controllers: tuple[str, ...]  # uids of controlling owners
    labels: tuple[tuple[str, str], ...]  # those it manages (managed_labels) only
    managed_labels: tuple[str, ...]
    storage: str
    deleting: bool
    phase: str = "Pending"  # status.phase: Pending, Bound or Lost
    # The spec fields a claim may ask for, as stored (`spec_fields`): to tell when the API
    # server dropped or changed one.
    fields: tuple[tuple[str, str], ...] = ()
    # Its controller is an EphemeralVolumeClaim of its own name: this claim, or an earlier
    # one of the name (deleted, its PVC not collected yet).
    namesakes: bool = False
    # uids of owners it refers to without their being its controller (most PVCs: none).
    # Deleting such an owner in the background deletes it too (the garbage collector).
    others: tuple[str, ...] = ()


def pvc_view(body: Mapping[str, Any]) -> PvcView:
    metadata, spec = body.get("metadata") or {}, body.get("spec") or {}
    annotations = metadata.get("annotations") or {}
    text = annotations.get(MANAGED_LABELS_ANNOTATION, "[]")
    try:  # longer than any list the operator writes: not its own
        listed = json.loads(text) if len(text) <= MAX_MANAGED_ANNOTATION else []
    except (ValueError, TypeError):
        listed = []
    # Anything but a list of strings manages nothing: never remove labels on a guess.
    valid = isinstance(listed, list) and all(isinstance(key, str) for key in listed)
    managed = tuple(listed) if valid else ()
    # Only the labels the operator manages are held: planning reads no other (a label the
    # claim adds is set whatever the PVC had), and a PVC's labels, ours or not, can be
    # anyone's, of any size.
    labels = metadata.get("labels") or {}
    owners = metadata.get("ownerReferences") or ()
    held = sorted((key, labels[key]) for key in set(managed) if key in labels)
    return PvcView(
        name=metadata["name"],
        namespace=interned(metadata.get("namespace") or ""),
        uid=metadata.get("uid", ""),
        resource_version=metadata.get("resourceVersion", ""),
        controllers=tuple(ref["uid"] for ref in owners if ref.get("controller")),
        others=tuple(ref["uid"] for ref in owners if not ref.get("controller") and "uid" in ref),
        labels=tuple(held),
        managed_labels=managed,
        # Values most PVCs share (a size, a phase) are stored once: ten thousand are held.
        storage=interned(str(((spec.get("resources") or {}).get("requests") or {})
                               .get("storage", ""))),
        deleting=bool(metadata.get("deletionTimestamp")),
        phase=interned(str((body.get("status") or {}).get("phase") or "Pending")),
        fields=spec_fields(spec),
        namesakes=any(ref.get("controller") and ref.get("kind") == KIND
                      and ref.get("apiVersion") == API_VERSION
                      and ref.get("name") == metadata["name"] for ref in owners),
    )


# The PVC's spec fields an EVC may set (besides its size, which the operator grows).
ASKED_FIELDS = ("accessModes", "storageClassName", "volumeMode", "dataSourceRef")


def spec_fields(spec: Mapping[str, Any]) -> tuple[tuple[str, str], ...]:
    """The fields of a PVC spec that an EVC may ask for, flattened to (path, value); empty
    values count as unset."""
    found: list[tuple[str, str]] = []
    for field in ASKED_FIELDS:
        value = spec.get(field)
        if isinstance(value, Mapping):
            found += [(interned(f"{field}.{key}"), interned(str(item)))
                      for key, item in sorted(value.items()) if item not in (None, "")]
        elif isinstance(value, list):
            found.append((field, interned(",".join(str(item) for item in value))))
        elif value not in (None, ""):
            found.append((field, interned(str(value))))
    return tuple(found)


def not_as_asked(evc: Mapping[str, Any], observed: PvcView) -> list[str]:
    """What the claim asks for that its PVC does not have: each field the API server
    dropped (e.g. a cross-namespace dataSourceRef without the CrossNamespaceVolumeDataSource
    feature gate) or changed (a mutating admission webhook). Fields the API server added
    (defaults) are not differences."""
    stored = dict(observed.fields)
    asked = spec_fields(desired_pvc(evc)["spec"])
    missing: list[str] = []
    for field in ASKED_FIELDS:
        paths = [(path, value) for path, value in asked
                 if path == field or path.startswith(f"{field}.")]
        if paths and not any(path in stored for path, _ in paths) and len(paths) > 1:
            whole = ", ".join(f"{path[len(field) + 1:]}={value}" for path, value in paths)
            missing.append(f"spec.{field} (asked {whole}; got none)")  # dropped whole
            continue
        missing += [f"spec.{path} (asked {value!r}, got "
                    f"{repr(stored[path]) if path in stored else 'none'})"
                    for path, value in paths if stored.get(path) != value]
    return missing

def desired_pvc(evc: Mapping[str, Any]) -> dict[str, Any]:
    """The PVC for this EVC: same name, namespace and labels, owned by the EVC.

    The owner reference (controller, blockOwnerDeletion) makes the garbage
    collector delete the PVC when the EVC goes; the PVC-protection finalizer then
    keeps the volume until no pod references it.
    """
    metadata = evc["metadata"]
    spec = evc.get("spec") or {}
    labels = dict(metadata.get("labels") or {})
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
            "labels": labels,
            "annotations": {MANAGED_LABELS_ANNOTATION: json.dumps(sorted(labels))},
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


class PvcStep(enum.StrEnum):
    CREATE = "create"  # no PVC of that name
    PATCH = "patch"  # ours, but labels or size differ
    CONFLICT = "conflict"  # a PVC of that name that is not ours: never touched
    WAIT = "wait"  # ours, being deleted (by someone): recreate once it is gone
    NONE = "none"


@dataclasses.dataclass(frozen=True)
class PvcPlan:
    step: PvcStep
    patch: dict[str, Any] = dataclasses.field(default_factory=dict)
    message: str = ""


def plan_pvc(evc: Mapping[str, Any], observed: PvcView | None) -> PvcPlan:
    name = evc["metadata"]["name"]
    if observed is None:
        return PvcPlan(PvcStep.CREATE)
    if evc["metadata"]["uid"] not in observed.controllers:
        if observed.namesakes and not observed.deleting:
            # The claim applied again before the garbage collector got to the earlier
            # one's PVC: it is about to be deleted. Not "rename the claim".
            return PvcPlan(PvcStep.CONFLICT, message=(
                f"PersistentVolumeClaim {name} is an earlier EphemeralVolumeClaim's of the "
                f"same name, deleted; the garbage collector deletes it, it is left "
                f"untouched, and this claim's is created once it is gone. Kubernetes keeps "
                f"it while any pod refers to it, finished pods included: delete those to "
                f"let it go."))
        if observed.deleting:
            # Most often an earlier claim's of the same name (applied again while a pod of
            # the earlier one, finished or not, still refers to it: kept till then).
            return PvcPlan(PvcStep.CONFLICT, message=(
                f"PersistentVolumeClaim {name} is not this EphemeralVolumeClaim's and is "
                f"being deleted (an earlier claim's of the same name, perhaps); it is left "
                f"untouched, and this claim's is created once it is gone. Kubernetes keeps "
                f"it while any pod refers to it, finished pods included: delete those to "
                f"let it go."))
        if evc["metadata"]["uid"] in observed.others:
            return PvcPlan(PvcStep.CONFLICT, message=(
                f"PersistentVolumeClaim {name} already exists and is not this "
                f"EphemeralVolumeClaim's (it names the claim as an owner, not as its "
                f"controller); it is left untouched, and kept should the claim be deleted "
                f"(the claim is deleted orphaning it: the garbage collector removes that "
                f"owner reference, nothing else). Rename the claim, or delete that PVC if it "
                f"is not needed."))
        return PvcPlan(PvcStep.CONFLICT, message=(
            f"PersistentVolumeClaim {name} already exists and is not owned by this "
            f"EphemeralVolumeClaim; it is left untouched. Rename the claim, or delete "
            f"that PVC if it is not needed."))
    if observed.deleting:
        return PvcPlan(PvcStep.WAIT)

    patch: dict[str, Any] = {}
    desired_labels = dict(evc["metadata"].get("labels") or {})
    current = dict(observed.labels)
    label_patch: dict[str, str | None] = {
        key: value for key, value in desired_labels.items() if current.get(key) != value}
    label_patch.update({key: None for key in observed.managed_labels
                        if key not in desired_labels and key in current})
    if label_patch:
        patch.setdefault("metadata", {})["labels"] = label_patch
    if sorted(observed.managed_labels) != sorted(desired_labels):
        patch.setdefault("metadata", {})["annotations"] = {
            MANAGED_LABELS_ANNOTATION: json.dumps(sorted(desired_labels))}

    size = (evc.get("spec") or {}).get("size")
    try:
        grow = parse_quantity(size) > parse_quantity(observed.storage)
    except (ValueError, decimal.InvalidOperation):
        grow = False
    if grow:
        patch["spec"] = {"resources": {"requests": {"storage": str(size)}}}
    return PvcPlan(PvcStep.PATCH, patch=patch) if patch else PvcPlan(PvcStep.NONE)


def update_attempt(evc: Mapping[str, Any], generation: int,
                   observed: PvcView) -> tuple[object, ...]:
    """What a PVC update was tried on: the EVC's spec and labels, and the PVC's version.
    An update the API server refused for good is not tried again on the same."""
    labels = tuple(sorted((evc["metadata"].get("labels") or {}).items()))
    return (generation, labels, observed.resource_version)
