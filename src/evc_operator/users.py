"""Which pods use a claim, from small projections of pods. Pure: no API calls.

A pod uses an EVC when it is in the EVC's namespace and either mounts it
(`spec.volumes[].persistentVolumeClaim.claimName` is the EVC's name) or matches
the EVC's `spec.selector`. Only these projections are kept in memory, never
pod bodies.
"""

from __future__ import annotations

import bisect
import dataclasses
import datetime
import enum
import sys
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from typing import Any

from evc_operator.interning import interned
from evc_operator.lifecycle import PodUse
from evc_operator.timestamps import shared_time
from evc_operator.unwatched import runner

TERMINAL_PHASES = frozenset({"Succeeded", "Failed"})
_NO_CLAIMS: tuple[str, ...] = ()
# In a StatefulSet's claims, "<template>-<statefulset>-*" stands for the PVC names of its
# claim templates at ordinals outside its range (workloads.py); "*" is in no object's name.
ANY_ORDINAL = "*"
# One with more ordinals than it names one by one (workloads.MAX_ORDINALS) lists, beside
# that marker (under which an index finds it from a claim's name), its range instead:
# "<template>-<statefulset>-*<start>:<stop>" for ordinals start to stop - 1, ending in "!"
# when no other ordinal was ever its (its spec never changed; see `ordinal_range`).
ONLY_THESE = "!"


Labels = tuple[tuple[str, str], ...]
_NO_LABELS: Labels = ()
# Pods of one workload carry the same labels: each set is stored once, in this table
# (key and value are the same tuple). Sets no pod holds any more are dropped whenever the
# table has doubled since it was last swept.
_LABEL_SETS: dict[Labels, Labels] = {}
_SWEEP_FROM = 1024


def _references_when_unheld() -> int:
    """What `sys.getrefcount` says, in `_sweep`'s loop, of a set only the table holds
    (the interpreter's own count differs between versions: measured, not assumed)."""
    table: dict[Labels, Labels] = {}
    pairs = (("", str(id(table))),)
    table[pairs] = pairs
    del pairs
    return max([sys.getrefcount(value) for _key, value in table.items()])


_UNHELD = _references_when_unheld()
_sweep_at = _SWEEP_FROM


def _sweep() -> None:
    global _sweep_at
    for key in [key for key, value in _LABEL_SETS.items()
                if sys.getrefcount(value) <= _UNHELD]:
        del _LABEL_SETS[key]
    _sweep_at = max(_SWEEP_FROM, 2 * len(_LABEL_SETS))


def label_set(labels: Mapping[str, str]) -> Labels:
    """`labels` as a sorted tuple of pairs, the same object for the same labels while any
    pod holds it: at 50,000 pods, their own tuples took 8 MiB (docs/benchmarks.md)."""
    if not labels:
        return _NO_LABELS
    pairs = tuple(sorted((interned(key), interned(value))
                         for key, value in labels.items()))
    found = _LABEL_SETS.setdefault(pairs, pairs)
    if len(_LABEL_SETS) >= _sweep_at:
        _sweep()
    return found


class InvalidSelector(ValueError):
    """spec.selector cannot be evaluated; the message says why."""


# The workloads whose activity their replicas or their existence say, not their creation.
_NOT_FROM_CREATION = ("CronJob/", "Deployment/", "ReplicaSet/", "StatefulSet/", "DaemonSet/",
                      "ReplicationController/")
# Labels a workload's controller gives each of its pods that its template lacks: a selector
# on them may match a pod it will make, whatever the template says (a StatefulSet's pod
# db-1, evicted and not made again until db-0 is Ready, is still its user; an Indexed Job's
# index 3, backing off before its retry). Deployments' pods take `pod-template-hash` from
# their ReplicaSet's template; a Job's template gets its job-name and controller-uid when
# the Job is made, a CronJob's not yet. Those whose values begin with the workload's name
# and a hyphen (`_NAMED`: a StatefulSet's pod db-1 and revision db-5d8f, a CronJob's Job
# nightly-29000000; a DaemonSet's revision hash is the bare hash) hold only where they do.
_PER_POD_LABELS: dict[str, frozenset[str]] = {
    "StatefulSet": frozenset({"statefulset.kubernetes.io/pod-name",
                              "apps.kubernetes.io/pod-index", "controller-revision-hash"}),
    "DaemonSet": frozenset({"controller-revision-hash", "pod-template-generation"}),
    "Deployment": frozenset({"pod-template-hash"}),
    "Job": frozenset({"batch.kubernetes.io/job-completion-index"}),
    "CronJob": frozenset({"batch.kubernetes.io/job-completion-index", "job-name",
                          "batch.kubernetes.io/job-name", "controller-uid",
                          "batch.kubernetes.io/controller-uid"}),
}
_NAMED: dict[str, frozenset[str]] = {
    "StatefulSet": frozenset({"statefulset.kubernetes.io/pod-name", "controller-revision-hash"}),
    "CronJob": frozenset({"job-name", "batch.kubernetes.io/job-name"}),
}
# Whether a requirement on a label (its values: those it accepts; None: any, as NotIn,
# Exists, DoesNotExist) may hold of a pod a workload will make, its template aside.
Open = Callable[[str, Sequence[str] | None], bool]


def _closed(key: str, values: Sequence[str] | None) -> bool:
    return False


@dataclasses.dataclass(frozen=True, slots=True)
class PodView:
    name: str
    namespace: str
    active: bool
    created: datetime.datetime
    claims: tuple[str, ...]  # sorted, each once (a tuple: a third of a frozenset's size)
    labels: Labels
    ended: datetime.datetime | None = None  # when its last container finished, if known
    # Its controller, `Kind.group/name` (`runner`; unwatched.py), if it has one.
    runner: str | None = None

    def use(self) -> PodUse:
        # A workload's view is named `Kind/name` (workloads.py; a custom resource's
        # `plural.group/name`, customkinds.py); a pod's name has no "/". A pod, a Job and a
        # custom resource are in use from their creation on; other workloads are not.
        from_creation = not self.name.startswith(_NOT_FROM_CREATION)
        # An active StatefulSet's view keeps its last write as `ended`, for the ordinals
        # it no longer keeps (`users_of`); while active, its use has no end.
        return PodUse(name=self.name, active=self.active, created=self.created,
                      ended=None if self.active else self.ended, from_creation=from_creation,
                      runner=self.runner)


def pod_view(body: Mapping[str, Any]) -> PodView:
    metadata, spec = body.get("metadata") or {}, body.get("spec") or {}
    claims = mounted_claims(spec)
    status = body.get("status") or {}
    active = status.get("phase") not in TERMINAL_PHASES
    # Tens of thousands are held: what repeats from pod to pod is stored once.
    return PodView(
        name=metadata["name"],
        namespace=interned(metadata.get("namespace") or ""),
        active=active,
        created=shared_time(metadata["creationTimestamp"]),
        claims=claims,
        labels=label_set(metadata.get("labels") or {}),
        ended=None if active else _finished_at(status),
        runner=runner(metadata),
    )


def mounted_claims(pod_spec: Mapping[str, Any]) -> tuple[str, ...]:
    """The claims a pod spec mounts by name, sorted, each once."""
    return tuple(sorted({
        volume["persistentVolumeClaim"]["claimName"]
        for volume in pod_spec.get("volumes") or ()
        if (volume.get("persistentVolumeClaim") or {}).get("claimName")
    })) or _NO_CLAIMS


def _finished_at(status: Mapping[str, Any]) -> datetime.datetime | None:
    """When the pod's last container finished, as its kubelet reported; None if unknown."""
    containers = [*(status.get("initContainerStatuses") or ()),
                  *(status.get("containerStatuses") or ()),
                  # An ephemeral container (kubectl debug) may mount the claim too.
                  *(status.get("ephemeralContainerStatuses") or ())]
    try:
        ends = [shared_time(c["state"]["terminated"]["finishedAt"]) for c in containers]
    except (KeyError, TypeError, ValueError, AttributeError):  # AttributeError: null
        return None
    return max(ends, default=None)


def matches(selector: Mapping[str, Any], labels: Mapping[str, str],
            open_key: Open = _closed) -> bool:
    """Kubernetes label selector semantics (matchLabels AND every matchExpression); a
    requirement on a label whose value is not known yet (`open_key`: `_PER_POD_LABELS`)
    that may hold is taken as holding.

    An empty selector matches nothing here: a claim must not accidentally count
    every pod of its namespace as a user.
    """
    match_labels = selector.get("matchLabels") or {}
    expressions = selector.get("matchExpressions") or []
    if not match_labels and not expressions:
        return False
    if any(labels.get(key) != value and not open_key(key, [str(value)])
           for key, value in match_labels.items()):
        return False
    return all(_expression_matches(expression, labels) or open_key(
        str(expression.get("key")),
        expression.get("values") if expression.get("operator") == "In" else None)
        for expression in expressions)


def matches_view(selector: Mapping[str, Any], view: PodView) -> bool:
    """Whether a pod, or a pod a workload may make (its template's labels and the ones its
    controller adds to each pod), matches the selector."""
    kind, slash, name = view.name.partition("/")
    keys = _PER_POD_LABELS.get(kind) if slash else None
    if keys is None:
        return matches(selector, dict(view.labels))
    named = _NAMED.get(kind, frozenset())

    def open_key(key: str, values: Sequence[str] | None) -> bool:
        if key not in keys:
            return False
        return values is None or key not in named or any(
            str(value).startswith(f"{name}-") for value in values)

    return matches(selector, dict(view.labels), open_key)


def _expression_matches(expression: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    key, operator = expression.get("key"), expression.get("operator")
    values = expression.get("values") or []
    if not key:
        raise InvalidSelector("a matchExpression has no key")
    if operator in ("In", "NotIn"):
        if not values:
            raise InvalidSelector(f"matchExpression {key!r} {operator} needs values")
        inside = key in labels and labels[key] in values
        return inside if operator == "In" else not inside
    if operator in ("Exists", "DoesNotExist"):
        if values:
            raise InvalidSelector(f"matchExpression {key!r} {operator} takes no values")
        return bool((key in labels) == (operator == "Exists"))
    raise InvalidSelector(f"matchExpression {key!r} has unknown operator {operator!r}")


def validate_selector(selector: Mapping[str, Any] | None) -> None:
    """Raise InvalidSelector if the selector could not be evaluated."""
    if selector:
        for expression in selector.get("matchExpressions") or []:
            _expression_matches(expression, {})


def ordinal_marker(claim_name: str) -> str | None:
    """Under what a StatefulSet lists a claim named as its claim templates name PVCs
    (`<template>-<statefulset>-<ordinal>`) for the ordinals outside its range:
    "data-web-5" -> "data-web-*"; None for a name that ends in no ordinal (a decimal
    number, as a StatefulSet's controller writes it: no leading zero)."""
    stem, dash, ordinal = claim_name.rpartition("-")
    if not (stem and dash and ordinal.isascii() and ordinal.isdigit()) or (
            ordinal != "0" and ordinal.startswith("0")):
        return None
    return f"{stem}-{ANY_ORDINAL}"


def ordinal_range(marker: str, start: int, stop: int, others: bool) -> str:
    """How a StatefulSet lists the ordinals start to stop - 1 of the claim template whose
    claims' `ordinal_marker` is `marker`, too many to name each: one entry however many,
    its memory not growing with its replicas. `others`: an ordinal outside them may have
    been its (the marker's own sense); else none was, and the marker only lets an index
    find it by a claim's name."""
    return f"{marker}{start}:{stop}{'' if others else ONLY_THESE}"


def _by_ordinal(view: PodView, claim_name: str, marker: str) -> bool | None:
    """How a view lists a claim named for an ordinal (`marker`: the name's
    `ordinal_marker`) other than by its name: True, in the range a StatefulSet lists
    instead of names (`ordinal_range`), as if named; False, beyond its ordinals
    (`_beyond_its_ordinals`); None, not at all. The ordinal is the name's whole suffix
    after the marker's stem, a canonical decimal (`ordinal_marker`), so `data-web-0900`
    or a template and StatefulSet split elsewhere by their dashes match no other range."""
    claims = view.claims  # sorted: the range, if any, right after the marker, its prefix
    at = bisect.bisect_left(claims, marker)
    if at == len(claims) or claims[at] != marker:
        return None
    span = claims[at + 1] if at + 1 < len(claims) else ""
    if not span.startswith(marker):
        return False
    first, _colon, stop = span[len(marker):].removesuffix(ONLY_THESE).partition(":")
    try:
        inside = int(first) <= int(claim_name[len(marker) - 1:]) < int(stop)
    except ValueError:  # no range of workloads.py's (a custom resource's own string)
        return False
    if inside:
        return True
    return None if span.endswith(ONLY_THESE) else False


def mounting_views(claim_name: str,
                   under: Callable[[str], Collection[PodView]]) -> Collection[PodView]:
    """The views an index lists under a claim's name (they mount it) and the StatefulSets
    it lists under the claim's `ordinal_marker` (`users_of` tells them apart), each once:
    `under(name)` is what the index lists under a name, empty for none."""
    named = under(claim_name)
    marker = ordinal_marker(claim_name)
    beyond = under(marker) if marker is not None else ()
    if not beyond:
        return named
    # A StatefulSet that keeps the claim's own ordinal too is listed under both: once here.
    return {view.name: view for view in (*beyond, *named)}.values()


def _beyond_its_ordinals(view: PodView) -> PodUse:
    """A StatefulSet's use of a claim named for one of its ordinals outside its range now.
    Its pod of that ordinal may have used the claim when the range was wider: a use that
    ended by the StatefulSet's last write of its spec at the latest (`ended`; None: not
    known), as a replicated workload at zero replicas has."""
    return PodUse(name=view.name, active=False, created=view.created, ended=view.ended,
                  from_creation=False)


def _by_name_only(view: PodView) -> bool:
    """A custom resource's view (`plural.group/name`, customkinds.py): it gives pods no
    labels the operator knows, so no selector finds it (one that only excludes labels,
    `DoesNotExist` or `NotIn`, would find every such object of the namespace)."""
    kind, slash, _ = view.name.partition("/")
    return bool(slash) and "." in kind


def names(view: PodView, claim: str) -> bool:
    """Whether a user's view names the claim: mounts it, or (a StatefulSet) lists it by
    its ordinal's marker or range (`users_of`)."""
    marker = ordinal_marker(claim)
    return claim in view.claims or (
        marker is not None and _by_ordinal(view, claim, marker) is not None)


def users_of(claim_name: str, selector: Mapping[str, Any] | None,
             mounting: Collection[PodView], in_namespace: Iterable[PodView]) -> list[PodUse]:
    """Users of a claim: pods that mount it, plus pods matching its selector (once each).

    `mounting` are the pods known to mount the claim, `in_namespace` all pods of
    its namespace (only read when there is a selector). A StatefulSet in `mounting` that
    lists the claim's ordinal in its range (`ordinal_range`) mounts it as if by name; one
    that lists it only by its `ordinal_marker` is an inactive user (`_beyond_its_ordinals`):
    scaled below that ordinal unseen (the operator stopped, a watch away), it would
    otherwise leave no trace of its pod's use.
    """
    marker = ordinal_marker(claim_name)
    found: dict[str, PodView] = {
        pod.name: pod for pod in mounting if claim_name in pod.claims or (
            marker is not None and _by_ordinal(pod, claim_name, marker) is True)}
    if selector:
        for pod in in_namespace:
            if (pod.name not in found and not _by_name_only(pod)
                    and matches_view(selector, pod)):
                found[pod.name] = pod
    users = [pod.use() for pod in found.values()]
    if marker is not None:
        beyond = {pod.name: pod for pod in mounting if pod.name not in found
                  and _by_ordinal(pod, claim_name, marker) is False}
        users += [_beyond_its_ordinals(pod) for pod in beyond.values()]
    return users


class SelectorChange(enum.IntEnum):
    """What a pod's change does to the users a selector finds (false: nothing)."""

    NONE = 0
    CHANGED = 1  # they may differ: look again
    LEFT = 2  # the pod matched before, and no longer does (or is gone): a departure


def users_may_change(change: tuple[PodView | None, PodView | None] | None,
                      ) -> Callable[[Mapping[str, Any] | None], SelectorChange]:
    """For a pod's change (before, after; None: not known), whether the users a selector
    finds may differ now: the pod matches it before or after but not both (`LEFT` when it
    matched before), or both and its use (phase, end) changed."""
    if change is None:
        return lambda _selector: SelectorChange.CHANGED
    before, after = change
    same_use = before is not None and after is not None and before.use() == after.use()

    def sees(selector: Mapping[str, Any] | None) -> SelectorChange:
        if not selector:
            return SelectorChange.CHANGED  # not known here (tracked.py lists only those)
        try:
            was, now = (each is not None and matches_view(selector, each) for each in change)
        except InvalidSelector:
            # Cannot tell: look again (evc.py drops invalid selectors anyway).
            return SelectorChange.CHANGED
        if was and not now:
            return SelectorChange.LEFT
        return SelectorChange.CHANGED if was != now or (was and not same_use) else (
            SelectorChange.NONE)

    return sees
