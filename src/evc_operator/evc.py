"""What an EphemeralVolumeClaim says, read from its body. Pure: no API calls.

Bad values do not raise: they come back as `problems`, which the operator
reports in a condition and an Event, and which stop deletion (never delete
because of input we could not understand).
"""

from __future__ import annotations

import dataclasses
import datetime
import sys
from collections.abc import Mapping
from typing import Any

from evc_operator import lifecycle, unwatched
from evc_operator.claims import MAX_LABEL_BYTES, parse_quantity
from evc_operator.interning import interned
from evc_operator.packing import Packer
from evc_operator.resources import KEEP_ANNOTATION
from evc_operator.settings import DURATION_HELP, MAX_DURATION, Settings, parse_duration
from evc_operator.status import NO_ACTIVE_USERS, condition_field
from evc_operator.timestamps import human_period, parse_time
from evc_operator.users import InvalidSelector, validate_selector

Key = tuple[str, str]  # (namespace, name)
_TIME = "2026-01-01T00:00:00Z"
# What statuses and kept bodies usually say (packing.py): the keys, and the text of the
# conditions of a claim in use and of one that is not (Pending or Idle: its countdown
# runs). Only how small they pack depends on it: at 10,000 claims counting down, the
# second cost 2 MiB while it was missing (docs/benchmarks.md).
_CONDITIONS = [
    {"type": "SpecValid", "status": "True", "reason": "Valid",
     "message": "The spec is valid.", "lastTransitionTime": _TIME, "observedGeneration": 1},
    {"type": "DeletionPaused", "status": "False", "reason": "Active",
     "message": "Deletes when due.", "lastTransitionTime": _TIME, "observedGeneration": 1},
    {"type": "PvcReady", "status": "False", "reason": "Pending",
     "message": "PersistentVolumeClaim  is in place. It is not bound to a volume yet "
                "(its StorageClass may wait for the first pod that uses it; if a pod waits "
                "for it, kubectl describe pvc says why).",
     "lastTransitionTime": _TIME, "observedGeneration": 1}]
_IDLE = {"type": "InUse", "status": "False", "reason": "NoActiveUsers",
         "message": NO_ACTIVE_USERS, "lastTransitionTime": _TIME, "observedGeneration": 1}
# A claim held by pods of an unwatched controller only (unwatched.py): its condition's
# words, unsampled, took 285 bytes more a claim.
_UNWATCHED = {"type": unwatched.CONDITION, "status": "True", "reason": unwatched.REASON,
              "message": unwatched.message(["Workflow.argoproj.io"]),
              "lastTransitionTime": _TIME, "observedGeneration": 1}
_STATUS = Packer({"variants": [{
    "phase": "Idle", "reason": None, "users": 0, "userNames": [], "unusedSince": _TIME,
    "deletesAt": _TIME, "countdown": "grace", "observedGeneration": 1, "conditions": [
        _IDLE, *_CONDITIONS], "seal": "v2:"}, {
    "phase": "Idle", "reason": None, "users": 0, "userNames": [], "unusedSince": _TIME,
    "deletesAt": _TIME, "countdown": "grace", "observedGeneration": 1, "conditions": [
        _IDLE, *_CONDITIONS, _UNWATCHED], "seal": "v2:"}, {
    "phase": "InUse", "reason": None, "users": 1, "userNames": [], "unusedSince": None,
    "deletesAt": None, "countdown": None, "observedGeneration": 1, "conditions": [
        {"type": "InUse", "status": "True", "reason": "ActiveUsers", "message": "Used by ",
         "lastTransitionTime": _TIME, "observedGeneration": 1},
        *_CONDITIONS], "seal": "v2:"}]})
_BODY = Packer({
    "apiVersion": "zalando.org/v1", "kind": "EphemeralVolumeClaim", "metadata": {
        "name": "", "namespace": "", "uid": "", "resourceVersion": "", "generation": 1,
        "creationTimestamp": _TIME, "labels": {}},
    "spec": {"size": "1Gi", "storageClassName": "", "accessModes": ["ReadWriteOnce"]}})


@dataclasses.dataclass(frozen=True, slots=True)
class EvcView:
    """A small projection of an EVC: what decisions need, and the one copy of it kept.

    Its status is kept as the JSON it came in, and the rest of its body as slim JSON
    (`slim`), each read when a decision needs it: ten thousand claims' bodies and
    conditions as dicts of strings would be the largest thing the operator holds, for a
    few reads each.
    """

    namespace: str
    name: str
    uid: str
    resource_version: str
    generation: int
    deleting: bool
    claim: lifecycle.Claim
    selector: Mapping[str, Any] | None
    problems: tuple[str, ...]
    reason: str | None = None  # status.reason: why the claim needs attention, if it does
    labels_too_large: int = 0  # the size of its labels, if above MAX_LABEL_BYTES (not kept)
    limited: tuple[str, ...] = ()  # periods of its spec brought within MIN/MAX_PERIOD
    unwatched: bool = False  # its status has the UnwatchedController condition (metrics)
    # When its status was last written, as the API server stamped it (managedFields, to the
    # second); None without such a stamp. Tells a record put back from one written when
    # sealed (seal.py).
    status_written: datetime.datetime | None = None
    status_packed: bytes = _STATUS.empty  # status.phase and all (packing.py)
    body_packed: bytes = _BODY.empty  # see `slim`

    @property
    def key(self) -> Key:
        return (self.namespace, self.name)

    @property
    def body(self) -> dict[str, Any]:
        """The body as kept (`slim`): what the PVC is made from."""
        return _BODY.unpack(self.body_packed)

    @property
    def size_invalid(self) -> bool:
        return any(problem.startswith("spec.size") for problem in self.problems)

    @property
    def status(self) -> dict[str, Any]:
        return _STATUS.unpack(self.status_packed)

    @property
    def stored_seal(self) -> str | None:
        seal = self.status.get("seal")
        return seal if isinstance(seal, str) else None


def label_bytes(labels: Mapping[str, str]) -> int:
    return sum(len(key.encode()) + len(str(value).encode()) for key, value in labels.items())


def keeps(annotations: Mapping[str, str]) -> bool:
    value = annotations.get(KEEP_ANNOTATION)
    return value is not None and value.strip().lower() != "false"


def _period(spec: Mapping[str, Any], field: str, default: float,
            problems: list[str]) -> float:
    raw = spec.get(field)
    if raw is None:
        return default
    try:
        if isinstance(raw, bool):
            raise ValueError(raw)
        seconds = (float(raw) if isinstance(raw, int | float)
                   else parse_duration(str(raw), maximum=sys.float_info.max))
        if not 0 <= seconds <= sys.float_info.max:  # also rejects NaN and infinity
            raise ValueError(raw)
    except ValueError:
        problems.append(f"spec.{field}={raw!r} is not a valid period: use {DURATION_HELP}")
        return default
    if seconds > MAX_DURATION:
        # Stored before the CRD capped it: the later way, never the default (sooner).
        problems.append(f"spec.{field}={raw!r} is longer than the maximum of 100 years "
                        "(36500d); it counts as 100 years")
        return MAX_DURATION
    return seconds


def _within_limits(spec: Mapping[str, Any], field: str, seconds: float, settings: Settings,
                   limited: list[str]) -> float:
    """A period of the claim's own spec, brought within the cluster's MIN_PERIOD and
    MAX_PERIOD (the defaults lie within them already)."""
    if spec.get(field) is None:
        return seconds
    if seconds < settings.min_period:
        limited.append(f"spec.{field} {human_period(seconds)} is shorter than the cluster's "
                       f"minimum, {human_period(settings.min_period)}: it counts as "
                       f"{human_period(settings.min_period)}")
        return settings.min_period
    if seconds > settings.max_period:
        limited.append(f"spec.{field} {human_period(seconds)} is longer than the cluster's "
                       f"maximum, {human_period(settings.max_period)}: it counts as "
                       f"{human_period(settings.max_period)}")
        return settings.max_period
    return seconds


def _recorded_time(status: Mapping[str, Any], field: str,
                   problems: list[str]) -> datetime.datetime | None:
    raw = status.get(field)
    if not raw:
        return None
    try:
        return parse_time(str(raw))
    except ValueError:
        problems.append(f"status.{field}={raw!r} is not a timestamp")
        return None


def status_written(metadata: Mapping[str, Any]) -> datetime.datetime | None:
    """The latest time a status write was stamped with in `managedFields`, by any manager:
    the API server sets it, and a write to the status subresource cannot."""
    latest: datetime.datetime | None = None
    for entry in metadata.get("managedFields") or ():
        if not isinstance(entry, Mapping) or entry.get("subresource") != "status":
            continue
        try:
            moment = parse_time(str(entry.get("time")))
        except ValueError:
            continue
        latest = moment if latest is None else max(latest, moment)
    return latest


def evc_view(body: Mapping[str, Any], settings: Settings) -> EvcView:
    metadata = body.get("metadata") or {}
    spec = body.get("spec") or {}
    status = body.get("status") or {}
    problems: list[str] = []
    if spec.get("size") in (None, ""):
        problems.append("spec.size is missing")
    else:
        try:
            parse_quantity(spec["size"])
        except ValueError:
            problems.append(f"spec.size={spec['size']!r} is not a quantity such as 1Gi")
    selector = spec.get("selector") or None
    try:
        validate_selector(selector)
    except InvalidSelector as error:
        problems.append(f"spec.selector is invalid: {error}")
        selector = None
    try:
        recorded_phase: lifecycle.Phase | None = lifecycle.Phase(status["phase"])
    except (KeyError, ValueError):
        recorded_phase = None
    limited: list[str] = []
    expiry_period = _within_limits(spec, "expiryPeriod", _period(
        spec, "expiryPeriod", settings.expiry_period, problems), settings, limited)
    grace_period = _within_limits(spec, "gracePeriod", _period(
        spec, "gracePeriod", settings.grace_period, problems), settings, limited)
    recorded_unused_since = _recorded_time(status, "unusedSince", problems)
    labels_size = label_bytes(metadata.get("labels") or {})
    claim = lifecycle.Claim(
        created=parse_time(metadata["creationTimestamp"]),
        expiry_period=expiry_period,
        grace_period=grace_period,
        # Never delete because of input we could not understand: problems pause deletion.
        keep=keeps(metadata.get("annotations") or {}) or bool(problems),
        recorded_phase=recorded_phase,
        recorded_unused_since=recorded_unused_since,
    )
    return EvcView(
        namespace=metadata.get("namespace") or "",
        name=metadata["name"],
        uid=metadata["uid"],
        resource_version=metadata.get("resourceVersion", ""),
        generation=int(metadata.get("generation") or 0),
        deleting=bool(metadata.get("deletionTimestamp")),
        claim=claim,
        selector=selector,
        problems=tuple(problems),
        reason=interned(str(status["reason"])) if status.get("reason") else None,
        labels_too_large=labels_size if labels_size > MAX_LABEL_BYTES else 0,
        limited=tuple(limited),
        unwatched=condition_field(status, unwatched.CONDITION) == "True",
        status_written=status_written(metadata),
        status_packed=_STATUS.pack(status),
        body_packed=_BODY.pack(slim(body)),
    )


def slim(body: Mapping[str, Any]) -> dict[str, Any]:
    """What is kept of an EVC's body: what its PVC is made from. No status (its view holds
    that), no managedFields, no annotations (the keep annotation is read into the view; the
    rest, up to 256 KiB, no decision reads), and labels only up to MAX_LABEL_BYTES. Packed
    (packing.py), the bodies of ten thousand claims take a fraction of what dicts of strings
    would, and a reconciliation reads one in microseconds."""
    metadata = {key: value for key, value in body["metadata"].items()
                if key not in ("managedFields", "annotations")}
    if label_bytes(metadata.get("labels") or {}) > MAX_LABEL_BYTES:
        metadata.pop("labels")
    return {key: value for key, value in body.items() if key != "status"} | {
        "metadata": metadata}
