"""The reconciler's safety rules before a deletion, with the API layer replaced.

These are unit tests of the reconciler's own logic (what it asks, in which order, and
what it refuses to do); the real API server is exercised by tests/integration.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import logging
import random
from collections.abc import Mapping
from typing import Any

import kopf
import orjson
import pytest

from evc_operator import informer, kube, lifecycle, status
from evc_operator import reconciler as reconciler_module
from evc_operator.claims import pvc_view
from evc_operator.reconciler import Deadlines, FreshPods, Indexes, Reconciler
from evc_operator.settings import Settings
from evc_operator.users import PodSnapshot, PodView, pod_view

T0 = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
NOW = T0 + datetime.timedelta(seconds=100)  # long past the 30 s expiry


def evc_body() -> dict[str, Any]:
    return {
        "apiVersion": "zalando.org/v1", "kind": "EphemeralVolumeClaim",
        "metadata": {"name": "scratch", "namespace": "jobs", "uid": "evc-uid",
                     "resourceVersion": "10", "generation": 1,
                     "creationTimestamp": "2026-01-01T00:00:00Z"},
        "spec": {"size": "1Gi"},
        "status": {"phase": "Pending", "conditions": [
            {"type": "PvcReady", "status": "True", "reason": "PvcReady"}]},
    }


def pod_body(name: str, phase: str = "Running") -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": "jobs",
                         "creationTimestamp": "2026-01-01T00:00:50Z"},
            "spec": {"volumes": [{"name": "v",
                                  "persistentVolumeClaim": {"claimName": "scratch"}}]},
            "status": {"phase": phase}}


OWN_PVC = pvc_view({"metadata": {
    "name": "scratch", "namespace": "jobs", "uid": "pvc-uid", "resourceVersion": "5",
    "ownerReferences": [{"uid": "evc-uid", "controller": True}],
    "annotations": {"evc.zalando.org/managed-labels": "[]"}},
    "spec": {"resources": {"requests": {"storage": "1Gi"}}}})


class FakeApi:
    """Records what the reconciler asks of the `kube` module."""

    def __init__(self, fresh_pods: list[dict[str, Any]] | Exception) -> None:
        self.fresh_pods = fresh_pods
        self.calls: list[str] = []

    async def list_pod_views(self, api: object, namespace: str) -> list[PodView]:
        self.calls.append("list_pods")
        if isinstance(self.fresh_pods, Exception):
            raise self.fresh_pods
        return [pod_view(pod) for pod in self.fresh_pods]

    async def patch_evc_status(self, api: object, namespace: str, name: str,
                               status: Mapping[str, Any], *,
                               resource_version: str | None = None) -> dict[str, Any]:
        self.calls.append(f"patch_status:{status['phase']}:{resource_version}")
        body = evc_body()
        body["metadata"]["resourceVersion"] = "11"
        body["status"] = dict(status)
        return body

    async def delete_evc(self, api: object, namespace: str, name: str, uid: str,
                         resource_version: str) -> None:
        self.calls.append(f"delete:{uid}:{resource_version}")

    async def post_event(self, api: object, namespace: str, name: str, uid: str,
                         event: Any, now: datetime.datetime) -> None:
        self.calls.append(f"event:{event.reason}")


def make(monkeypatch: pytest.MonkeyPatch, fake: FakeApi,
         indexed_pods: list[dict[str, Any]], *, complete: bool = True) -> Reconciler:
    for name in ("list_pod_views", "patch_evc_status", "delete_evc", "post_event"):
        monkeypatch.setattr(kube, name, getattr(fake, name))
    views = [pod_view(body) for body in indexed_pods]
    indexes = Indexes(pods_by_claim={("jobs", "scratch"): views},
                      pods_by_namespace={"jobs": views},
                      pvcs={("jobs", "scratch"): [OWN_PVC]})
    reconciler = Reconciler(object(), Settings(), kopf.OperatorSettings(), indexes,
                            clock=lambda: NOW)
    reconciler.pods_view_complete = complete
    reconciler.observe_evc(None, evc_body())
    return reconciler


def reconcile_now(reconciler: Reconciler, key: tuple[str, str]) -> None:
    asyncio.run(reconciler.reconcile(key))


def test_due_claim_is_rechecked_then_deleted_with_preconditions(
        monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeApi(fresh_pods=[])
    reconciler = make(monkeypatch, fake, indexed_pods=[])
    reconcile_now(reconciler, ("jobs", "scratch"))
    # One write: the delete itself, only if the claim is still the version decided on.
    assert fake.calls == ["list_pods", "delete:evc-uid:10", "event:Deleted"]
    assert ("jobs", "scratch") not in reconciler.evcs


def test_a_user_that_only_the_fresh_read_sees_stops_the_deletion(
        monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeApi(fresh_pods=[pod_body("newcomer")])
    reconciler = make(monkeypatch, fake, indexed_pods=[])
    reconcile_now(reconciler, ("jobs", "scratch"))
    assert not any(call.startswith("delete") for call in fake.calls)
    assert "patch_status:InUse:None" in fake.calls


def test_an_unreachable_api_server_stops_the_deletion(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeApi(fresh_pods=kube.ApiException(status=503, reason="Service Unavailable"))
    reconciler = make(monkeypatch, fake, indexed_pods=[])
    with pytest.raises(kube.ApiException):
        reconcile_now(reconciler, ("jobs", "scratch"))
    assert fake.calls == ["list_pods"]


def test_no_deletion_before_the_pod_view_is_complete(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeApi(fresh_pods=[])
    reconciler = make(monkeypatch, fake, indexed_pods=[], complete=False)
    reconcile_now(reconciler, ("jobs", "scratch"))
    assert fake.calls == []
    assert ("jobs", "scratch") in reconciler.deadlines  # it will look again


def test_an_active_user_in_the_index_means_no_api_read_and_no_deletion(
        monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeApi(fresh_pods=[])
    reconciler = make(monkeypatch, fake, indexed_pods=[pod_body("worker")])
    reconcile_now(reconciler, ("jobs", "scratch"))
    assert "list_pods" not in fake.calls
    assert not any(call.startswith("delete") for call in fake.calls)


def test_a_changed_claim_is_decided_again(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeApi(fresh_pods=[])

    async def conflict(*args: Any, **kwargs: Any) -> None:
        fake.calls.append("delete:conflict")
        raise kube.ApiException(status=409, reason="Conflict")

    reconciler = make(monkeypatch, fake, indexed_pods=[])
    monkeypatch.setattr(kube, "delete_evc", conflict)
    reconcile_now(reconciler, ("jobs", "scratch"))
    assert fake.calls == ["list_pods", "delete:conflict"]
    assert ("jobs", "scratch") in reconciler._dirty


def test_unchanged_state_writes_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeApi(fresh_pods=[])
    reconciler = make(monkeypatch, fake, indexed_pods=[pod_body("worker")])
    reconcile_now(reconciler, ("jobs", "scratch"))
    written = [call for call in fake.calls if call.startswith("patch_status")]
    assert len(written) == 1  # Pending -> InUse
    fake.calls.clear()
    reconcile_now(reconciler, ("jobs", "scratch"))  # same world, again
    assert fake.calls == []


def test_without_lifecycle_events_only_warnings_are_posted(
        monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeApi(fresh_pods=[])
    reconciler = make(monkeypatch, fake, indexed_pods=[])
    reconciler.settings = Settings(lifecycle_events=False)
    reconcile_now(reconciler, ("jobs", "scratch"))
    assert fake.calls == ["list_pods", "delete:evc-uid:10"]  # no Deleted Event
    reconciler = make(monkeypatch, fake, indexed_pods=[])
    reconciler.settings = Settings(lifecycle_events=False)
    fake.calls.clear()
    asyncio.run(reconciler._announce(reconciler.evcs[("jobs", "scratch")],
                                     status.Event("Warning", "InvalidSpec", "bad"),
                                     reconciler._logger(("jobs", "scratch"))))
    assert fake.calls == ["event:InvalidSpec"]


def test_the_pvc_showing_up_after_its_creation_costs_no_status_write(
        monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeApi(fresh_pods=[])
    reconciler = make(monkeypatch, fake, indexed_pods=[pod_body("worker")])
    reconcile_now(reconciler, ("jobs", "scratch"))
    said = {"type": "PvcReady", "status": "True", "reason": "PvcCreated",
            "message": "Created PersistentVolumeClaim scratch of 1Gi."}
    body = evc_body()
    body["metadata"]["resourceVersion"] = "20"
    body["status"] = {**reconciler.evcs[("jobs", "scratch")].status, "conditions": [
        *(c for c in reconciler.evcs[("jobs", "scratch")].status["conditions"]
          if c["type"] != "PvcReady"), {**said, "lastTransitionTime": "2026-01-01T00:00:01Z",
                                        "observedGeneration": 1}]}
    reconciler.observe_evc("MODIFIED", body)
    fake.calls.clear()
    reconcile_now(reconciler, ("jobs", "scratch"))  # the PVC is in the index now
    assert fake.calls == []
    kept = next(c for c in reconciler.evcs[("jobs", "scratch")].status["conditions"]
                if c["type"] == "PvcReady")
    assert (kept["reason"], kept["message"]) == (said["reason"], said["message"])


def test_a_status_rewritten_by_someone_else_cannot_make_a_deadline_earlier(
        monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeApi(fresh_pods=[pod_body("worker", "Succeeded")])
    reconciler = make(monkeypatch, fake, indexed_pods=[pod_body("worker")])
    reconcile_now(reconciler, ("jobs", "scratch"))
    assert "patch_status:InUse:None" in fake.calls
    # The user ends; someone else claims the claim has been idle since long ago.
    ended = [pod_view(pod_body("worker", "Succeeded"))]
    reconciler.indexes.pods_by_claim = {("jobs", "scratch"): ended}
    forged = evc_body()
    forged["metadata"]["resourceVersion"] = "12"
    forged["status"] = {"phase": "Idle", "unusedSince": "2026-01-01T00:00:01Z"}
    reconciler.observe_evc("MODIFIED", forged)
    fake.calls.clear()
    reconcile_now(reconciler, ("jobs", "scratch"))
    assert not any(call.startswith(("delete", "list_pods")) for call in fake.calls)
    assert "patch_status:Idle:None" in fake.calls
    assert reconciler.countdowns[("jobs", "scratch")].unused_since == NOW


def test_a_claim_in_a_namespace_not_yet_listed_waits(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeApi(fresh_pods=[])
    reconciler = make(monkeypatch, fake, indexed_pods=[])
    listed = False
    reconciler.indexes.synced = lambda namespace: listed
    reconcile_now(reconciler, ("jobs", "scratch"))
    assert fake.calls == []  # no PVC, no status, no deletion on a partial view
    listed = True
    reconciler.namespace_synced("jobs")
    assert ("jobs", "scratch") in reconciler._dirty
    reconcile_now(reconciler, ("jobs", "scratch"))
    assert fake.calls


def _at(seconds: float) -> datetime.datetime:
    return T0 + datetime.timedelta(seconds=seconds)


def test_deadlines_come_due_in_order_and_only_as_the_mapping_says() -> None:
    deadlines = Deadlines()
    deadlines[("ns", "c")] = _at(30)
    deadlines[("ns", "a")] = _at(10)
    deadlines[("ns", "b")] = _at(20)
    deadlines[("ns", "a")] = _at(25)  # moved later: its old entry must not fire
    deadlines[("ns", "b")] = _at(5)  # moved earlier
    deadlines.pop(("ns", "c"))  # forgotten
    assert deadlines.earliest() == _at(5)
    assert deadlines.pop_due(_at(10)) == [("ns", "b")]
    assert deadlines.pop_due(_at(24)) == []
    assert deadlines.earliest() == _at(25)
    assert deadlines.pop_due(_at(100)) == [("ns", "a")]
    assert deadlines.earliest() is None
    assert dict(deadlines) == {}


def test_deadlines_match_a_full_scan_whatever_the_order_of_changes() -> None:
    rng = random.Random(7)
    deadlines = Deadlines()
    truth: dict[tuple[str, str], datetime.datetime] = {}
    now = 0
    for _ in range(5000):
        key = ("ns", f"c{rng.randrange(50)}")
        roll = rng.random()
        if roll < 0.6:
            when = _at(now + rng.randrange(0, 40))
            deadlines[key] = truth[key] = when
        elif roll < 0.8:
            deadlines.pop(key, None)
            truth.pop(key, None)
        else:
            now += rng.randrange(0, 10)
            due = {k for k, when in truth.items() if when <= _at(now)}
            assert set(deadlines.pop_due(_at(now))) == due
            for k in due:
                del truth[k]
        assert dict(deadlines) == truth
        assert deadlines.earliest() == min(truth.values(), default=None)
    assert len(deadlines._heap) <= 2 * len(truth) + 65  # stale entries do not pile up


def test_the_scheduler_wakes_at_the_earliest_deadline(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [T0]
    reconciler = Reconciler(object(), Settings(), kopf.OperatorSettings(),
                            Indexes(pods_by_claim={}, pods_by_namespace={}, pvcs={}),
                            clock=lambda: clock[0])
    reconciled: list[tuple[str, str]] = []

    async def reconcile(key: tuple[str, str]) -> None:
        reconciled.append(key)

    monkeypatch.setattr(reconciler, "reconcile", reconcile)
    for name in ("late", "soon"):
        body = evc_body()
        body["metadata"]["name"] = name
        reconciler.observe_evc(None, body)
    reconciler._dirty.clear()  # only the deadlines should bring them up
    reconciler.deadlines[("jobs", "late")] = T0 + datetime.timedelta(seconds=0.5)
    reconciler.deadlines[("jobs", "soon")] = T0 + datetime.timedelta(seconds=0.05)

    async def scenario() -> None:
        task = asyncio.create_task(reconciler.run())
        await asyncio.sleep(0.01)
        assert reconciled == []
        clock[0] = T0 + datetime.timedelta(seconds=0.1)
        await asyncio.sleep(0.1)  # its timer, computed at T0, ran out meanwhile
        assert reconciled == [("jobs", "soon")]
        clock[0] = T0 + datetime.timedelta(seconds=1)
        await asyncio.sleep(0.5)
        assert reconciled == [("jobs", "soon"), ("jobs", "late")]
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(scenario())


class FakeLister:
    """Lists that finish only when the test says so; each returns the pods of its number,
    as a snapshot that stays live while `live` holds."""

    def __init__(self) -> None:
        self.started: list[str] = []
        self.release: dict[int, asyncio.Future[None]] = {}
        self.fail: set[int] = set()
        self.live = False

    async def __call__(self, namespace: str) -> PodSnapshot:
        self.started.append(namespace)
        number = len(self.started)
        self.release[number] = asyncio.get_running_loop().create_future()
        await self.release[number]
        if number in self.fail:
            raise kube.ApiException(status=503, reason="Service Unavailable")
        return PodSnapshot([pod_view({"metadata": {
            "name": f"list-{number}", "namespace": namespace,
            "creationTimestamp": "2026-01-01T00:00:00Z"}})], live=lambda: self.live)

    def finish(self, number: int) -> None:
        self.release[number].set_result(None)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime.datetime:
        return self.now

    def advance(self, seconds: float) -> datetime.datetime:
        self.now += datetime.timedelta(seconds=seconds)
        return self.now


async def _settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


def _names(result: Any) -> list[str]:
    return [pod.name for pod in result.pods]


FIVE_SECONDS = datetime.timedelta(seconds=5)


def test_requests_made_together_share_one_list() -> None:
    async def scenario() -> None:
        lister = FakeLister()
        fresh = FreshPods(lister, Clock())
        waiting = [asyncio.create_task(fresh.get("jobs", T0)) for _ in range(5)]
        await _settle()
        lister.finish(1)
        results = await asyncio.gather(*waiting)
        assert lister.started == ["jobs"]
        assert all(_names(result) == ["list-1"] for result in results)

    asyncio.run(scenario())


def test_a_request_decided_after_a_list_began_gets_the_next_list() -> None:
    async def scenario() -> None:
        lister = FakeLister()
        clock = Clock()
        fresh = FreshPods(lister, clock)
        first = asyncio.create_task(fresh.get("jobs", T0))
        await _settle()
        assert lister.started == ["jobs"]  # list 1 in flight
        decided = clock.advance(1)
        later = [asyncio.create_task(fresh.get("jobs", decided)) for _ in range(3)]
        await _settle()
        assert lister.started == ["jobs"]  # they wait; no list of their own yet
        lister.finish(1)
        assert _names(await first) == ["list-1"]
        await _settle()
        assert lister.started == ["jobs", "jobs"]  # one list for all three
        assert not any(task.done() for task in later)  # not served by list 1
        lister.finish(2)
        assert all(_names(result) == ["list-2"] for result in await asyncio.gather(*later))
        # Nothing in flight any more: the next request starts a list at once.
        again = asyncio.create_task(fresh.get("jobs", clock.advance(1)))
        await _settle()
        lister.finish(3)
        assert _names(await again) == ["list-3"]

    asyncio.run(scenario())


async def _proven_ahead(live: bool) -> tuple[FakeLister, Clock, FreshPods]:
    """A proof prefetched at T0 and finished (list 1), live or not."""
    lister = FakeLister()
    lister.live = live
    clock = Clock()
    fresh = FreshPods(lister, clock)
    fresh.prefetch("jobs", not_before=T0)
    await _settle()
    lister.finish(1)
    await _settle()
    return lister, clock, fresh


def test_a_live_proof_made_ahead_serves_the_deletions_at_the_deadline() -> None:
    async def scenario() -> None:
        lister, clock, fresh = await _proven_ahead(True)
        fresh.prefetch("jobs", not_before=T0)  # one young enough is there: no second
        decided = clock.advance(3)
        results = await asyncio.gather(*(fresh.get("jobs", decided, FIVE_SECONDS)
                                         for _ in range(3)))
        # The live index is proven current: it decides, not the proof's older copy.
        assert results == [None, None, None]
        assert lister.started == ["jobs"]

    asyncio.run(scenario())


def test_a_finished_proof_serves_while_one_for_a_later_deadline_is_in_flight() -> None:
    async def scenario() -> None:
        lister, clock, fresh = await _proven_ahead(True)
        fresh.prefetch("jobs", not_before=clock.advance(2))  # for a later deadline
        await _settle()
        assert lister.started == ["jobs", "jobs"]  # list 2 in flight
        decision = asyncio.create_task(fresh.get("jobs", clock.advance(1), FIVE_SECONDS))
        await _settle()
        assert decision.done()  # not held up by list 2
        assert decision.result() is None  # list 1 proves the live index current
        lister.finish(2)
        await _settle()

    asyncio.run(scenario())


@pytest.mark.parametrize(("live", "age"), [(False, 3), (True, 6)])
def test_a_proof_made_ahead_serves_nobody_once_it_has_a_gap_or_is_too_old(
        live: bool, age: float) -> None:
    async def scenario() -> None:
        lister, clock, fresh = await _proven_ahead(live)
        decision = asyncio.create_task(fresh.get("jobs", clock.advance(age), FIVE_SECONDS))
        await _settle()
        assert lister.started == ["jobs", "jobs"]  # a list begun after the decision
        lister.finish(2)
        assert _names(await decision) == ["list-2"]

    asyncio.run(scenario())


def test_a_prefetch_older_than_asked_queues_a_new_list() -> None:
    async def scenario() -> None:
        lister = FakeLister()
        clock = Clock()
        fresh = FreshPods(lister, clock)
        fresh.prefetch("jobs", not_before=T0)
        await _settle()
        fresh.prefetch("jobs", not_before=clock.advance(1))  # list 1 began too early
        await _settle()
        assert lister.started == ["jobs"]  # lists of a namespace run one at a time
        lister.finish(1)
        await _settle()
        assert lister.started == ["jobs", "jobs"]
        lister.finish(2)
        await _settle()
        fresh.forget_older_than(clock.advance(10))
        fresh.prefetch("jobs", not_before=T0)  # nothing held any more: a list again
        await _settle()
        assert lister.started == ["jobs", "jobs", "jobs"]
        fresh.close()

    asyncio.run(scenario())


def test_namespaces_are_listed_independently() -> None:
    async def scenario() -> None:
        lister = FakeLister()
        fresh = FreshPods(lister, Clock())
        jobs = asyncio.create_task(fresh.get("jobs", T0))
        await _settle()
        other = asyncio.create_task(fresh.get("other", T0))
        await _settle()
        assert lister.started == ["jobs", "other"]
        lister.finish(2)
        assert _names(await other) == ["list-2"]
        assert not jobs.done()
        lister.finish(1)
        assert _names(await jobs) == ["list-1"]

    asyncio.run(scenario())


def test_a_failed_list_fails_its_wave_only_and_a_cancelled_waiter_only_itself() -> None:
    async def scenario() -> None:
        lister = FakeLister()
        lister.fail.add(1)
        clock = Clock()
        fresh = FreshPods(lister, clock)
        failing = [asyncio.create_task(fresh.get("jobs", T0)) for _ in range(2)]
        await _settle()
        decided = clock.advance(1)
        later = [asyncio.create_task(fresh.get("jobs", decided)) for _ in range(2)]
        await _settle()
        later[0].cancel()
        lister.finish(1)
        for task in failing:
            with pytest.raises(kube.ApiException):
                await task
        await _settle()
        lister.finish(2)
        assert _names(await later[1]) == ["list-2"]
        assert later[0].cancelled()
        assert lister.started == ["jobs", "jobs"]

    asyncio.run(scenario())


def test_closing_cancels_lists_and_waiters() -> None:
    async def scenario() -> None:
        lister = FakeLister()
        clock = Clock()
        fresh = FreshPods(lister, clock)
        first = asyncio.create_task(fresh.get("jobs", T0))
        await _settle()
        queued = asyncio.create_task(fresh.get("jobs", clock.advance(1)))
        await _settle()
        fresh.close()
        await _settle()
        assert first.cancelled()
        assert queued.cancelled()

    asyncio.run(scenario())


def test_simultaneous_deletions_in_a_namespace_cost_one_list(
        monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeApi(fresh_pods=[])
    reconciler = make(monkeypatch, fake, indexed_pods=[])
    for name in ("other-1", "other-2"):
        body = evc_body()
        body["metadata"]["name"] = name
        body["metadata"]["uid"] = f"{name}-uid"
        reconciler.observe_evc(None, body)
        reconciler.indexes.pvcs[("jobs", name)] = [dataclasses.replace(  # type: ignore[index]
            OWN_PVC, name=name, controllers=(f"{name}-uid",))]

    async def scenario() -> None:
        await asyncio.gather(*(reconciler.reconcile(("jobs", name))
                               for name in ("scratch", "other-1", "other-2")))

    asyncio.run(scenario())
    assert fake.calls.count("list_pods") == 1
    assert len([call for call in fake.calls if call.startswith("delete")]) == 3


def test_the_informer_lookups_serve_mounting_pods_and_a_selector_claim(
        monkeypatch: pytest.MonkeyPatch) -> None:
    bodies = [pod_body("worker"), {**pod_body("bystander"), "spec": {}},
              {**pod_body("labelled"), "spec": {}}]
    bodies[2]["metadata"] = {**bodies[2]["metadata"], "labels": {"app": "batch"}}
    watched = informer.Watched(None, pods_changed=lambda *_: None,
                               pvc_changed=lambda _key: None, namespace_synced=lambda _ns: None)
    held = informer.Informer(None, "pods", "jobs", pod_view, lambda *_: None, lambda: None)
    watched.pods["jobs"], watched.claims["jobs"] = held, informer.NamespacePods()
    for body in bodies:  # what the informer does with each watch event
        view = pod_view(body)
        held.items[view.name] = view
        watched.claims["jobs"].update(view.name, None, view)
    lookups = informer.lookups(watched)
    mounting = lookups["pods_by_claim"].get(("jobs", "scratch"), ())
    in_namespace = lookups["pods_by_namespace"].get("jobs", ())
    assert [pod.name for pod in mounting] == ["worker"]
    assert [pod.name for pod in in_namespace] == ["worker", "bystander", "labelled"]
    assert mounting[0] is in_namespace[0]  # one view per pod

    fake = FakeApi(fresh_pods=[])
    reconciler = make(monkeypatch, fake, indexed_pods=[])
    reconciler.indexes = Indexes(pods_by_claim=lookups["pods_by_claim"],
                                 pods_by_namespace=lookups["pods_by_namespace"],
                                 pvcs=reconciler.indexes.pvcs)
    body = evc_body()
    body["metadata"]["resourceVersion"] = "12"
    body["spec"]["selector"] = {"matchLabels": {"app": "batch"}}
    reconciler.observe_evc("MODIFIED", body)
    reconcile_now(reconciler, ("jobs", "scratch"))
    assert fake.calls[0] == "patch_status:InUse:None"
    assert reconciler._seen_users[("jobs", "scratch")] == {"worker", "labelled"}


def test_a_pod_that_finished_after_the_proof_counts_as_finished(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # The proof made ahead saw the user running; it finished before the deadline, and the
    # live index knows. The proof's copy must not bring the user back to life.
    fake = FakeApi(fresh_pods=[])
    for name in ("patch_evc_status", "delete_evc", "post_event"):
        monkeypatch.setattr(kube, name, getattr(fake, name))
    clock = Clock()
    clock.now = T0 + datetime.timedelta(seconds=82)  # 3 s before the deadline

    async def current_pods(namespace: str) -> PodSnapshot:
        return PodSnapshot([pod_view(pod_body("worker", "Running"))], live=lambda: True)

    finished = [pod_view(pod_body("worker", "Succeeded"))]
    indexes = Indexes(pods_by_claim={("jobs", "scratch"): finished},
                      pods_by_namespace={"jobs": finished},
                      pvcs={("jobs", "scratch"): [OWN_PVC]}, current_pods=current_pods)
    reconciler = Reconciler(object(), Settings(), kopf.OperatorSettings(), indexes,
                            clock=clock)
    reconciler.pods_view_complete = True
    body = evc_body()
    body["status"] = {"phase": "Idle", "unusedSince": "2026-01-01T00:00:55Z"}
    reconciler.observe_evc(None, body)

    async def scenario() -> None:
        reconciler.fresh_pods.prefetch("jobs", not_before=clock.now)
        await _settle()
        clock.advance(4)  # past the deadline: 00:00:55 + 30 s grace
        await reconciler.reconcile(("jobs", "scratch"))

    asyncio.run(scenario())
    assert "delete:evc-uid:10" in fake.calls
    assert not any(call.startswith("patch_status:InUse") for call in fake.calls)


def test_a_coming_deletion_proves_its_namespace_fresh_ahead_of_its_deadline(
        monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeApi(fresh_pods=[])
    for name in ("patch_evc_status", "delete_evc", "post_event"):
        monkeypatch.setattr(kube, name, getattr(fake, name))
    clock = Clock()
    proofs: list[datetime.datetime] = []

    async def current_pods(namespace: str) -> PodSnapshot:
        proofs.append(clock.now)
        return PodSnapshot([], live=lambda: True)

    indexes = Indexes(pods_by_claim={}, pods_by_namespace={},
                      pvcs={("jobs", "scratch"): [OWN_PVC]}, current_pods=current_pods)
    reconciler = Reconciler(object(), Settings(), kopf.OperatorSettings(), indexes,
                            clock=clock)
    reconciler.pods_view_complete = True
    reconciler.observe_evc(None, evc_body())
    key = ("jobs", "scratch")
    deadline = T0 + datetime.timedelta(seconds=30)  # never used: the 30 s expiry

    async def scenario() -> None:
        clock.advance(10)
        await reconciler.reconcile(key)
        assert reconciler.proofs[key] == deadline - datetime.timedelta(seconds=3)
        reconciler._prefetch(reconciler.proofs.pop_due(clock.advance(16)), clock.now)
        await _settle()
        assert proofs == []  # not yet
        reconciler._prefetch(reconciler.proofs.pop_due(clock.advance(1)), clock.now)
        await _settle()
        assert proofs == [deadline - datetime.timedelta(seconds=3)]
        clock.now = deadline
        await reconciler.reconcile(key)

    asyncio.run(scenario())
    assert proofs == [deadline - datetime.timedelta(seconds=3)]  # none at the deadline
    assert "delete:evc-uid:11" in fake.calls


def test_countdowns_are_logged_nearest_first_and_the_rest_summed_up(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    fake = FakeApi(fresh_pods=[])
    reconciler = make(monkeypatch, fake, indexed_pods=[])
    template = lifecycle.decide(reconciler.evcs[("jobs", "scratch")].claim, [], T0,
                                dry_run=False)
    assert template.deletes_at is not None
    for number in range(reconciler_module.COUNTDOWN_LOG_LINES + 7):
        key = ("jobs", f"claim-{number:03}")
        reconciler.evcs[key] = dataclasses.replace(reconciler.evcs[("jobs", "scratch")],
                                                   name=key[1])
        reconciler.bodies[key] = "{}"
        reconciler.countdowns[key] = dataclasses.replace(
            template, deletes_at=NOW + datetime.timedelta(seconds=1000 - number))

    with caplog.at_level(logging.INFO):
        reconciler.tell_countdowns(NOW)
    lines = [r.getMessage() for r in caplog.records if "countdown:" in r.getMessage()]
    assert len(lines) == reconciler_module.COUNTDOWN_LOG_LINES
    # The nearest deadlines are those of the claims numbered last.
    told = {r.__dict__["k8s_ref"]["name"] for r in caplog.records
            if "countdown:" in r.getMessage()}
    assert told == {f"claim-{number:03}" for number in range(7, 57)}
    summary = [r.getMessage() for r in caplog.records if "more countdowns" in r.getMessage()]
    assert summary[0] == ("7 more countdowns run; the last of them deletes at "
                          f"{status.timestamp(NOW + datetime.timedelta(seconds=1000))}.")


def test_an_event_that_cannot_be_posted_never_fails_the_work_it_tells_of(
        monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeApi(fresh_pods=[])
    reconciler = make(monkeypatch, fake, indexed_pods=[pod_body("worker")])

    async def refused(*_: Any) -> None:
        fake.calls.append("event refused")
        raise ConnectionResetError("the API server went away")

    monkeypatch.setattr(kube, "post_event", refused)
    reconcile_now(reconciler, ("jobs", "scratch"))  # does not raise
    assert "patch_status:InUse:None" in fake.calls
    assert "event refused" in fake.calls


def test_what_is_kept_of_an_evc_is_json_without_the_parts_no_decision_reads() -> None:
    body = evc_body()
    body["metadata"]["managedFields"] = [{"manager": "evc-operator", "fieldsV1": {}}]
    body["metadata"]["annotations"] = {
        "kubectl.kubernetes.io/last-applied-configuration": '{"a copy": "of the claim"}',
        "evc.zalando.org/keep": "true"}
    kept = orjson.loads(reconciler_module._slim(body))
    assert "status" not in kept
    assert "managedFields" not in kept["metadata"]
    assert kept["metadata"]["annotations"] == {"evc.zalando.org/keep": "true"}
    assert kept["spec"] == body["spec"]
    assert kept["metadata"]["uid"] == body["metadata"]["uid"]


def test_the_echo_of_its_own_status_write_is_not_looked_at_again(
        monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeApi(fresh_pods=[])
    reconciler = make(monkeypatch, fake, indexed_pods=[pod_body("worker")])
    key = ("jobs", "scratch")
    reconciler._dirty.clear()
    reconcile_now(reconciler, key)
    assert "patch_status:InUse:None" in fake.calls  # the patch answered resourceVersion 11
    for version, looked_at in (("10", False), ("11", False), ("12", True)):
        body = evc_body()
        body["metadata"]["resourceVersion"] = version
        reconciler.observe_evc("MODIFIED", body)
        assert (key in reconciler._dirty) is looked_at, version
        assert reconciler.evcs[key].resource_version == ("12" if looked_at else "11")
