"""Claims held only by pods of controllers the operator does not watch, and the condition
and Warning that say so. Pure: no API calls.

A pod holds its claim while it runs; a workload the operator watches holds it while it may
start pods (a Job retrying, a Deployment with replicas: workloads.py), and so does an object
of a `USER_KINDS` kind that names it (customkinds.py). A pod whose controller (its owner
reference with `controller: true`) is of another kind (an Argo Workflow, a Tekton TaskRun,
a KubeVirt VirtualMachineInstance, a Spark driver) counts only as itself: if no object the
operator watches holds the claim too, nothing holds it between two of those pods, and a
pod that comes later than the grace period finds it gone. Whether such a controller will
start another pod, the operator cannot know. It says so before that can happen: a
condition `UnwatchedController` and a Warning of that reason when the condition appears,
naming the controllers' kinds (the Warning also the first pods and their controllers) and
what would hold the claim.

The condition stays once said, while the claim exists (a controller that ran pods may run
more, and one that deletes each finished pod, as Argo's `podGC` does, would otherwise make
it come and go, and warn, at each step), until an object the operator watches holds the
claim (a workload or a `USER_KINDS` object that names it, running or finished: one listed
after the Warning, say) or its deletion is paused (the keep annotation, `DRY_RUN`, an
invalid spec): then it has nothing left to warn of. Its message names only the kinds, so
that pods coming and going do not rewrite it (their status writes are budgeted: budget.py).
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from typing import Any

from evc_operator.lifecycle import PodUse
from evc_operator.resources import KEEP_ANNOTATION
from evc_operator.status import UNWATCHED, Condition, Event, condition_field

CONDITION = UNWATCHED
REASON = "NotWatched"
# The controllers whose pods the operator follows to a workload it watches (workloads.py):
# a Deployment's through its ReplicaSet, a CronJob's through its Job; a Node's mirror pods.
FOLLOWED = frozenset({"Job.batch", "ReplicaSet.apps", "StatefulSet.apps", "DaemonSet.apps",
                      "ReplicationController", "Node"})
# The pods the Warning names one by one; more are counted.
NAMED = 3


def runner(metadata: Mapping[str, Any]) -> str | None:
    """A pod's controller (its owner reference with `controller: true`) as
    `Kind.group/name` (`Kind/name` in the core group), if it is not of a kind the operator
    follows (`FOLLOWED`); None when it is, or when the pod has none. Interned: the pods of
    one controller share it."""
    owners = metadata.get("ownerReferences")
    for owner in owners if isinstance(owners, list) else ():
        if not isinstance(owner, Mapping) or owner.get("controller") is not True:
            continue
        kind, api_version, name = (owner.get("kind"), owner.get("apiVersion"),
                                   owner.get("name"))
        if not all(isinstance(part, str) and part for part in (kind, api_version, name)):
            return None
        group = str(api_version).rpartition("/")[0]
        qualified = f"{kind}.{group}" if group else str(kind)
        if qualified in FOLLOWED:
            return None
        return sys.intern(f"{qualified}/{name}")
    return None


def message(kinds: Sequence[str]) -> str:
    """The condition's words for controllers of these kinds (`Kind.group`)."""
    custom = [kind for kind in kinds if "." in kind.partition(".")[2]]
    listing = (f"Name {'its' if len(kinds) == 1 else 'their'} resource in USER_KINDS "
               f"(plural.version.group), with objects that name this claim in a "
               f"persistentVolumeClaim.claimName; or set" if custom else "Set")
    return (f"Pods run by {', '.join(kinds)} use this claim, and no object the operator "
            f"watches holds it: between their pods nothing does, and it is deleted its "
            f"grace period after the last one ends even if their controller would start "
            f"another. {listing} the annotation {KEEP_ANNOTATION} while they may, or a "
            f"grace period longer than the gaps between their pods.")


def condition(users: Sequence[PodUse], said: Mapping[str, Any], *,
              paused: bool) -> Condition | None:
    """The condition, if the claim has it now: its users run by controllers of kinds the
    operator does not watch (or said so before: `said`, the status stored or last
    written), none of them an object it watches, and its deletion not paused."""
    if paused or any("/" in user.name for user in users):  # a workload's view: Kind/name
        return None
    kinds = sorted({user.runner.partition("/")[0] for user in users if user.runner})
    if kinds:
        return Condition(CONDITION, True, REASON, message(kinds))
    if condition_field(said, CONDITION) == "True":
        before = condition_field(said, CONDITION, field="message")
        return Condition(CONDITION, True, REASON, before or message(["(unknown)"]))
    return None


def warnings(found: Condition | None, users: Sequence[PodUse],
             said: Mapping[str, Any]) -> list[Event]:
    """An UnwatchedController Warning when the condition appears (not again while it
    stays), naming the first of the pods and their controllers."""
    if found is None or condition_field(said, CONDITION) == "True":
        return []
    pods = sorted((user.name, user.runner) for user in users if user.runner)
    named = ", ".join(f"{pod} (run by {runner})" for pod, runner in pods[:NAMED])
    more = f" and {len(pods) - NAMED} more" if len(pods) > NAMED else ""
    return [Event("Warning", CONDITION, f"{found.message} Its pods: {named}{more}.")]
