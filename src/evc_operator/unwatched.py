"""Users run by controllers the operator does not watch, and the condition and Warning
that say so. Pure: no API calls.

A pod holds its claim while it runs; a workload the operator watches holds it while it may
start pods (a Job retrying, a Deployment with replicas: workloads.py), and so does an object
of a `USER_KINDS` kind (customkinds.py). A pod whose controller (its owner reference with
`controller: true`) is of any other kind (an Argo Workflow, a Tekton TaskRun, a KubeVirt
VirtualMachineInstance, a Spark application) counts only as itself: between two of its
pods nothing holds the claim, and a pod that comes later than the grace period finds it
gone. Whether such a controller will start another pod, the operator cannot know. It says
so before that can happen: a condition `UnwatchedController` (present while such a pod is
among the claim's users, running or finished) and a Warning of that reason when the
condition appears, naming the pods, their controllers, and what would make the
controllers hold the claim (`USER_KINDS`) or keep it regardless (the keep annotation).

A controller of a `USER_KINDS` kind is watched: its group is the kind's and its kind, in
lower case, is the kind's plural or what the plural is made from by the usual English
endings (workflows: Workflow; policies: Policy). A resource whose plural is made otherwise
is told as unwatched (the Warning then names a kind that is listed): said, never silent.
"""

from __future__ import annotations

import sys
from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import Any

from evc_operator.lifecycle import PodUse
from evc_operator.resources import KEEP_ANNOTATION
from evc_operator.status import UNWATCHED, Condition, Event, condition_field

CONDITION = UNWATCHED
# The controllers whose pods the operator follows to a workload it watches (workloads.py):
# a Deployment's through its ReplicaSet, a CronJob's through its Job; a Node's mirror pods.
FOLLOWED = frozenset({"Job.batch", "ReplicaSet.apps", "StatefulSet.apps", "DaemonSet.apps",
                      "ReplicationController", "Node"})
# The users named one by one in the condition's message; more are counted.
NAMED = 3


def runner(metadata: Mapping[str, Any]) -> str | None:
    """A pod's controller (its owner reference with `controller: true`) as
    `Kind.group/name` (`Kind/name` in the core group), if it is not of a kind the operator
    follows (`FOLLOWED`); None when it is, or when the pod has none."""
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
        return f"{sys.intern(qualified)}/{name}"
    return None


def _plural_of(kind: str, plural: str) -> bool:
    lower = kind.lower()
    return plural in (lower, f"{lower}s", f"{lower}es") or (
        lower.endswith("y") and plural == f"{lower[:-1]}ies")


def watched(runner: str, resources: Collection[tuple[str, str]]) -> bool:
    """Whether a controller (`runner`'s form) is of a kind in `resources`: the (group,
    plural) of each `USER_KINDS` kind."""
    qualified = runner.partition("/")[0]
    kind, _, group = qualified.partition(".")
    return any(group == their_group and _plural_of(kind, plural)
               for their_group, plural in resources)


def unwatched(users: Iterable[PodUse],
              resources: Collection[tuple[str, str]]) -> list[tuple[str, str]]:
    """The users whose controller the operator does not watch: (pod, controller), sorted."""
    return sorted({(user.name, user.runner) for user in users
                   if user.runner is not None and not watched(user.runner, resources)})


def condition(found: Sequence[tuple[str, str]]) -> Condition | None:
    """The condition while such users are there; None (no condition) otherwise."""
    if not found:
        return None
    named = ", ".join(f"pod {pod} (run by {runner})" for pod, runner in found[:NAMED])
    more = f" and {len(found) - NAMED} more" if len(found) > NAMED else ""
    kinds = sorted({runner.partition("/")[0] for _pod, runner in found})
    return Condition(
        CONDITION, True, "NotWatched",
        f"Used by {named}{more}: {', '.join(kinds)} is not a kind the operator watches. "
        f"Between its pods nothing holds this claim, which is deleted its grace period "
        f"after the last one ends, even if the controller would start another. Name its "
        f"resource in USER_KINDS (plural.version.group) to have its objects hold the "
        f"claim until they finish, or set the annotation {KEEP_ANNOTATION}.")


def warnings(found: Condition | None, previous: Mapping[str, Any]) -> list[Event]:
    """An UnwatchedController Warning when the condition appears (not again while it
    stays)."""
    if found is not None and condition_field(previous, CONDITION) != "True":
        return [Event("Warning", CONDITION, found.message)]
    return []
