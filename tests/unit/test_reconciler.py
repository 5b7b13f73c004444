"""The scheduler and the per-claim reconcile: the safety rules before a deletion, with
fakes of the API and the pod index (seams.py) in place of the cluster.

These are unit tests of the operator's own logic (what it asks, in which order, and
what it refuses to do); the real API server is exercised by tests/integration.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import logging
from collections.abc import Callable, Mapping
from typing import Any, cast

import kopf
import orjson
import pytest

from evc_operator import countdowns, errors, evc, informer, lifecycle, status
from evc_operator.claims import PvcView, pvc_view
from evc_operator.freshness import Lister, PodSnapshot
from evc_operator.scheduler import Scheduler
from evc_operator.settings import Settings
from evc_operator.timestamps import format_time
from evc_operator.users import PodView, pod_view
from tests.unit.support import T0, Clock, settle

Key = tuple[str, str]
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
    """Records what the reconcile asks of the API (seams.ClaimApi), and lists pods."""

    def __init__(self, fresh_pods: list[dict[str, Any]] | Exception) -> None:
        self.fresh_pods = fresh_pods
        self.calls: list[str] = []
        self.delete_error: Exception | None = None
        self.event_error: Exception | None = None

    async def list_pods(self, namespace: str) -> PodSnapshot:
        self.calls.append("list_pods")
        if isinstance(self.fresh_pods, Exception):
            raise self.fresh_pods
        return PodSnapshot([pod_view(pod) for pod in self.fresh_pods])

    async def patch_evc_status(self, namespace: str, name: str,
                               status: Mapping[str, Any]) -> dict[str, Any]:
        self.calls.append(f"patch_status:{status['phase']}")
        body = evc_body()
        body["metadata"]["resourceVersion"] = "11"
        body["status"] = dict(status)
        return body

    async def delete_evc(self, namespace: str, name: str, uid: str,
                         resource_version: str) -> None:
        if self.delete_error is not None:
            self.calls.append("delete:conflict")
            raise self.delete_error
        self.calls.append(f"delete:{uid}:{resource_version}")

    async def post_event(self, namespace: str, name: str, uid: str, event: status.Event,
                         now: datetime.datetime) -> None:
        if self.event_error is not None:
            self.calls.append("event refused")
            raise self.event_error
        self.calls.append(f"event:{event.reason}")

    async def create_pvc(self, body: Mapping[str, Any]) -> object:
        self.calls.append("create_pvc")
        return body

    async def read_pvc(self, namespace: str, name: str) -> dict[str, Any] | None:
        self.calls.append("read_pvc")
        return None

    async def patch_pvc(self, namespace: str, name: str, uid: str, resource_version: str,
                        patch: Mapping[str, Any]) -> None:
        self.calls.append("patch_pvc")


@dataclasses.dataclass
class FakeIndex:
    """The pod index (seams.PodIndex) as plain maps."""

    by_claim: dict[Key, list[PodView]] = dataclasses.field(default_factory=dict)
    in_namespace: dict[str, list[PodView]] = dataclasses.field(default_factory=dict)
    pvcs: dict[Key, PvcView] = dataclasses.field(default_factory=dict)
    listed: Callable[[str], bool] = lambda _namespace: True
    watched: informer.Watched | None = None  # if set, the pods are the informers'

    def pods_of_claim(self, key: Key) -> list[PodView]:
        if self.watched is not None:
            return self.watched.pods_of_claim(key)
        return self.by_claim.get(key, [])

    def pods_in(self, namespace: str) -> list[PodView]:
        if self.watched is not None:
            return self.watched.pods_in(namespace)
        return self.in_namespace.get(namespace, [])

    def pvc(self, key: Key) -> PvcView | None:
        return self.pvcs.get(key)

    def synced(self, namespace: str) -> bool:
        return self.listed(namespace)

    def all_synced(self) -> bool:
        return True


def make(fake: FakeApi, indexed_pods: list[dict[str, Any]], *, complete: bool = True,
         settings: Settings | None = None, lister: Lister | None = None,
         clock: Callable[[], datetime.datetime] = lambda: NOW,
         watched: informer.Watched | None = None,
         body: dict[str, Any] | None = None) -> tuple[Scheduler, FakeIndex]:
    views = [pod_view(body) for body in indexed_pods]
    index = FakeIndex(by_claim={("jobs", "scratch"): views}, in_namespace={"jobs": views},
                      pvcs={("jobs", "scratch"): OWN_PVC}, watched=watched)
    scheduler = Scheduler(fake, settings or Settings(), kopf.OperatorSettings(), index,
                          lister or fake.list_pods, clock=clock)
    scheduler.pods_view_complete = complete
    scheduler.observe_evc(None, body or evc_body())
    return scheduler, index


def reconcile_now(scheduler: Scheduler, key: Key) -> None:
    asyncio.run(scheduler.reconcile(key))


def drain(scheduler: Scheduler) -> None:
    """Empty the work queue, as if every claim waiting in it had been looked at."""
    for key, _ in scheduler.queue.take():
        scheduler.queue.done(key)


def view_of(scheduler: Scheduler, key: Key) -> evc.EvcView:
    claim = scheduler.claims.get(key)
    assert claim is not None
    return claim.view


def test_due_claim_is_rechecked_then_deleted_with_preconditions() -> None:
    fake = FakeApi(fresh_pods=[])
    reconciler, _index = make(fake, indexed_pods=[])
    reconcile_now(reconciler, ("jobs", "scratch"))
    # One write: the delete itself, only if the claim is still the version decided on.
    assert fake.calls == ["list_pods", "delete:evc-uid:10", "event:Deleted"]
    assert ("jobs", "scratch") not in reconciler.claims


def test_a_user_that_only_the_fresh_read_sees_stops_the_deletion() -> None:
    fake = FakeApi(fresh_pods=[pod_body("newcomer")])
    reconciler, _index = make(fake, indexed_pods=[])
    reconcile_now(reconciler, ("jobs", "scratch"))
    assert not any(call.startswith("delete") for call in fake.calls)
    assert "patch_status:InUse" in fake.calls


def test_an_unreachable_api_server_stops_the_deletion() -> None:
    fake = FakeApi(fresh_pods=errors.ApiException(status=503, reason="Service Unavailable"))
    reconciler, _index = make(fake, indexed_pods=[])
    with pytest.raises(errors.ApiException):
        reconcile_now(reconciler, ("jobs", "scratch"))
    assert fake.calls == ["list_pods"]


def test_no_deletion_before_the_pod_view_is_complete() -> None:
    fake = FakeApi(fresh_pods=[])
    reconciler, _index = make(fake, indexed_pods=[], complete=False)
    reconcile_now(reconciler, ("jobs", "scratch"))
    assert fake.calls == []
    assert ("jobs", "scratch") in reconciler.queue.later  # it will look again


def test_an_active_user_in_the_index_means_no_api_read_and_no_deletion() -> None:
    fake = FakeApi(fresh_pods=[])
    reconciler, _index = make(fake, indexed_pods=[pod_body("worker")])
    reconcile_now(reconciler, ("jobs", "scratch"))
    assert "list_pods" not in fake.calls
    assert not any(call.startswith("delete") for call in fake.calls)


def test_a_changed_claim_is_decided_again() -> None:
    fake = FakeApi(fresh_pods=[])
    fake.delete_error = errors.Conflict("Conflict")
    reconciler, _index = make(fake, indexed_pods=[])
    drain(reconciler)
    reconcile_now(reconciler, ("jobs", "scratch"))
    assert fake.calls == ["list_pods", "delete:conflict"]
    assert reconciler.queue.waiting(("jobs", "scratch"))


def test_unchanged_state_writes_nothing() -> None:
    fake = FakeApi(fresh_pods=[])
    reconciler, _index = make(fake, indexed_pods=[pod_body("worker")])
    reconcile_now(reconciler, ("jobs", "scratch"))
    written = [call for call in fake.calls if call.startswith("patch_status")]
    assert len(written) == 1  # Pending -> InUse
    fake.calls.clear()
    reconcile_now(reconciler, ("jobs", "scratch"))  # same world, again
    assert fake.calls == []


def test_without_lifecycle_events_only_warnings_are_posted() -> None:
    fake = FakeApi(fresh_pods=[])
    quiet = Settings(lifecycle_events=False)
    reconciler, _ = make(fake, indexed_pods=[], settings=quiet)
    reconcile_now(reconciler, ("jobs", "scratch"))
    assert fake.calls == ["list_pods", "delete:evc-uid:10"]  # no Deleted Event
    reconciler, _index = make(fake, indexed_pods=[], settings=quiet)
    fake.calls.clear()
    view = view_of(reconciler, ("jobs", "scratch"))
    asyncio.run(reconciler.reconciler.announce(view,
                                               status.Event("Warning", "InvalidSpec", "bad"),
                                               reconciler.logger_for(view)))
    assert fake.calls == ["event:InvalidSpec"]


def test_the_pvc_showing_up_after_its_creation_costs_no_status_write() -> None:
    fake = FakeApi(fresh_pods=[])
    reconciler, _index = make(fake, indexed_pods=[pod_body("worker")])
    reconcile_now(reconciler, ("jobs", "scratch"))
    said = {"type": "PvcReady", "status": "True", "reason": "PvcCreated",
            "message": "Created PersistentVolumeClaim scratch of 1Gi."}
    body = evc_body()
    body["metadata"]["resourceVersion"] = "20"
    body["status"] = {**view_of(reconciler, ("jobs", "scratch")).status, "conditions": [
        *(c for c in view_of(reconciler, ("jobs", "scratch")).status["conditions"]
          if c["type"] != "PvcReady"), {**said, "lastTransitionTime": "2026-01-01T00:00:01Z",
                                        "observedGeneration": 1}]}
    reconciler.observe_evc("MODIFIED", body)
    fake.calls.clear()
    reconcile_now(reconciler, ("jobs", "scratch"))  # the PVC is in the index now
    assert fake.calls == []
    kept = next(c for c in view_of(reconciler, ("jobs", "scratch")).status["conditions"]
                if c["type"] == "PvcReady")
    assert (kept["reason"], kept["message"]) == (said["reason"], said["message"])


def test_a_status_rewritten_by_someone_else_cannot_make_a_deadline_earlier() -> None:
    fake = FakeApi(fresh_pods=[pod_body("worker", "Succeeded")])
    reconciler, index = make(fake, indexed_pods=[pod_body("worker")])
    reconcile_now(reconciler, ("jobs", "scratch"))
    assert "patch_status:InUse" in fake.calls
    # The user ends; someone else claims the claim has been idle since long ago.
    ended = [pod_view(pod_body("worker", "Succeeded"))]
    index.by_claim[("jobs", "scratch")] = ended
    forged = evc_body()
    forged["metadata"]["resourceVersion"] = "12"
    forged["status"] = {"phase": "Idle", "unusedSince": "2026-01-01T00:00:01Z"}
    reconciler.observe_evc("MODIFIED", forged)
    fake.calls.clear()
    reconcile_now(reconciler, ("jobs", "scratch"))
    assert not any(call.startswith(("delete", "list_pods")) for call in fake.calls)
    assert "patch_status:Idle" in fake.calls
    claim = reconciler.claims.get(("jobs", "scratch"))
    assert claim is not None
    assert claim.countdown is not None
    assert claim.countdown.unused_since == NOW


def test_a_claim_in_a_namespace_not_yet_listed_waits() -> None:
    fake = FakeApi(fresh_pods=[])
    reconciler, index = make(fake, indexed_pods=[])
    listed = False
    index.listed = lambda namespace: listed
    drain(reconciler)
    reconcile_now(reconciler, ("jobs", "scratch"))
    assert fake.calls == []  # no PVC, no status, no deletion on a partial view
    listed = True
    reconciler.namespace_synced("jobs")
    assert reconciler.queue.waiting(("jobs", "scratch"))
    reconcile_now(reconciler, ("jobs", "scratch"))
    assert fake.calls


def test_the_scheduler_wakes_at_the_earliest_deadline(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [T0]
    reconciler, _ = make(FakeApi(fresh_pods=[]), [], clock=lambda: clock[0])
    reconciler.forget(("jobs", "scratch"))
    reconciled: list[tuple[str, str]] = []

    async def reconcile(key: tuple[str, str]) -> None:
        reconciled.append(key)

    monkeypatch.setattr(reconciler, "reconcile", reconcile)
    for name in ("late", "soon"):
        body = evc_body()
        body["metadata"]["name"] = name
        reconciler.observe_evc(None, body)
    drain(reconciler)  # only the deadlines should bring them up
    reconciler.queue.add_after(("jobs", "late"), T0 + datetime.timedelta(seconds=0.5))
    reconciler.queue.add_after(("jobs", "soon"), T0 + datetime.timedelta(seconds=0.05))

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


def test_simultaneous_deletions_in_a_namespace_cost_one_list() -> None:
    fake = FakeApi(fresh_pods=[])
    reconciler, index = make(fake, indexed_pods=[])
    for name in ("other-1", "other-2"):
        body = evc_body()
        body["metadata"]["name"] = name
        body["metadata"]["uid"] = f"{name}-uid"
        reconciler.observe_evc(None, body)
        index.pvcs[("jobs", name)] = dataclasses.replace(
            OWN_PVC, name=name, controllers=(f"{name}-uid",))

    async def scenario() -> None:
        await asyncio.gather(*(reconciler.reconcile(("jobs", name))
                               for name in ("scratch", "other-1", "other-2")))

    asyncio.run(scenario())
    assert fake.calls.count("list_pods") == 1
    assert len([call for call in fake.calls if call.startswith("delete")]) == 3


def test_the_informer_lookups_serve_mounting_pods_and_a_selector_claim() -> None:
    bodies = [pod_body("worker"), {**pod_body("bystander"), "spec": {}},
              {**pod_body("labelled"), "spec": {}}]
    bodies[2]["metadata"] = {**bodies[2]["metadata"], "labels": {"app": "batch"}}
    watched = informer.Watched(cast(Any, None), pods_changed=lambda *_: None,
                               pvc_changed=lambda _key: None, namespace_synced=lambda _ns: None)
    held = informer.Informer(cast(Any, None), "pods", "jobs", pod_view, lambda *_: None,
                             lambda: None)
    watched.pods["jobs"], watched.claims["jobs"] = held, informer.NamespacePods()
    for body in bodies:  # what the informer does with each watch event
        view = pod_view(body)
        held.items[view.name] = view
        watched.claims["jobs"].update(view.name, None, view)
    mounting = watched.pods_of_claim(("jobs", "scratch"))
    in_namespace = watched.pods_in("jobs")
    assert [pod.name for pod in mounting] == ["worker"]
    assert [pod.name for pod in in_namespace] == ["worker", "bystander", "labelled"]
    assert mounting[0] is in_namespace[0]  # one view per pod

    fake = FakeApi(fresh_pods=[])
    reconciler, _index = make(fake, indexed_pods=[], watched=watched)
    body = evc_body()
    body["metadata"]["resourceVersion"] = "12"
    body["spec"]["selector"] = {"matchLabels": {"app": "batch"}}
    reconciler.observe_evc("MODIFIED", body)
    reconcile_now(reconciler, ("jobs", "scratch"))
    assert fake.calls[0] == "patch_status:InUse"
    claim = reconciler.claims.get(("jobs", "scratch"))
    assert claim is not None
    assert claim.seen_users == {"worker", "labelled"}


def test_a_pod_that_finished_after_the_proof_counts_as_finished() -> None:
    # The proof made ahead saw the user running; it finished before the deadline, and the
    # live index knows. The proof's copy must not bring the user back to life.
    fake = FakeApi(fresh_pods=[])
    clock = Clock()
    clock.now = T0 + datetime.timedelta(seconds=82)  # 3 s before the deadline

    async def current_pods(namespace: str) -> PodSnapshot:
        return PodSnapshot([pod_view(pod_body("worker", "Running"))], live=lambda: True)

    body = evc_body()
    body["status"] = {"phase": "Idle", "unusedSince": "2026-01-01T00:00:55Z"}
    reconciler, _ = make(fake, [pod_body("worker", "Succeeded")], lister=current_pods,
                         clock=clock, body=body)

    async def scenario() -> None:
        reconciler.freshness.pods.prefetch("jobs", not_before=clock.now)
        await settle()
        clock.advance(4)  # past the deadline: 00:00:55 + 30 s grace
        await reconciler.reconcile(("jobs", "scratch"))

    asyncio.run(scenario())
    assert "delete:evc-uid:10" in fake.calls
    assert not any(call.startswith("patch_status:InUse") for call in fake.calls)


def test_a_coming_deletion_proves_its_namespace_fresh_ahead_of_its_deadline() -> None:
    fake = FakeApi(fresh_pods=[])
    clock = Clock()
    proofs: list[datetime.datetime] = []

    async def current_pods(namespace: str) -> PodSnapshot:
        proofs.append(clock.now)
        return PodSnapshot([], live=lambda: True)

    reconciler, _ = make(fake, [], lister=current_pods, clock=clock)
    key = ("jobs", "scratch")
    deadline = T0 + datetime.timedelta(seconds=30)  # never used: the 30 s expiry

    async def scenario() -> None:
        clock.advance(10)
        await reconciler.reconcile(key)
        assert reconciler.proofs.get(key) == deadline - datetime.timedelta(seconds=3)
        reconciler._prefetch(reconciler.proofs.pop_due(clock.advance(16)))
        await settle()
        assert proofs == []  # not yet
        reconciler._prefetch(reconciler.proofs.pop_due(clock.advance(1)))
        await settle()
        assert proofs == [deadline - datetime.timedelta(seconds=3)]
        clock.now = deadline
        await reconciler.reconcile(key)

    asyncio.run(scenario())
    assert proofs == [deadline - datetime.timedelta(seconds=3)]  # none at the deadline
    assert "delete:evc-uid:11" in fake.calls


def test_countdowns_are_logged_nearest_first_and_the_rest_summed_up(
        caplog: pytest.LogCaptureFixture) -> None:
    fake = FakeApi(fresh_pods=[])
    reconciler, _index = make(fake, indexed_pods=[])
    template = lifecycle.decide(view_of(reconciler, ("jobs", "scratch")).claim, [], T0,
                                dry_run=False)
    assert template.deletes_at is not None
    for number in range(countdowns.COUNTDOWN_LOG_LINES + 7):
        body = evc_body()
        body["metadata"]["name"] = f"claim-{number:03}"
        reconciler.observe_evc(None, body)
        claim = reconciler.claims.get(("jobs", body["metadata"]["name"]))
        assert claim is not None
        claim.countdown = dataclasses.replace(
            template, deletes_at=NOW + datetime.timedelta(seconds=1000 - number))

    with caplog.at_level(logging.INFO):
        reconciler.tell_countdowns()
    lines = [r.getMessage() for r in caplog.records if "countdown:" in r.getMessage()]
    assert len(lines) == countdowns.COUNTDOWN_LOG_LINES
    # The nearest deadlines are those of the claims numbered last.
    told = {r.__dict__["k8s_ref"]["name"] for r in caplog.records
            if "countdown:" in r.getMessage()}
    assert told == {f"claim-{number:03}" for number in range(7, 57)}
    summary = [r.getMessage() for r in caplog.records if "more countdowns" in r.getMessage()]
    assert summary[0] == ("7 more countdowns run; the last of them deletes at "
                          f"{format_time(NOW + datetime.timedelta(seconds=1000))}.")


def test_an_event_that_cannot_be_posted_never_fails_the_work_it_tells_of() -> None:
    fake = FakeApi(fresh_pods=[])
    reconciler, _index = make(fake, indexed_pods=[pod_body("worker")])
    fake.event_error = ConnectionResetError("the API server went away")
    reconcile_now(reconciler, ("jobs", "scratch"))  # does not raise
    assert "patch_status:InUse" in fake.calls
    assert "event refused" in fake.calls


def test_what_is_kept_of_an_evc_is_json_without_the_parts_no_decision_reads() -> None:
    body = evc_body()
    body["metadata"]["managedFields"] = [{"manager": "evc-operator", "fieldsV1": {}}]
    body["metadata"]["annotations"] = {
        "kubectl.kubernetes.io/last-applied-configuration": '{"a copy": "of the claim"}',
        "evc.zalando.org/keep": "true"}
    kept = orjson.loads(evc.slim(body))
    assert "status" not in kept
    assert "managedFields" not in kept["metadata"]
    assert kept["metadata"]["annotations"] == {"evc.zalando.org/keep": "true"}
    assert kept["spec"] == body["spec"]
    assert kept["metadata"]["uid"] == body["metadata"]["uid"]


def test_the_echo_of_its_own_status_write_is_not_looked_at_again() -> None:
    fake = FakeApi(fresh_pods=[])
    reconciler, _index = make(fake, indexed_pods=[pod_body("worker")])
    key = ("jobs", "scratch")
    drain(reconciler)
    reconcile_now(reconciler, key)
    assert "patch_status:InUse" in fake.calls  # the patch answered resourceVersion 11
    for version, looked_at in (("10", False), ("11", False), ("12", True)):
        body = evc_body()
        body["metadata"]["resourceVersion"] = version
        reconciler.observe_evc("MODIFIED", body)
        assert reconciler.queue.waiting(key) is looked_at, version
        assert view_of(reconciler, key).resource_version == ("12" if looked_at else "11")
