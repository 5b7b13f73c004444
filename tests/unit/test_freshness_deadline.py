"""No deletion rests on a view that misses a user created before the claim's deadline.

A scripted API server (`ModelApi`) whose state is a function of the test's clock, and
informers whose watch is unbroken but delivers each change late: a pod (or a Job) that
mounts the claim is created shortly before the deadline, and its watch event reaches the
informer only after the decision; or it is deleted again, before the deadline or after,
its deletion reaching the informer late too. The view `Freshness` gives a deletion
decided at (or just after) the deadline must still hold that user, or the informer must
have told its departure by then (the claim keeps the users that left: tracked.py).
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import functools
import math
from collections.abc import AsyncIterator, Callable
from typing import Any, cast

from hypothesis import example, given, settings
from hypothesis import strategies as st

from evc_operator import freshness, informer, proof
from evc_operator import watched as watching
from evc_operator.users import PodView, pod_view
from evc_operator.workloads import KINDS, collection, workload_view
from tests.unit.support import T0, Clock, settle

DEADLINE = T0 + datetime.timedelta(seconds=60)
JOBS = collection("Job")
MANY = 210  # pods in a namespace (once more than a proof would list)


def _rv(moment: datetime.datetime) -> int:
    """The resourceVersion of the state as of `moment`: the cluster writes once a
    millisecond elsewhere, so it moves on whether or not this namespace changes. Rounded
    down, and a change's rounded up (`_change_rv`): a state at a version holds every change
    at or below it, as the API server's does (rounded to the nearest, a bookmark at 59.9999
    s claimed a change at 60.0 that its watch cache had not yet seen)."""
    return 1000 + math.floor((moment - T0).total_seconds() * 1000)


def _change_rv(moment: datetime.datetime) -> int:
    """The resourceVersion of a change committed at `moment`."""
    return 1000 + math.ceil((moment - T0).total_seconds() * 1000)


def _body(kind: str, name: str, claim: str, moment: datetime.datetime) -> dict[str, Any]:
    volumes = [{"name": "v", "persistentVolumeClaim": {"claimName": claim}}]
    metadata = {"name": name, "namespace": "jobs", "resourceVersion": str(_change_rv(moment)),
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
    event: str = "ADDED"  # or "DELETED"


class ModelApi:
    """An informer.Source: what is committed by the clock's time is what the API server
    serves; a watch replays the changes after its resourceVersion, then a bookmark,
    `bookmark_after` seconds (of the test's clock) after it was opened, both as the
    watch cache has them, `cache_lag` seconds behind."""

    def __init__(self, clock: Clock, changes: list[Change],
                 held: dict[str, list[dict[str, Any]]], bookmark_after: float = 0,
                 cache_lag: float = 0) -> None:
        self.clock = clock
        self.changes = sorted(changes, key=lambda change: change.at)
        self.held = held  # what each kind held at T0
        self.bookmark_after = datetime.timedelta(seconds=bookmark_after)
        self.cache_lag = datetime.timedelta(seconds=cache_lag)
        self._sleeping: list[tuple[datetime.datetime, asyncio.Future[None]]] = []

    def tick(self) -> None:
        """The test's clock moved on: the watches whose moment came go on."""
        for moment, sleeping in self._sleeping:
            if moment <= self.clock() and not sleeping.done():
                sleeping.set_result(None)
        self._sleeping = [(moment, sleeping) for moment, sleeping in self._sleeping
                          if not sleeping.done()]

    async def until(self, moment: datetime.datetime) -> None:
        while self.clock() < moment:
            sleeping = asyncio.get_running_loop().create_future()
            self._sleeping.append((moment, sleeping))
            await sleeping

    def _committed(self, kind: str, lag: datetime.timedelta = datetime.timedelta(0),
                   ) -> list[Change]:
        return [change for change in self.changes
                if change.kind == kind and change.at <= self.clock() - lag]

    def state(self, kind: str) -> list[dict[str, Any]]:
        objects = {item["metadata"]["name"]: item for item in self.held.get(kind, [])}
        for change in self._committed(kind):
            if change.event == "DELETED":
                objects.pop(change.body["metadata"]["name"], None)
            else:
                objects[change.body["metadata"]["name"]] = change.body
        return list(objects.values())

    async def list_all(self, kind: str, namespace: str,
                       each: Callable[[dict[str, Any]], None]) -> str:
        for item in self.state(kind):
            each(item)
        return str(_rv(self.clock()))

    async def watch(self, kind: str, namespace: str, resource_version: str,
                    seconds: int = 300) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        await self.until(self.clock() + self.bookmark_after)
        # What the watch cache has seen: it may lag behind the consistent reads.
        for change in self._committed(kind, self.cache_lag):
            if _change_rv(change.at) > int(resource_version):
                yield change.event, change.body
        seen = max(_rv(self.clock() - self.cache_lag), int(resource_version))
        yield "BOOKMARK", {"metadata": {"resourceVersion": str(seen)}}

    async def collection_version(self, kind: str, namespace: str) -> int:
        return _rv(self.clock())

    async def list_pods(self, namespace: str) -> tuple[list[PodView], int]:
        return [pod_view(item) for item in self.state("pods")], _rv(self.clock())


def _project(kind: str) -> Callable[[Any], PodView]:
    if kind == "pods":
        return pod_view
    (name,) = [name for name in KINDS if collection(name) == kind]
    return functools.partial(workload_view, name)


def _watched(api: ModelApi) -> watching.Watched:
    """Informers listed at T0, synced, their watches unbroken from then on."""
    watched = watching.Watched(api, pods_changed=lambda ns, c, change: None,
                               pvc_changed=lambda key: None, namespace_synced=lambda ns: None)
    users = []
    for kind in ("pods", *(collection(name) for name in KINDS)):
        held = informer.Informer(api, kind, "jobs", _project(kind), lambda *_: None,
                                 lambda: None)
        held.items = {item["metadata"]["name"]: held.project(item)
                      for item in api.held.get(kind, [])}
        held.version, held.synced = _rv(T0), True
        users.append(held)
    watched.pods["jobs"] = users[0]
    watched.workloads["jobs"] = [held for held in users[1:]]
    return watched


def _deliver(watched: watching.Watched, changes: list[Change], now: datetime.datetime,
             departed: set[str]) -> None:
    """What each informer's watch has applied by `now` (in order, as a watch does); the
    users whose deletion it told go to `departed`, as the claim keeps them."""
    for held in cast(list[informer.Informer[PodView]], watched.users("jobs")):
        for change in sorted(changes, key=lambda change: change.at):
            if change.kind != held.kind or change.delivered > now:
                break
            version = _change_rv(change.at)
            if version > held.version:
                name = change.body["metadata"]["name"]
                if change.event == "DELETED":
                    departed.add(held.items.pop(name).name)
                else:
                    held.items[name] = held.project(change.body)
                held.version = version


async def _users_at_decision(changes: list[Change], decided_at: datetime.datetime,
                             bulk: int, *, ahead: float = 0, bookmark_after: float = 0,
                             cache_lag: float = 0) -> set[str]:
    """Run the scheduler's calls in time order; the names of the claim's users in the
    view the deletion decided at `decided_at` would be checked against, and of those
    whose deletion the informers told by then. With `ahead`, the short watches are
    opened that long before the deadline (barrier.py)."""
    departed: set[str] = set()
    clock = Clock()
    held = {"pods": [_body("pods", f"other-{n}", "y", T0) for n in range(bulk)]}
    api = ModelApi(clock, changes, held, bookmark_after, cache_lag)
    watched = _watched(api)
    prover = proof.Prover(watched, clock=lambda: (clock.now - T0).total_seconds(),
                          sleep=lambda seconds: api.until(clock.now + datetime.timedelta(
                              seconds=seconds)))
    fresh = freshness.Freshness(watched.synced, prover, clock, prover.anticipate)
    fresh.pods_view_complete = True
    # PVCs are not in play: the namespace counts as listed.
    watched.pvcs["jobs"] = informer.Informer(api, "persistentvolumeclaims", "jobs",
                                             lambda body: body, lambda *_: None, lambda: None)
    watched.pvcs["jobs"].synced = True
    steps = sorted([(fresh.proof_due(DEADLINE), 0), (decided_at, 2),
                    *((change.at, 1) for change in changes),
                    *((change.delivered, 1) for change in changes)])
    if ahead:
        steps = sorted([*steps, (DEADLINE - datetime.timedelta(seconds=ahead), 3)])
    view: freshness.PodList | None = None
    for moment, step in steps:
        clock.now = max(clock.now, moment)
        _deliver(watched, changes, clock.now, departed)
        api.tick()
        if step == 0:
            fresh.prepare("jobs", DEADLINE)
        elif step == 3:
            fresh.anticipate("jobs")
        elif step == 2:
            deciding = asyncio.ensure_future(fresh.for_deletion("jobs", DEADLINE))
            for _ in range(1000):  # time goes on while the view is proven
                await settle()
                if deciding.done():
                    break
                clock.advance(0.01)
                _deliver(watched, changes, clock.now, departed)
                api.tick()
            view = await deciding
            break
        await settle()
    fresh.close()
    await prover.close()
    if view is not None:
        return {user.name for user in view.by_claim.get("x", ())} | departed
    return {user.name for user in watched.pods_in("jobs") if "x" in user.claims} | departed


def _created(kind: str, before: float, delay: float) -> Change:
    at = DEADLINE - datetime.timedelta(seconds=before)
    return Change(kind, _body(kind, "newcomer", "x", at), at,
                  at + datetime.timedelta(seconds=delay))


def _deleted(created: Change, after: float, delay: float) -> Change:
    """Its deletion `after` seconds on (a millisecond at least: a write of its own, at a
    resourceVersion of its own), told by the same watch `delay` seconds late (and never
    before its creation: a watch's events come in order)."""
    at = created.at + datetime.timedelta(seconds=max(after, 0.001))
    return Change(created.kind, _body(created.kind, "newcomer", "x", at), at,
                  max(created.delivered, at + datetime.timedelta(seconds=delay)), "DELETED")


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


def test_a_watch_opened_ahead_whose_bookmark_comes_after_the_read_proves_it() -> None:
    # The short watch opened a second ahead brings the newcomer (created after it was
    # opened, before the deadline) with its bookmark; the informer's watch lags still.
    change = _created("pods", before=0.3, delay=5.0)
    users = asyncio.run(_users_at_decision([change], DEADLINE, bulk=MANY, ahead=1.0,
                                           bookmark_after=1.5))
    assert users == {"newcomer"}


def test_a_pod_created_and_deleted_while_the_watch_lagged_counts() -> None:
    # Came and went before the deadline; neither change reached the informer by then.
    created = _created("pods", before=0.5, delay=1.0)
    changes = [created, _deleted(created, after=0.2, delay=1.0)]
    assert "newcomer" in asyncio.run(_users_at_decision(changes, DEADLINE, bulk=MANY))


def test_a_job_created_and_deleted_while_the_watch_lagged_counts() -> None:
    created = _created(JOBS, before=0.3, delay=0.8)
    changes = [created, _deleted(created, after=0.1, delay=0.8)]
    assert "Job/newcomer" in asyncio.run(_users_at_decision(changes, DEADLINE, bulk=0))


@settings(max_examples=300, deadline=None)
# A pod created at the deadline itself, read at that moment, its watch cache a second behind
# (found by CI: the model's bookmark claimed it by rounding, not the operator).
@example(kind="pods", before=0.0, delay=1.0, decided_after=0.139934432731442, bulk=MANY,
         ahead=0, bookmark_after=0.9921875, cache_lag=1.0, deleted_after=None)
# A pod created and deleted a second before the deadline, its watch a second late, the
# watch cache 0.2 s behind the proof's read: the first short watch's bookmark falls short,
# and a full list then lacked the pod (found by this model: a proof opens another).
@example(kind="pods", before=1.0, delay=1.0, decided_after=0.0, bulk=0, ahead=0,
         bookmark_after=0.0, cache_lag=0.2, deleted_after=0.0)
@given(kind=st.sampled_from(["pods", JOBS]),
       before=st.floats(min_value=0, max_value=6),
       delay=st.floats(min_value=0, max_value=3),
       decided_after=st.floats(min_value=0, max_value=0.999),
       bulk=st.sampled_from([0, MANY]),
       ahead=st.sampled_from([0, 0.5, 1.0, 1.5]),
       bookmark_after=st.floats(min_value=0, max_value=2.5),
       cache_lag=st.sampled_from([0, 0.2, 1.0]),
       deleted_after=st.none() | st.floats(min_value=0, max_value=6))
def test_no_deletion_is_decided_without_a_user_created_by_the_deadline(
        kind: str, before: float, delay: float, decided_after: float, bulk: int,
        ahead: float, bookmark_after: float, cache_lag: float,
        deleted_after: float | None) -> None:
    # The user may be deleted again at any time, before the deadline or after (then
    # perhaps after the decision, or still unseen when it was decided).
    change = _created(kind, before, delay)
    changes = [change]
    if deleted_after is not None:
        changes.append(_deleted(change, deleted_after, delay))
    decided_at = DEADLINE + datetime.timedelta(seconds=decided_after)
    users = asyncio.run(_users_at_decision(changes, decided_at, bulk, ahead=ahead,
                                           bookmark_after=bookmark_after,
                                           cache_lag=cache_lag))
    assert _user_name(kind) in users
