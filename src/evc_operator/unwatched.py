"""Claims held only by pods that a controller runs, and the condition and Warning that say
so. Pure: no API calls.

A pod holds its claim while it runs; a workload the operator watches holds it while it may
start pods (a Job retrying, a Deployment with replicas: workloads.py), if its pod template
names it, and so does an object of a `USER_KINDS` kind that names it (customkinds.py). A
pod whose controller (its owner reference with `controller: true`) is of another kind (an
Argo Workflow, a Tekton TaskRun, a KubeVirt VirtualMachineInstance, a Spark driver), or a
workload whose template does not name the claim (a volume a webhook adds to its pods, a
template changed since), counts only as itself: if no object the operator watches holds the
claim, nothing holds it between two such pods, and a pod that comes later than the grace
period finds it gone. Whether the controller will start another pod, the operator cannot
know. It says so before that can happen: a condition `UnwatchedController` and a Warning of
that reason when the condition appears, naming the controllers' kinds (the Warning also the
first pods and their controllers) and what would hold the claim. A pod younger than
`SETTLED` is not counted yet (the claim is looked at again once it is): its controller's
own view may come a moment after it (each kind has its own watch), and would hold the
claim. Nor is one whose controller is of a kind the operator watches there but is not
among its views: deleted before its pods (a background cascade, `kubectl delete job`), or
not come yet after a relist; told, its words would be untrue.

The condition stays once said, while the claim exists (a controller that ran pods may run
more, and one that deletes each finished pod, as Argo's `podGC` does, would otherwise make
it come and go, and warn, at each step), until an object the operator watches holds the
claim (a workload or a `USER_KINDS` object that names it, running or finished: one listed
after the Warning, say) or its deletion is paused (the keep annotation, `DRY_RUN`, an
invalid spec): then it has nothing left to warn of. Its message names only the kinds, so
that pods coming and going do not rewrite it (their status writes are budgeted: budget.py).
"""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from evc_operator.interning import interned
from evc_operator.lifecycle import PodUse
from evc_operator.resources import KEEP_ANNOTATION
from evc_operator.status import UNWATCHED, Condition, Event, condition_field

CONDITION = UNWATCHED
REASON = "NotWatched"
# The controllers whose pods the operator follows to a workload it watches (workloads.py):
# a Deployment's through its ReplicaSet, a CronJob's through its Job. Pods of one whose
# template does not name the claim are told as well.
FOLLOWED = frozenset({"Job.batch", "ReplicaSet.apps", "StatefulSet.apps", "DaemonSet.apps",
                      "ReplicationController"})
# A node's mirror pods (static pods): the kubelet keeps them, there is no object to watch.
_MIRRORED = "Node"
# How old a pod is before it counts here: its controller's view has come by then.
SETTLED = datetime.timedelta(seconds=10)
# The pods the Warning names one by one; more are counted.
NAMED = 3


def runner(metadata: Mapping[str, Any]) -> str | None:
    """A pod's controller (its owner reference with `controller: true`) as
    `Kind.group/name` (`Kind/name` in the core group); None when it has none, or is a
    node's mirror pod. Interned: the pods of one controller share it."""
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
        if qualified == _MIRRORED:
            return None
        return interned(f"{qualified}/{name}")
    return None


def message(kinds: Sequence[str]) -> str:
    """The condition's words for controllers of these kinds (`Kind.group`)."""
    custom = [kind for kind in kinds if "." in kind.partition(".")[2]]
    followed = [kind for kind in kinds if kind in FOLLOWED]
    why = (f" (the pod template of their {', '.join(followed)} does not name it, nor match "
           f"its selector: a volume or label a webhook adds to its pods, say)"
           if followed else "")
    advice = [f"name the claim (or the labels its selector matches) in "
              f"{'that' if len(followed) == 1 else 'those'} pod template"] if followed else []
    if custom:
        advice.append(f"name the resource of {', '.join(custom)} in USER_KINDS "
                      f"(plural.version.group), with objects that name this claim in a "
                      f"persistentVolumeClaim.claimName")
    advice.append(f"set the annotation {KEEP_ANNOTATION} while they may start pods, or a "
                  f"grace period longer than the gaps between their pods")
    return (f"{_OPENING}{', '.join(kinds)} use this claim, and no object the operator "
            f"watches holds it{why}: between their pods nothing does, and it is deleted "
            f"its grace period after the last one ends even if their controller would start "
            f"another. To keep it: {'; or '.join(advice)}.")


# Whether a pod's controller (`runner`'s form) is among its namespace's views: None when no
# kind the operator watches there could be its (seams.PodIndex.controller_seen).
Seen = Callable[[str], bool | None]


@dataclasses.dataclass(frozen=True)
class Told:
    """What a reconciliation says of it: the condition (None: none), the Warning to post,
    and when to look again (a pod that a controller runs becomes old enough to count)."""

    condition: Condition | None
    warnings: list[Event]
    settles_at: datetime.datetime | None


def tell(users: Sequence[PodUse], said: Mapping[str, Any], now: datetime.datetime,
         seen: Seen, *, paused: bool) -> Told:
    """The condition, its Warning, and when to look again, for a claim's users. `said`: the
    status stored, or last written (the condition stays once said); `paused`: its deletion
    is (keep annotation, DRY_RUN, invalid spec)."""
    if paused or any("/" in user.name for user in users):  # a workload's view: Kind/name
        return Told(None, [], None)
    run = [user for user in users if user.runner and seen(user.runner) is not False]
    counted = [user for user in run if user.created <= now - SETTLED]
    young = [user.created + SETTLED for user in users
             if user.runner and user.created > now - SETTLED]
    found = condition(counted, said)
    return Told(found, warnings(found, counted, said), min(young, default=None))


def condition(counted: Sequence[PodUse], said: Mapping[str, Any]) -> Condition | None:
    """The condition: pods that a controller runs among the claim's users (`counted`), or
    said so before. Once said, its kinds only grow: pods of two kinds in turn would
    otherwise rewrite it at each change."""
    kinds = {str(user.runner).partition("/")[0] for user in counted}
    if condition_field(said, CONDITION) == "True":
        before = condition_field(said, CONDITION, field="message") or ""
        told = _kinds_in(before)
        if told is None or (not kinds and not told):  # words of another version: as they are
            return Condition(CONDITION, True, REASON, before or message(["(unknown)"]))
        kinds |= told
    return Condition(CONDITION, True, REASON, message(sorted(kinds))) if kinds else None


_OPENING = "Pods run by "


def _kinds_in(words: str) -> set[str] | None:
    """The kinds a message of `message` names; None if it is not one."""
    head, found, _rest = words.removeprefix(_OPENING).partition(" use this claim")
    if not words.startswith(_OPENING) or not found or not head:
        return None
    return set(head.split(", "))


def warnings(found: Condition | None, counted: Sequence[PodUse],
             said: Mapping[str, Any]) -> list[Event]:
    """An UnwatchedController Warning when the condition appears (not again while it
    stays), naming the first of the pods and their controllers."""
    if found is None or condition_field(said, CONDITION) == "True":
        return []
    pods = sorted((user.name, str(user.runner)) for user in counted)
    named = ", ".join(f"{pod} (run by {runner})" for pod, runner in pods[:NAMED])
    more = f" and {len(pods) - NAMED} more" if len(pods) > NAMED else ""
    return [Event("Warning", CONDITION, f"{found.message} Its pods: {named}{more}.")]
