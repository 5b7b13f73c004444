"""What the RBAC must allow, checked up front: one line per missing permission, naming
the manifest to apply, instead of a 403 per retry.

The permissions are those of config/rbac (tests/unit/test_access.py keeps the two the
same). Cluster-wide ones are checked at start; those in a namespace when its first claim
appears (a namespaced install grants them in one namespace only). Nothing here stops the
operator: it keeps retrying and recovers, without a restart, once the RBAC is applied.
Kopf's own retries of a forbidden request are told once per request (`QuietForbidden`).
So is a kind of USER_KINDS that the API server does not serve (`check_served`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
import re
from collections.abc import Awaitable, Callable, Sequence

from evc_operator import kube
from evc_operator.errors import ApiException, describe
from evc_operator.resources import GROUP, PLURAL
from evc_operator.workloads import BUILT_IN, UserKind

log = logging.getLogger(__name__)

APPLY = ("apply the RBAC of config/rbac (all namespaces; the chart's by default) or "
         "config/rbac-namespaced (one namespace)")


@dataclasses.dataclass(frozen=True)
class Permission:
    verb: str
    group: str
    resource: str
    subresource: str = ""
    name: str = ""  # one object (RBAC's resourceNames); "": any

    def __str__(self) -> str:
        kind = f"{self.resource}/{self.subresource}" if self.subresource else self.resource
        return (f"{self.verb} {kind}" + (f".{self.group}" if self.group else "")
                + (f" named {self.name}" if self.name else ""))


def _each(group: str, resource: str, *verbs: str, subresource: str = "") -> list[Permission]:
    return [Permission(verb, group, resource, subresource) for verb in verbs]


# What Kopf needs to discover resources (a CRD's change makes it look again): cluster-wide
# in every install.
DISCOVERY = _each("apiextensions.k8s.io", "customresourcedefinitions", "list", "watch")
# And, serving named namespaces (`--namespace`), to learn which of them exist. Serving
# every namespace, it lists none: the install for all namespaces does not grant it.
NAMESPACES = _each("", "namespaces", "list", "watch")
CLUSTER = [*DISCOVERY, *NAMESPACES]  # the namespaced install's cluster-wide discovery


def user_kinds(kinds: Sequence[UserKind]) -> list[Permission]:
    """What reading kinds of users needs: the built-in workloads (`WORKLOADS`), and the
    custom kinds of USER_KINDS (customkinds.py), read as workloads are, where they are."""
    return [permission for kind in kinds
            for permission in _each(kind.group, kind.plural, "list", "watch")]


# Workloads are users: read in each namespace with claims, or in all at once where the
# operator serves every namespace and these are granted cluster-wide (clusterwide.py).
WORKLOADS = user_kinds(BUILT_IN)


# What the operator does in a namespace with claims.
NAMESPACED = [*_each(GROUP, PLURAL, "get", "list", "watch", "delete"),
              *_each(GROUP, PLURAL, "patch", subresource="status"),
              # For the PVC's owner reference that blocks the claim's deletion, where
              # admission asks (OwnerReferencesPermissionEnforcement).
              *_each(GROUP, PLURAL, "update", subresource="finalizers"),
              *_each("", "persistentvolumeclaims", "get", "list", "watch", "create", "patch"),
              *_each("", "pods", "list", "watch"),
              *WORKLOADS,
              *_each("", "events", "create")]


@functools.cache
def namespaced(kinds: tuple[UserKind, ...] = ()) -> list[Permission]:
    """`NAMESPACED`, and what the custom kinds of USER_KINDS need: one list per value, so
    that each namespace is checked once (`AccessCheck.check`)."""
    return [*NAMESPACED, *user_kinds(kinds)] if kinds else NAMESPACED


@functools.cache
def workloads(kinds: tuple[UserKind, ...] = ()) -> list[Permission]:
    """`WORKLOADS`, and the custom kinds': what watching them once for the cluster needs."""
    return [*WORKLOADS, *user_kinds(kinds)] if kinds else WORKLOADS


@functools.cache
def lease(name: str) -> list[Permission]:
    """Leader election: get and update the one Lease (the shipped Role names it), create
    any (RBAC cannot limit `create` by name). One list per name: checked once."""
    return [*(Permission(verb, "coordination.k8s.io", "leases", name=name)
              for verb in ("get", "update")),
            Permission("create", "coordination.k8s.io", "leases")]


async def _asked(api: kube.Api, permission: Permission, namespace: str = "") -> bool:
    """Whether the API server grants us `permission` (in `namespace`; "": all)."""
    return await kube.may(api, permission.verb, permission.group, permission.resource,
                    permission.subresource, namespace, permission.name)


async def missing(api: kube.Api, permissions: list[Permission],
                  namespace: str = "") -> list[Permission]:
    """The permissions the API server does not grant us (in `namespace`; "": all)."""
    allowed = await asyncio.gather(*(_asked(api, p, namespace) for p in permissions))
    return [permission for permission, ok in zip(permissions, allowed, strict=True) if not ok]


class AccessCheck:
    """Checks once per scope, and logs one line per permission missing there.

    Each permission is asked cluster-wide once, whoever needs it (a namespace's check,
    or the choice of watching the workloads once for the cluster): granted there (an
    install for all namespaces), no namespace costs a request more; only those missing
    cluster-wide are asked again in each namespace (a namespaced install)."""

    def __init__(self, api: kube.Api) -> None:
        self.api = api
        self.checked: set[tuple[str, int]] = set()
        self.cluster_wide: dict[Permission, asyncio.Task[bool]] = {}
        self.tasks: set[asyncio.Task[None]] = set()

    def check(self, permissions: list[Permission], namespace: str = "") -> None:
        """Check in the background, once per namespace ("": the cluster)."""
        key = (namespace, id(permissions))
        if key in self.checked:
            return
        self.checked.add(key)
        task = asyncio.create_task(self._check(permissions, namespace))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def lacking_cluster_wide(self, permissions: list[Permission]) -> list[Permission]:
        """Those not granted in all namespaces, each asked once for every caller; one that
        could not be asked (the API server down, say) is asked again by the next."""
        for permission in permissions:
            if permission not in self.cluster_wide:
                self.cluster_wide[permission] = asyncio.create_task(
                    _asked(self.api, permission))
        asked = [self.cluster_wide[permission] for permission in permissions]
        try:  # shielded: a caller cancelled leaves the answer to the others
            allowed = await asyncio.gather(*map(asyncio.shield, asked))
        except Exception:
            for permission, task in zip(permissions, asked, strict=True):
                if task.done() and (task.cancelled() or task.exception() is not None):
                    self.cluster_wide.pop(permission, None)
            raise
        return [permission for permission, ok in zip(permissions, allowed, strict=True)
                if not ok]

    async def _check(self, permissions: list[Permission], namespace: str) -> None:
        try:
            lacking = await self.lacking_cluster_wide(permissions)
            if namespace and lacking:
                lacking = await missing(self.api, lacking, namespace)
        except Exception as error:  # the API is down, say: its own retries will tell
            log.debug("Could not check permissions: %s", describe(error))
            return
        where = f"in namespace {namespace}" if namespace else "cluster-wide"
        for permission in lacking:
            log.error("Missing permission: %s %s; %s.", permission, where, APPLY)

    def close(self) -> None:
        for task in [*self.tasks, *self.cluster_wide.values()]:
            task.cancel()


# How often the kinds of USER_KINDS are looked for again in the API server's discovery
# (seconds): a CRD uninstalled after the start is said within this long.
SERVED_EVERY = 300.0


async def check_served(api: kube.Api, kinds: Sequence[UserKind], *,
                       every: float = SERVED_EVERY,
                       sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
    """One line for each kind of USER_KINDS that the API server does not serve (its CRD not
    installed, or another version): until it does, no namespace with claims can be listed
    whole, so none of their claims is decided (deleted) there. Not an exit: the CRD may
    come. Looked for again `every` seconds: said again when one goes (a CRD uninstalled
    later), and when it comes back."""
    served: dict[str, bool] = {}
    while True:
        for kind in kinds:
            group_version = kind.collection.rpartition("/")[0]
            try:
                now = await kube.serves(api, group_version, kind.plural)
            except (ApiException, *kube.UNANSWERED) as error:
                log.debug("Could not read the discovery of %s: %s", group_version,
                          describe(error))
                continue
            before = served.get(kind.name)
            served[kind.name] = now
            if not now and before is not False:
                log.error("USER_KINDS names %s, which the API server does not serve (is its "
                          "CustomResourceDefinition installed, in version %s?): the claims "
                          "of namespaces with claims are not served (no PVC made, none "
                          "deleted) until it is.", kind.name,
                          group_version.rpartition("/")[2])
            elif now and before is False:
                log.info("USER_KINDS: %s is served now.", kind.name)
        await sleep(every)


_KOPF_RETRY = re.compile(r"^Request attempt #\d+(?:/\d+)? failed; will retry: (?P<what>\S+ \S+)"
                         r" -> APIForbiddenError\('(?P<message>(?:[^'\\]|\\.)*)'")


class QuietForbidden(logging.Filter):
    """Kopf logs each retry of a forbidden request with the API server's whole answer:
    told once per request, in one line that says what to apply; the retries go to DEBUG."""

    def __init__(self) -> None:
        super().__init__()
        self.told: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        match = _KOPF_RETRY.match(str(record.msg))
        if match is None:
            return True
        if match["what"] in self.told:
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
            return logging.getLogger().isEnabledFor(logging.DEBUG)
        self.told.add(match["what"])
        record.msg, record.args = "Forbidden: %s: %s; %s. Retrying until it is allowed.", (
            match["what"], match["message"], APPLY)
        return True
