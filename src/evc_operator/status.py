"""The EVC's status and Events for a decision. Pure: no API calls, no clock.

Status is rebuilt from the decision each time and written only when it differs
from what is stored; a condition keeps its lastTransitionTime while its status
does not change, so an unchanged situation produces an identical status and
no write.
"""

from __future__ import annotations

import dataclasses
import datetime
import math
from collections.abc import Mapping, Sequence
from typing import Any

from evc_operator.lifecycle import Action, Countdown, Decision, Phase


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


def timestamp(moment: datetime.datetime) -> str:
    return moment.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def human_period(seconds: float) -> str:
    seconds = math.ceil(seconds)  # time left: never shown shorter than it is
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [f"{hours}h" if hours else "", f"{minutes}m" if minutes else "",
             f"{secs}s" if secs or not (hours or minutes) else ""]
    return "".join(parts)


def lifecycle_conditions(decision: Decision, *, keep: bool, dry_run: bool,
                         problems: Sequence[str]) -> list[Condition]:
    conditions = [
        Condition("InUse", bool(decision.active_users),
                  "ActiveUsers" if decision.active_users else "NoActiveUsers",
                  f"Used by {', '.join(decision.listed_users)}." if decision.active_users
                  else "No running pod uses this claim."),
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
    else:
        paused = Condition("DeletionPaused", False, "Active", "Deletes when due.")
    conditions.append(paused)
    return conditions


def build_status(decision: Decision, conditions: Sequence[Condition], *, generation: int,
                 previous: Mapping[str, Any], now: datetime.datetime) -> dict[str, Any]:
    """The complete status to store; fields that no longer apply are set to None."""
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
            old.get("lastTransitionTime") else timestamp(now),
            "observedGeneration": generation,
        })
    return {
        "phase": str(decision.phase),
        "users": len(decision.active_users),
        "userNames": list(decision.listed_users),
        "unusedSince": timestamp(decision.unused_since) if decision.unused_since else None,
        "deletesAt": timestamp(decision.deletes_at) if decision.deletes_at else None,
        "countdown": str(decision.countdown) if decision.countdown else None,
        "observedGeneration": generation,
        "conditions": rendered,
    }


def status_changed(new: Mapping[str, Any], old: Mapping[str, Any]) -> bool:
    """Whether writing `new` would change anything (None means absent)."""
    return any(_normal(new.get(key)) != _normal(old.get(key)) for key in new)


def _normal(value: Any) -> Any:
    return None if value in (None, [], {}) else value


def transition_events(decision: Decision, recorded_phase: Phase | None, *,
                      expiry_period: float, grace_period: float) -> list[Event]:
    """Events for a change of phase (none when the phase stays)."""
    if decision.phase is recorded_phase:
        return []
    deletes = f" Deletes at {timestamp(decision.deletes_at)}" if decision.deletes_at else ""
    if decision.phase is Phase.IN_USE:
        return [Event("Normal", "InUse", f"Used by {', '.join(decision.listed_users)}.")]
    if decision.phase is Phase.IDLE:
        since = timestamp(decision.unused_since) if decision.unused_since else "now"
        return [Event("Normal", "Idle",
                      f"No pod uses it since {since}; grace period "
                      f"{human_period(grace_period)} started.{deletes and deletes + '.'}")]
    if decision.phase is Phase.PENDING:
        return [Event("Normal", "Expiring",
                      f"Not used by any pod yet; expiry period {human_period(expiry_period)}."
                      f"{deletes and deletes + ' unless a pod uses it.'}")]
    return []


def deletion_event(decision: Decision, *, expiry_period: float, grace_period: float,
                   dry_run: bool) -> Event:
    if decision.countdown is Countdown.GRACE and decision.unused_since:
        why = (f"unused since {timestamp(decision.unused_since)}, "
               f"longer than the grace period of {human_period(grace_period)}")
        reason = "GracePeriodElapsed"
    else:
        why = f"never used within the expiry period of {human_period(expiry_period)}"
        reason = "ExpiryPeriodElapsed"
    if dry_run or decision.action is Action.REPORT_DRY_RUN:
        return Event("Normal", "WouldDelete", f"DRY_RUN: would delete it now ({why}).")
    return Event("Normal", "Deleted", f"Deleting it ({reason}): {why}.")
