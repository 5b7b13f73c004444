"""Workloads as users: a claim stays while a workload may still start pods that use it.

The seed keeps a claim until its users are deleted or finished "and not going to be
restarted". For batch work the pod is not the whole story: a Job retries a failed pod
after a backoff, a CronJob starts a new Job on schedule, a Deployment replaces a pod it
lost. Between two pods no pod uses the claim, yet the next one will. So a workload whose
pod template names the claim (`claimName`, or labels the claim's `spec.selector`
matches) counts as a user while it may still create pods:

| kind                                   | a user while                                    |
|----------------------------------------|-------------------------------------------------|
| Job                                    | not finished: no `Complete` or `Failed`         |
|                                        | condition (a suspended Job included: it resumes)|
| CronJob                                | it exists (a suspended one too: resuming it     |
|                                        | runs the next Job, which needs the claim)       |
| Deployment, ReplicaSet, StatefulSet,   | its desired replicas are above zero             |
| ReplicationController                  | (replicas unset means 1)                        |
| DaemonSet                              | it exists                                       |

When a workload stops being a user, the grace counts from the moment the operator sees
the change (the later way); a Job's finishing condition's time, or a replicated
workload's last write, tells after a restart whether it stopped before or after the
recorded end of use. A deleted workload is simply gone, like a deleted pod. Its pods
still count on their own, as pods.

A workload that has not been an active user since the claim was created is no use of it
(as a pod that ended before the claim existed): a replicated workload at zero replicas
has been at zero since the last write of its spec or metadata, or since always if its
spec never changed (`metadata.generation` 1). A write is known from `managedFields`, to
the second; the latest of them is never earlier than the scale-down, so a claim created
in a later second was never used by it and keeps its expiry countdown. Without that
record, it may have been active after the claim's creation: it counts, as before.

A StatefulSet's claim templates name a PVC per ordinal it keeps; scaled below an ordinal,
its pod of that ordinal may have used that ordinal's claim until then. So a claim named
for one of its ordinals outside its range is used by it as if at zero replicas: a use
that ended by its last write at the latest, none if its spec never changed. Beyond
`MAX_ORDINALS` replicas its ordinals are one range per template, not a name each.

Custom resources (Argo Workflows, Tekton PipelineRuns, ...) are users the same way when
`USER_KINDS` names their kind: customkinds.py, whose rule is a Job's (in use from creation
until finished). `UserKind` says where a kind's objects are and how one is projected.

A workload is projected into the same small view as a pod (`PodView`), named
`Kind/name` so status and `kubectl get evc` name it beside pods; nothing else of its
body is kept.
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
from collections.abc import Callable, Mapping
from typing import Any

from evc_operator.interning import interned
from evc_operator.timestamps import parse_time, shared_time
from evc_operator.users import ANY_ORDINAL, PodView, label_set, mounted_claims, ordinal_range

# The kinds watched, by (API group/version, plural), and how each names its pod template.
KINDS: Mapping[str, tuple[str, str]] = {
    "Job": ("batch/v1", "jobs"),
    "CronJob": ("batch/v1", "cronjobs"),
    "Deployment": ("apps/v1", "deployments"),
    "ReplicaSet": ("apps/v1", "replicasets"),
    "StatefulSet": ("apps/v1", "statefulsets"),
    "DaemonSet": ("apps/v1", "daemonsets"),
    "ReplicationController": ("v1", "replicationcontrollers"),
}
_REPLICATED = frozenset({"Deployment", "ReplicaSet", "StatefulSet", "ReplicationController"})
_FINISHED = frozenset({"Complete", "Failed"})
# "Inactive since before anything": a workload whose desired replicas were always zero.
_NEVER_ACTIVE = datetime.datetime.min.replace(tzinfo=datetime.UTC)


def collection(kind: str) -> str:
    """How the API layer names a kind's collection: "group/version/plural"."""
    api_version, plural = KINDS[kind]
    return f"{api_version}/{plural}"


def template_of(kind: str, spec: Mapping[str, Any]) -> Mapping[str, Any]:
    """The pod template of a workload's spec ({} when it has none)."""
    if kind == "CronJob":
        spec = (spec.get("jobTemplate") or {}).get("spec") or {}
    return spec.get("template") or {}


def _finished(status: Mapping[str, Any]) -> tuple[bool, datetime.datetime | None]:
    """Whether a Job has finished, and when its controller said so (None: unknown)."""
    for condition in status.get("conditions") or ():
        if condition.get("type") in _FINISHED and condition.get("status") == "True":
            stamp = condition.get("lastTransitionTime")
            try:
                return True, parse_time(stamp) if stamp else None
            except ValueError:
                return True, None
    return False, None


def _zero_since(metadata: Mapping[str, Any]) -> datetime.datetime | None:
    """Since when, at the latest, a workload now at zero replicas has been at zero: always
    if its spec never changed, else its last write but of its status; None if unknown."""
    if metadata.get("generation") == 1:
        return _NEVER_ACTIVE
    try:
        writes = [parse_time(entry["time"]) for entry in metadata.get("managedFields") or ()
                  if entry.get("subresource") != "status" and entry.get("time")]
    except (TypeError, ValueError):
        return None
    return max(writes, default=None)


def may_create_pods(kind: str, body: Mapping[str, Any]) -> tuple[bool, datetime.datetime | None]:
    """Whether the workload may still create pods; if not, since when not (at the latest),
    if known."""
    spec, status = body.get("spec") or {}, body.get("status") or {}
    if kind == "Job":
        finished, at = _finished(status)
        return not finished, at
    if kind in _REPLICATED:
        replicas = spec.get("replicas")
        if (1 if replicas is None else replicas) > 0:
            return True, None
        return False, _zero_since(body.get("metadata") or {})
    return True, None  # CronJob, DaemonSet


# A StatefulSet's claim templates name each of its ordinals up to this many replicas;
# beyond, one range per template (users.ordinal_range), rather than hold a name for each
# of tens of thousands of ordinals. Named or in the range, each is its claim alike: one
# left out lost its user while the controller, stopped at a pod not Ready (OrderedReady),
# did not make that ordinal's pod again, and was deleted after the grace period.
MAX_ORDINALS = 1000


def _claim_templates(metadata: Mapping[str, Any], spec: Mapping[str, Any]) -> set[str]:
    """The PVC names a StatefulSet's pods mount from its volumeClaimTemplates:
    `<template>-<statefulset>-<ordinal>` for each ordinal it keeps (spec.ordinals.start
    on, `replicas` of them). Its controller mounts a PVC of that name if one exists, an
    EVC's among them: such a claim is used by the StatefulSet while the ordinal is in
    its range, even between two of its pods.

    Beside them, `<template>-<statefulset>-*` (users.ANY_ORDINAL) for every other ordinal,
    unless its spec never changed (`metadata.generation` 1: its range never was another):
    scaled down below an ordinal, it may have used that ordinal's claim until its last
    write, and a scale-down the operator did not see (stopped, or a watch away) would
    leave no trace of that use otherwise. One entry per template, whatever the ordinal:
    users.users_of makes such a claim's StatefulSet an inactive user.

    Beyond `MAX_ORDINALS` replicas, per template that marker and `users.ordinal_range`
    instead of the names (the marker then even at generation 1: an index finds the
    StatefulSet under it by a claim's name, and a write of it looks again at the claims
    named for its ordinals, watched.py)."""
    templates = [(entry.get("metadata") or {}).get("name")
                 for entry in spec.get("volumeClaimTemplates") or ()]
    replicas = spec.get("replicas")
    count = 1 if replicas is None else replicas
    start = (spec.get("ordinals") or {}).get("start") or 0
    if not templates or not isinstance(count, int) or not isinstance(start, int) or (
            count < 0):
        return set()
    others = metadata.get("generation") != 1
    stems = [f"{template}-{metadata['name']}-" for template in templates if template]
    if count > MAX_ORDINALS:
        return {entry for stem in stems for entry in (
            f"{stem}{ANY_ORDINAL}",
            ordinal_range(f"{stem}{ANY_ORDINAL}", start, start + count, others))}
    names = {f"{stem}{ordinal}" for stem in stems for ordinal in range(start, start + count)}
    if others:
        names.update(f"{stem}{ANY_ORDINAL}" for stem in stems)
    return names


def workload_view(kind: str, body: Mapping[str, Any]) -> PodView:
    """A workload as a user-shaped view: name `Kind/name`, active while it may create pods,
    the claims its template mounts (and a StatefulSet's claim templates) and the labels its
    template gives pods. A StatefulSet that lists its claim templates' other ordinals
    (`_claim_templates`) keeps its last write as `ended` even while active: the end of
    its use of those (`PodView.use` gives an active user no end)."""
    metadata, spec = body.get("metadata") or {}, body.get("spec") or {}
    template = template_of(kind, spec)
    template_spec = template.get("spec") or {}
    labels = (template.get("metadata") or {}).get("labels") or {}
    active, stopped = may_create_pods(kind, body)
    ended = None if active else stopped
    claims = mounted_claims(template_spec)
    if kind == "StatefulSet" and spec.get("volumeClaimTemplates"):
        named = _claim_templates(metadata, spec)
        claims = tuple(sorted({*claims, *named}))
        if metadata.get("generation") != 1 and any(
                claim.endswith(ANY_ORDINAL) for claim in named):
            ended = _zero_since(metadata)  # its last write, if known
    return PodView(
        name=f"{kind}/{metadata['name']}",
        namespace=interned(metadata.get("namespace") or ""),
        active=active,
        created=shared_time(metadata["creationTimestamp"]),
        claims=claims,
        labels=label_set(labels),
        ended=ended,
    )


@dataclasses.dataclass(frozen=True)
class UserKind:
    """A kind whose objects are users of the claims they name: where its objects are
    (`collection`, as the API layer names it: "group/version/plural") and how one is
    projected into a user's view. The built-in workloads (`BUILT_IN`), and those of
    `USER_KINDS` (customkinds.py)."""

    name: str  # for logs and task names: "Job", "workflows.v1alpha1.argoproj.io"
    collection: str
    project: Callable[[Mapping[str, Any]], PodView] = dataclasses.field(compare=False)
    group: str
    plural: str


BUILT_IN: tuple[UserKind, ...] = tuple(
    UserKind(kind, collection(kind), functools.partial(workload_view, kind),
             api_version.rpartition("/")[0], plural)
    for kind, (api_version, plural) in KINDS.items())
