"""Custom resources as users: the objects of kinds named in `USER_KINDS`.

Pods of controllers the operator does not otherwise watch (Argo Workflows, Tekton, Spark,
Kubeflow, KEDA ScaledJobs, ...) would count only as pods: between two steps of a pipeline
no pod uses the claim, and a step that comes later than the grace period would find it
gone. Their objects hold the claim instead, as a Job does (workloads.py):

- an object of a listed kind is a user of every claim it names anywhere in its spec or
  status as `persistentVolumeClaim: {claimName: <name>}` (Argo's `spec.volumes` and
  `spec.templates[].volumes`, Tekton's `spec.workspaces`, Spark's `spec.volumes`, ...);
  by name only, never by a claim's `spec.selector`;
- it is in use from its creation on, until it has finished by one rule for every kind
  (`finished`): a condition `Succeeded` that is `True` or `False` (Tekton), a condition
  `Complete`, `Completed` or `Failed` that is `True`, a terminal `status.phase` (Argo),
  or a `status.completionTime` or `status.finishedAt`. Its end is that condition's
  transition, or that time. One whose end the rule cannot read stays a user while it
  exists: the claim is kept until it is deleted, the safe side;
- deleted, it is gone like a deleted pod.

Views are named `<plural>.<group>/<name>` (`pipelineruns.tekton.dev/build-42`): a form
`kubectl get` takes, the same whether the object came in a list (whose items need not say
their kind) or a watch, and never one of a built-in workload's names (no dot).
"""

from __future__ import annotations

import datetime
import functools
import re
from collections.abc import Mapping, Sequence
from typing import Any

from evc_operator.interning import interned
from evc_operator.timestamps import parse_time, shared_time
from evc_operator.users import PodView, label_set
from evc_operator.workloads import UserKind

# kubectl's fully qualified resource: plural.version.group.
_LABEL = r"[a-z0-9](?:[-a-z0-9]*[a-z0-9])?"
_QUALIFIED = re.compile(rf"(?P<plural>{_LABEL})\.(?P<version>v[0-9]+(?:(?:alpha|beta)[0-9]+)?)"
                        rf"\.(?P<group>{_LABEL}(?:\.{_LABEL})*)")
_DONE_WHEN_TRUE = frozenset({"Complete", "Completed", "Failed"})
_TERMINAL_PHASES = frozenset({"Succeeded", "Failed", "Error", "Completed"})
_FINISH_TIMES = ("completionTime", "finishedAt")
_NO_LABELS = label_set({})


class BadUserKind(ValueError):
    """A `USER_KINDS` entry the operator cannot watch."""


def parse(text: str) -> tuple[UserKind, ...]:
    """The kinds of a `USER_KINDS` value: comma-separated `plural.version.group`."""
    kinds: dict[str, UserKind] = {}
    for entry in (part.strip() for part in text.split(",")):
        if not entry:
            continue
        match = _QUALIFIED.fullmatch(entry)
        if match is None:
            raise BadUserKind(
                f"{entry!r} is not a resource written as plural.version.group (for "
                f"example workflows.v1alpha1.argoproj.io)")
        group, version, plural = match["group"], match["version"], match["plural"]
        if "." not in group:  # batch, apps, ...: a custom resource's group is a domain
            raise BadUserKind(
                f"{entry!r} is of the built-in API group {group!r}, not a custom resource: "
                f"the workloads that name claims (Jobs, CronJobs, Deployments, ...) are "
                f"watched already")
        resource = f"{plural}.{group}"  # one version of a resource only
        if resource in kinds:
            raise BadUserKind(f"{entry!r}: {resource} is listed twice")
        kinds[resource] = UserKind(entry, f"{group}/{version}/{plural}",
                                   functools.partial(custom_view, resource), group, plural)
    return tuple(kinds.values())


def _stamp(value: Any) -> datetime.datetime | None:
    try:
        return parse_time(value) if isinstance(value, str) and value else None
    except ValueError:
        return None


def finished(status: Any) -> tuple[bool, datetime.datetime | None]:
    """Whether an object has finished by the generic rule, and when at the latest: the
    latest of the finishing condition's `lastTransitionTime`, `completionTime` and
    `finishedAt` that it gives (Argo's conditions carry no time: its `finishedAt` does);
    None when it gives none. Any shape is read (a custom resource's status is what its
    controller writes): what is not of the expected type says nothing."""
    if not isinstance(status, Mapping):
        return False, None
    conditions = status.get("conditions")
    said = [condition for condition in (conditions if isinstance(conditions, list) else ())
            if isinstance(condition, Mapping) and _finishing(condition)]
    phase = status.get("phase")
    times = [stamp for stamp in (*(_stamp(c.get("lastTransitionTime")) for c in said),
                                 *(_stamp(status.get(field)) for field in _FINISH_TIMES))
             if stamp is not None]
    done = (bool(said) or (isinstance(phase, str) and phase in _TERMINAL_PHASES)
            or any(isinstance(status.get(field), str) and status.get(field)
                   for field in _FINISH_TIMES))
    return (True, max(times, default=None)) if done else (False, None)


def _finishing(condition: Mapping[str, Any]) -> bool:
    kind, state = condition.get("type"), condition.get("status")
    if not isinstance(kind, str) or not isinstance(state, str):
        return False
    return ((kind == "Succeeded" and state in ("True", "False"))
            or (kind in _DONE_WHEN_TRUE and state == "True"))


def named_claims(*parts: Any) -> tuple[str, ...]:
    """Every `persistentVolumeClaim.claimName` anywhere in the parts, sorted, each once.
    Walked with a stack, not recursion: an object nested deeper than Python's recursion
    limit must not stop its informer."""
    names: set[str] = set()
    stack: list[Any] = list(parts)
    while stack:
        node = stack.pop()
        if isinstance(node, Mapping):
            source = node.get("persistentVolumeClaim")
            if isinstance(source, Mapping) and isinstance(source.get("claimName"), str):
                names.add(source["claimName"])
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return tuple(sorted(names))


def custom_view(resource: str, body: Mapping[str, Any]) -> PodView:
    """An object of a `USER_KINDS` kind as a user's view: named `<plural>.<group>/<name>`
    (`resource`: "plural.group"), active until it has finished, the claims it names
    anywhere but its metadata."""
    metadata, status = body.get("metadata") or {}, body.get("status") or {}
    done, at = finished(status)
    return PodView(
        name=f"{resource}/{metadata['name']}",
        namespace=interned(metadata.get("namespace") or ""),
        active=not done,
        created=shared_time(metadata["creationTimestamp"]),
        claims=named_claims(body.get("spec"), status),
        labels=_NO_LABELS,
        ended=at if done else None,
    )


def names(kinds: Sequence[UserKind]) -> str:
    """The kinds as `USER_KINDS` writes them, for a log line."""
    return ", ".join(kind.name for kind in kinds) or "none"
