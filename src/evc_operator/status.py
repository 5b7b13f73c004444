"""The EVC's status and Events for a decision. Pure: no API calls, no clock.

Status is rebuilt from the decision each time and written only when it differs
from what is stored; a condition keeps its lastTransitionTime while its status
does not change, so an unchanged situation produces an identical status and
no write.
"""

from __future__ import annotations

import dataclasses
import datetime
import enum
from collections.abc import Mapping, Sequence
from typing import Any

from evc_operator.claims import MAX_LABEL_BYTES
from evc_operator.lifecycle import Action, Countdown, Decision, Phase
from evc_operator.timestamps import format_time, human_period


@dataclasses.dataclass(frozen=True)
class Condition:
    type: str
    status: bool
    reason: str
    message: str


@dataclasses.dataclass(frozen=True)
class Event:
    type: str  # Normal or Warning
    reason: str
    message: str


# The rule (lifecycle.py, workloads.py): a user pod counts until it Succeeded or Failed,
# or is gone; a workload while it may still create pods.
NO_ACTIVE_USERS = ("No active pod or workload uses this claim: every pod that mounts it (or "
                   "matches its selector) has Succeeded or Failed, or there is none, and no "
                   "workload that names it may create pods. Pending, Running and terminating "
                   "pods count as users, and so do unfinished Jobs, CronJobs, DaemonSets and "
                   "workloads with replicas.")


class Reason(enum.StrEnum):
    """status.reason (a column of `kubectl get evc`): why a claim needs attention, or why
    its deletion is paused; absent when neither."""

    PVC_CONFLICT = "PvcConflict"  # a PVC of its name that is not its own
    INVALID_SPEC = "InvalidSpec"  # also pauses deletion
    PVC_UPDATE_REJECTED = "PvcUpdateRejected"
    KEPT = "Kept"  # the keep annotation pauses deletion
    DRY_RUN = "DryRun"  # the operator runs with DRY_RUN: it deletes nothing
    PVC_REFUSED = "PvcRefused"  # the API server refused to create its PVC
    PVC_SPEC_MISMATCH = "PvcSpecMismatch"  # its PVC lacks a field the claim asked for
    LABELS_TOO_LARGE = "LabelsTooLarge"  # too many labels to copy: no PVC made or updated
    PVC_LOST = "PvcLost"  # its PVC is Lost: the volume is gone, and the data on it
    # updating its PVC failed three times in a row (429, 5xx, no answer, 409, 404); the
    # failures before (PvcUpdateRetrying) are no reason, as PvcRetrying is none
    PVC_UPDATE_FAILING = "PvcUpdateFailing"
    # due, its deletion refused by the API server (a policy or webhook on deletes, RBAC)
    DELETION_REFUSED = "DeletionRefused"


_REASONS = {  # by (condition type, condition reason), in order of precedence
    ("PvcReady", "PvcConflict"): Reason.PVC_CONFLICT,
    ("PvcReady", "PvcRefused"): Reason.PVC_REFUSED,
    ("PvcReady", "PvcSpecMismatch"): Reason.PVC_SPEC_MISMATCH,
    ("PvcReady", "LabelsTooLarge"): Reason.LABELS_TOO_LARGE,
    ("PvcReady", "Lost"): Reason.PVC_LOST,
    ("SpecValid", "InvalidSpec"): Reason.INVALID_SPEC,
    ("PvcReady", "PvcUpdateRejected"): Reason.PVC_UPDATE_REJECTED,
    ("PvcReady", "PvcUpdateFailing"): Reason.PVC_UPDATE_FAILING,
    ("DeletionPaused", "DeletionRefused"): Reason.DELETION_REFUSED,
    ("DeletionPaused", "KeepAnnotation"): Reason.KEPT,
    ("DeletionPaused", "DryRun"): Reason.DRY_RUN,
}


def reason_of(conditions: Sequence[Condition]) -> Reason | None:
    """The one word that makes a claim stand out in `kubectl get evc`, if any."""
    said = {(c.type, c.reason) for c in conditions}  # each reason has one status
    return next((reason for key, reason in _REASONS.items() if key in said), None)


def lifecycle_conditions(decision: Decision, *, keep: bool, dry_run: bool,
                         problems: Sequence[str], limited: Sequence[str] = (),
                         refused: str | None = None) -> list[Condition]:
    conditions = [
        Condition("InUse", bool(decision.active_users),
                  "ActiveUsers" if decision.active_users else "NoActiveUsers",
                  f"Used by {', '.join(decision.listed_users)}." if decision.active_users
                  else NO_ACTIVE_USERS),
        Condition("SpecValid", not problems, "InvalidSpec" if problems else "Valid",
                  "; ".join(problems) if problems else "The spec is valid."),
    ]
    if problems:
        paused = Condition("DeletionPaused", True, "InvalidSpec",
                           "Deletion is paused until the spec is fixed.")
    elif keep:
        paused = Condition("DeletionPaused", True, "KeepAnnotation",
                           "The keep annotation pauses deletion until it is removed.")
    elif dry_run:
        paused = Condition("DeletionPaused", True, "DryRun",
                           "The operator runs with DRY_RUN: it reports, never deletes.")
    elif refused is not None:  # deletion.refused_message
        paused = Condition("DeletionPaused", True, DELETION_REFUSED, refused)
    else:
        paused = Condition("DeletionPaused", False, "Active", "Deletes when due.")
    conditions.append(paused)
    if limited:  # present only while a period of the spec is outside MIN/MAX_PERIOD
        conditions.append(Condition(LIMITED, True, "ClusterLimit", "; ".join(limited) + "."))
    return conditions


LIMITED = "PeriodLimited"
# unwatched.py. Not a status.reason: the CRD's enum of those, older where the CRD was not
# upgraded with the operator (Helm leaves CRDs as they are), would refuse each status write.
UNWATCHED = "UnwatchedController"
DELETION_REFUSED = "DeletionRefused"


def build_status(decision: Decision, conditions: Sequence[Condition], *, generation: int,
                 previous: Mapping[str, Any], now: datetime.datetime,
                 seal: str | None = None) -> dict[str, Any]:
    """The complete status to store; fields that no longer apply are set to None. `seal`:
    the operator's seal on the phase and unusedSince (seal.py)."""
    before = {c.get("type"): c for c in previous.get("conditions") or ()}
    rendered = []
    for condition in conditions:
        status = "True" if condition.status else "False"
        old = before.get(condition.type) or {}
        unchanged = old.get("status") == status
        rendered.append({
            "type": condition.type,
            "status": status,
            "reason": condition.reason,
            "message": condition.message,
            "lastTransitionTime": old.get("lastTransitionTime") if unchanged and
            old.get("lastTransitionTime") else format_time(now),
            "observedGeneration": generation,
        })
    reason = reason_of(conditions)
    return {
        "phase": str(decision.phase),
        "reason": str(reason) if reason else None,
        "users": len(decision.active_users),
        "userNames": list(decision.listed_users),
        "unusedSince": format_time(decision.unused_since) if decision.unused_since else None,
        "deletesAt": format_time(decision.deletes_at) if decision.deletes_at else None,
        "countdown": str(decision.countdown) if decision.countdown else None,
        "observedGeneration": generation,
        "conditions": rendered,
        "seal": seal,
    }


def status_changed(new: Mapping[str, Any], old: Mapping[str, Any]) -> bool:
    """Whether writing `new` would change anything (None means absent) but its seal, which
    carries the moment it was made: whether the stored seal still holds is seal.verify's."""
    return any(_normal(new.get(key)) != _normal(old.get(key)) for key in new
               if key != "seal")


def only_users_changed(new: Mapping[str, Any], old: Mapping[str, Any]) -> bool:
    """Whether writing `new` would change only who the users are (their number and names,
    the `InUse` condition's message): no phase, end of use, deadline or condition status
    (budget.py)."""
    def rest(status: Mapping[str, Any]) -> dict[str, Any]:
        conditions = [{**c, "message": None} if c.get("type") == "InUse" else c
                      for c in status.get("conditions") or ()]
        return {key: _normal(value) for key, value in status.items()
                if key not in ("users", "userNames", "seal", "conditions")} | {
            "conditions": conditions}
    return rest({**old, **{key: None for key in new if key not in old}}) == rest(
        {**new, **{key: None for key in old if key not in new}})


def _normal(value: Any) -> Any:
    return None if value in (None, [], {}) else value


def transition_events(decision: Decision, recorded_phase: Phase | None, *,
                      expiry_period: float, grace_period: float) -> list[Event]:
    """Events for a change of phase (none when the phase stays)."""
    if decision.phase is recorded_phase:
        return []
    deletes = f" Deletes at {format_time(decision.deletes_at)}" if decision.deletes_at else ""
    if decision.phase is Phase.IN_USE:
        return [Event("Normal", "InUse", f"Used by {', '.join(decision.listed_users)}.")]
    if decision.phase is Phase.IDLE:
        since = format_time(decision.unused_since) if decision.unused_since else "now"
        if decision.deletes_at is None:  # kept, or its spec is invalid: no countdown
            return [Event("Normal", "Idle", f"No pod uses it since {since}; its deletion "
                                            f"is paused.")]
        return [Event("Normal", "Idle",
                      f"No pod uses it since {since}; grace period "
                      f"{human_period(grace_period)} started.{deletes and deletes + '.'}")]
    if decision.phase is Phase.PENDING and decision.deletes_at is not None:
        return [Event("Normal", "Expiring",
                      f"Not used by any pod yet; expiry period {human_period(expiry_period)}."
                      f"{deletes and deletes + ' unless a pod uses it.'}")]
    return []


def deletion_event(decision: Decision, *, expiry_period: float, grace_period: float,
                   dry_run: bool) -> Event:
    if decision.countdown is Countdown.GRACE and decision.unused_since:
        why = (f"unused since {format_time(decision.unused_since)}, "
               f"longer than the grace period of {human_period(grace_period)}")
        reason = "GracePeriodElapsed"
    else:
        why = f"never used within the expiry period of {human_period(expiry_period)}"
        reason = "ExpiryPeriodElapsed"
    if dry_run or decision.action is Action.REPORT_DRY_RUN:
        return Event("Normal", "WouldDelete", f"DRY_RUN: would delete it now ({why}).")
    return Event("Normal", "Deleted", f"Deleting it ({reason}): {why}.")


def condition_field(previous: Mapping[str, Any], kind: str,
                    field: str = "status") -> str | None:
    """A field of a condition in a stored status (None if absent). Any shape is read (a
    claim's status as the API server holds it): what is not a condition says nothing."""
    conditions = previous.get("conditions")
    for condition in conditions if isinstance(conditions, list) else ():
        if isinstance(condition, Mapping) and condition.get("type") == kind:
            value = condition.get(field)
            return str(value) if value is not None else None
    return None


def spec_warnings(problems: Sequence[str], previous: Mapping[str, Any]) -> list[Event]:
    """An InvalidSpec Warning when the spec turns invalid (not again while it stays so)."""
    if problems and condition_field(previous, "SpecValid") != "False":
        return [Event("Warning", "InvalidSpec", "; ".join(problems))]
    return []


def warned(written: Mapping[str, Any]) -> Mapping[str, Any]:
    """Of a status, what `spec_warnings`, `limit_warnings` and `unwatched.warnings` read:
    its three conditions."""
    return {"conditions": [condition for condition in written.get("conditions") or ()
                           if condition.get("type") in ("SpecValid", LIMITED, UNWATCHED)]}


def limit_warnings(limited: Sequence[str], previous: Mapping[str, Any]) -> list[Event]:
    """A PeriodLimited Warning when a period of the spec first falls outside the cluster's
    limits (not again while it stays so)."""
    if limited and condition_field(previous, LIMITED) != "True":
        return [Event("Warning", LIMITED, "; ".join(limited) + ".")]
    return []


class PvcOutcome(enum.StrEnum):
    """What became of the PVC in one reconciliation."""

    INVALID_SPEC = "invalid-spec"  # no PVC without a valid spec.size
    CREATED = "created"
    CONFLICT = "conflict"  # a PVC of that name that is not ours
    REFUSED = "refused"  # the API server refused to create it (quota, admission, invalid)
    RETRYING = "retrying"  # its creation throttled or failed (429, 5xx): tried again soon
    NOT_AS_ASKED = "not-as-asked"  # ours, without a field the claim asked for
    LABELS_TOO_LARGE = "labels-too-large"  # none made or updated: labels too large to copy
    DELETING = "deleting"  # ours, being deleted: recreated once gone
    REJECTED = "rejected"  # the API server refused the update (now, or this same one before)
    # An update that failed for now (429, 5xx, no answer, or the PVC changed or went
    # meanwhile: 409, 404): tried again with backoff; failing, after a few in a row.
    UPDATE_RETRYING = "update-retrying"
    UPDATE_FAILING = "update-failing"
    IN_PLACE = "in-place"  # ours, as it should be (after an update, if one was needed)


# Outcomes that need someone's attention: PvcReady=False with the reason, and a Warning
# Event when it is new (not again at each retry while it stays). {detail}: the conflict,
# the API server's refusal, the fields missing, or the size of the labels.
_WARNINGS = {
    PvcOutcome.CONFLICT: ("PvcConflict", "{detail}"),
    PvcOutcome.REFUSED: ("PvcRefused", "The API server refused to create PersistentVolumeClaim "
                                       "{name}: {detail}. Retried with backoff; the claim's "
                                       "own countdown runs as usual."),
    PvcOutcome.NOT_AS_ASKED: ("PvcSpecMismatch", "PersistentVolumeClaim {name} is not what "
                                                 "the claim asked for: the API server dropped "
                                                 "or changed {detail}. Its volume is not the "
                                                 "one described (e.g. empty instead of "
                                                 "restored from a data source)."),
    PvcOutcome.LABELS_TOO_LARGE: ("LabelsTooLarge", "The claim's labels take {detail} bytes "
                                                    "(keys and values), more than the {limit} "
                                                    "this operator copies to a "
                                                    "PersistentVolumeClaim: no "
                                                    "PersistentVolumeClaim {name} is created "
                                                    "or updated until they are fewer. Its "
                                                    "countdown runs as usual."),
}


def had_pvc(previous: Mapping[str, Any]) -> bool:
    """Whether the claim had a PVC of its own, by its status: not if it was refused, could
    not be asked for, or its name was taken by a PVC not its own."""
    return condition_field(previous, "PvcReady", field="reason") not in (
        None, "PvcRefused", "InvalidSpec", "PvcConflict", "LabelsTooLarge", "PvcRetrying")


def pvc_ready(outcome: PvcOutcome, name: str, previous: Mapping[str, Any], *,
              detail: str | None = None, size: str = "", resized_from: str | None = None,
              phase: str = "Pending") -> tuple[Condition, list[Event]]:
    """The PvcReady condition and the Events for an outcome. `detail`: the conflict's
    message, the API server's reason for refusing the PVC or an update (None: it was
    refused before, and said then), or the fields it dropped; `size`: the size created or
    requested; `resized_from`: the size before a resize; `phase`: the PVC's status.phase.
    PvcReady is True only while the PVC is Bound."""
    said_reason = condition_field(previous, "PvcReady", field="reason")
    if outcome is PvcOutcome.INVALID_SPEC:
        return Condition("PvcReady", False, "InvalidSpec",
                         "No PersistentVolumeClaim without a valid spec.size."), []
    if outcome is PvcOutcome.CREATED:
        recreated = had_pvc(previous)
        reason = "PvcRecreated" if recreated else "PvcCreated"
        message = (f"Recreated PersistentVolumeClaim {name}: it was deleted while the claim "
                   f"still exists." if recreated else
                   f"Created PersistentVolumeClaim {name} of {size}.")
        return Condition("PvcReady", False, "Pending", f"{message} {_UNBOUND}"), [
            Event("Normal", reason, message)]
    if outcome in _WARNINGS:
        reason, template = _WARNINGS[outcome]
        message = template.format(name=name, detail=detail or "", limit=MAX_LABEL_BYTES)
        events = [] if said_reason == reason else [Event("Warning", reason, message)]
        return Condition("PvcReady", False, reason, message), events
    if outcome is PvcOutcome.RETRYING:  # no Warning yet: it may pass in a second or two
        return Condition("PvcReady", False, "PvcRetrying",
                         f"Creating PersistentVolumeClaim {name} failed for now ({detail}); "
                         f"tried again with backoff. The claim's own countdown runs as "
                         f"usual."), []
    if outcome is PvcOutcome.DELETING:
        return Condition("PvcReady", False, "PvcDeleting",
                         f"PersistentVolumeClaim {name} is being deleted; it will be "
                         f"recreated once it is gone."), []
    bound = phase == "Bound"
    if outcome in (PvcOutcome.UPDATE_RETRYING, PvcOutcome.UPDATE_FAILING):
        # The PVC is there, as it was: PvcReady keeps its status, True while bound. No
        # Warning while it may pass in a second or two; one when it goes on failing.
        if outcome is PvcOutcome.UPDATE_RETRYING:
            return Condition("PvcReady", bound, "PvcUpdateRetrying",
                             f"Updating PersistentVolumeClaim {name} failed for now "
                             f"({detail}); tried again with backoff. The claim's own "
                             f"countdown runs as usual."), []
        message = (f"Updating PersistentVolumeClaim {name} keeps failing ({detail}); tried "
                   f"again with backoff. The claim's own countdown runs as usual.")
        events = ([] if said_reason == "PvcUpdateFailing" else
                  [Event("Warning", "PvcUpdateFailing", message)])
        return Condition("PvcReady", bound, "PvcUpdateFailing", message), events
    events = [] if resized_from is None else [
        Event("Normal", "PvcResized", f"Requested {size} for PersistentVolumeClaim {name} "
                                      f"(was {resized_from}).")]
    if outcome is PvcOutcome.REJECTED:  # the other part (a resize) may have gone through
        if detail is None:  # said when it was refused; do not hammer the API server
            return _as_said(Condition("PvcReady", bound, "PvcUpdateRejected", ""),
                            previous), events
        message = f"PersistentVolumeClaim {name} refused the update: {detail}"
        if said_reason != "PvcUpdateRejected":
            events.append(Event("Warning", "PvcUpdateRejected", message))
        return Condition("PvcReady", bound, "PvcUpdateRejected", message), events
    if bound:
        condition = Condition("PvcReady", True, "Bound",
                              f"PersistentVolumeClaim {name} is bound to a volume.")
    elif phase == "Lost":  # said once, when it turns Lost (not at each reconciliation)
        message = _LOST.format(name=name)
        if said_reason != "Lost":
            events.append(Event("Warning", "PvcLost", message))
        condition = Condition("PvcReady", False, "Lost", message)
    else:
        condition = Condition("PvcReady", False, "Pending",
                              f"PersistentVolumeClaim {name} is in place. {_UNBOUND}")
    return _as_said(condition, previous), events


_LOST = ("PersistentVolumeClaim {name} is Lost: the PersistentVolume it was bound to no "
         "longer exists, and the data on it is gone. Pods cannot use it. The operator does "
         "not replace a PersistentVolumeClaim that exists: delete the EphemeralVolumeClaim "
         "and create it again for a new, empty volume. Its countdown runs as usual.")
_UNBOUND = ("It is not bound to a volume yet (its StorageClass may wait for the first pod "
            "that uses it; if a pod waits for it, kubectl describe pvc says why).")


def _as_said(condition: Condition, previous: Mapping[str, Any]) -> Condition:
    """The condition with the message stored before, if its status and reason are the
    same: rewording alone would cost a status write per claim and tell nothing new."""
    said = "True" if condition.status else "False"
    if (condition_field(previous, condition.type) == said
            and condition_field(previous, condition.type, field="reason") == condition.reason):
        message = condition_field(previous, condition.type, field="message")
        return dataclasses.replace(condition, message=message or condition.message)
    return condition
