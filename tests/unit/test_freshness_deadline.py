"""No deletion rests on a view that misses a user created before the claim's deadline.

A scripted API server (`ModelApi`) whose state is a function of the test's clock, and
informers whose watch is unbroken but delivers each change late: a pod (or a Job) that
mounts the claim is created shortly before the deadline, and its watch event reaches the
informer only after the decision. The view `Freshness` gives a deletion decided at (or
just after) the deadline must still hold that user.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import functools
from collections.abc import AsyncIterator, Callable
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from evc_operator import freshness, informer
from evc_operator.users import PodView, pod_view
from evc_operator.workloads import KINDS, collection, workload_view
from tests.unit.support import T0, Clock, settle

DEADLINE = T0 + datetime.timedelta(seconds=60)
JOBS = collection("Job")
MANY = freshness.LIST_OUTRIGHT + 10  # pods proven by the consistent read and a watch


def _rv(moment: datetime.datetime) -> int:
    """The cluster writes once a millisecond elsewhere: the global resourceVersion moves on
    whether or not this namespace changes."""
    return 1000 + round((moment - T0).total_seconds() * 1000)


def _body(kind: str, name: str, claim: str, moment: datetime.datetime) -> dict[str, Any]:
    volumes = [{"name": "v", "persistentVolumeClaim": {"claimName": claim}}]
    metadata = {"name": name, "namespace": "jobs", "resourceVersion": str(_rv(moment)),
                "creationTimestamp": "2026-01-01T00:00:00Z"}
    if kind == "pods":
        return {"metadata": metadata, "spec": {"volumes": volumes},
                "status": {"phase": "Running"}}
    return {"metadata": metadata, "spec": {"template": {"spec": {"volumes": volumes}}},
            "status": {}}


@dataclasses.dataclass(frozen=True)
class Change:
    kind: str  # the collection
    body: dict[str, Any]
    at: datetime.datetime  # committed
    delivered: datetime.datetime  # reaches the informer's (unbroken) watch


class ModelApi:
    """An informer.Source: what is committed by the clock's time is what the API server
    serves; a watch replays the changes after its resourceVersion, then a bookmark."""

    def __init__(self, clock: Clock, changes: list[Change],
                 held: dict[str, list[dict[str, Any]]]) -> None:
        self.clock = clock
        self.changes = sorted(changes, key=lambda change: change.at)
        self.held = held  # what each kind held at T0

    def _committed(self, kind: str) -> list[Change]:
        return [change for change in self.changes
                if change.kind == kind and change.at <= self.clock()]

    def state(self, kind: str) -> list[dict[str, Any]]:
        return [*self.held.get(kind, []),
                *(change.body for change in self._committed(kind))]

    async def list_all(self, kind: str, namespace: str,
                       each: Callable[[dict[str, Any]], None]) -> str:
        for item in self.state(kind):
            each(item)
        return str(_rv(self.clock()))

    async def watch(self, kind: str, namespace: str, resource_version: str,
                    seconds: int = 300) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        for change in self._committed(kind):
            if _rv(change.at) > int(resource_version):
                yield "ADDED", change.body
        yield "BOOKMARK", {"metadata": {"resourceVersion": str(_rv(self.clock()))}}

    async def collection_version(self, kind: str, namespace: str) -> int:
        return _rv(self.clock())

    async def list_pods(self, namespace: str) -> list[PodView]:
        return [pod_view(item) for item in self.state("pods")]


def _project(kind: str) -> Callable[[Any], PodView]:
    if kind == "pods":
        return pod_view
    (name,) = [name for name in KINDS if collection(name) == kind]
    return functools.partial(workload_view, name)


def _watched(api: ModelApi) -> informer.Watched:
    """Informers listed at T0, synced, their watches unbroken from then on."""
    watched = informer.Watched(api, pods_changed=lambda ns, c, change: None,
                               pvc_changed=lambda key: None, namespace_synced=lambda ns: None)
    users = []
    for kind in ("pods", *(collection(name) for name in KINDS)):
        held = informer.Informer(api, kind, "jobs", _project(kind), lambda *_: None,
                                 lambda: None)
        held.items = {item["metadata"]["name"]: held.project(item)
                      for item in api.held.get(kind, [])}
        held.version, held.synced = _rv(T0), True
        users.append(held)
    watched.pods["jobs"], watched.workloads["jobs"] = users[0], users[1:]
    return watched


def _deliver(watched: informer.Watched, changes: list[Change], now: datetime.datetime) -> None:
    """What each informer's watch has applied by `now` (in order, as a watch does)."""
    for held in watched.users("jobs"):
        for change in sorted(changes, key=lambda change: change.at):
            if change.kind != held.kind or change.delivered > now:
                break
            version = _rv(change.at)
            if version > held.version:
                held.items[change.body["metadata"]["name"]] = held.project(change.body)
                held.version = version


async def _users_at_decision(changes: list[Change], decided_at: datetime.datetime,
                             bulk: int) -> set[str]:
    """Run the scheduler's calls in time order; the names of the claim's users in the
    view the deletion decided at `decided_at` would be checked against."""
    clock = Clock()
    held = {"pods": [_body("pods", f"other-{n}", "y", T0) for n in range(bulk)]}
    api = ModelApi(clock, changes, held)
    watched = _watched(api)
    fresh = freshness.Freshness(watched.synced, functools.partial(
        freshness.prove_current, watched), clock)
    fresh.pods_view_complete = True
    # PVCs are not in play: the namespace counts as listed.
    watched.pvcs["jobs"] = informer.Informer(api, "persistentvolumeclaims", "jobs",
                                             lambda body: body, lambda *_: None, lambda: None)
    watched.pvcs["jobs"].synced = True
    steps = sorted([(fresh.proof_due(DEADLINE), 0), (decided_at, 2),
                    *((change.at, 1) for change in changes),
                    *((change.delivered, 1) for change in changes)])
    view: freshness.PodList | None = None
    for moment, step in steps:
        clock.now = max(clock.now, moment)
        _deliver(watched, changes, clock.now)
        if step == 0:
            fresh.prepare("jobs", DEADLINE)
        elif step == 2:
            view = await fresh.for_deletion("jobs", DEADLINE)
            break
        await settle()
    fresh.close()
    if view is not None:
        return {user.name for user in view.by_claim.get("x", ())}
    return {user.name for user in watched.pods_in("jobs") if "x" in user.claims}


def _created(kind: str, before: float, delay: float) -> Change:
    at = DEADLINE - datetime.timedelta(seconds=before)
    return Change(kind, _body(kind, "newcomer", "x", at), at,
                  at + datetime.timedelta(seconds=delay))


def _user_name(kind: str) -> str:
    return "newcomer" if kind == "pods" else "Job/newcomer"


def test_a_pod_created_before_the_deadline_that_the_watch_has_not_delivered_counts() -> None:
    # The watch is unbroken, but the pod's event is still on its way at the decision.
    change = _created("pods", before=0.5, delay=1.0)
    assert asyncio.run(_users_at_decision([change], DEADLINE, bulk=0)) == {"newcomer"}


def test_a_job_created_before_the_deadline_that_the_watch_has_not_delivered_counts() -> None:
    change = _created(JOBS, before=0.2, delay=0.5)
    assert asyncio.run(_users_at_decision([change], DEADLINE, bulk=0)) == {"Job/newcomer"}


def test_in_a_namespace_of_many_pods_too() -> None:
    change = _created("pods", before=0.01, delay=0.02)
    users = asyncio.run(_users_at_decision([change], DEADLINE, bulk=MANY))
    assert users == {"newcomer"}


@settings(max_examples=150, deadline=None)
@given(kind=st.sampled_from(["pods", JOBS]),
       before=st.floats(min_value=0, max_value=6),
       delay=st.floats(min_value=0, max_value=3),
       decided_after=st.floats(min_value=0, max_value=0.999),
       bulk=st.sampled_from([0, MANY]))
def test_no_deletion_is_decided_without_a_user_created_by_the_deadline(
        kind: str, before: float, delay: float, decided_after: float, bulk: int) -> None:
    change = _created(kind, before, delay)
    decided_at = DEADLINE + datetime.timedelta(seconds=decided_after)
    users = asyncio.run(_users_at_decision([change], decided_at, bulk))
    assert _user_name(kind) in users
