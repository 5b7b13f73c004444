"""A user that left the index before any decision took it in (deleted between two looks,
or while a lagging watch caught up during a deletion's proof) is decided on as last seen
(tracked.TrackedClaim.depart), with the fakes of tests/unit/fakes.py."""

from __future__ import annotations

import datetime
from typing import Any

from evc_operator import errors, seal
from evc_operator.evc import Key
from evc_operator.freshness import PodList, PodSnapshot
from evc_operator.scheduler import Scheduler
from evc_operator.timestamps import parse_time
from evc_operator.users import pod_view
from evc_operator.workloads import workload_view
from tests.unit.fakes import FakeApi, drain, evc_body, make, reconcile_now, sealed
from tests.unit.support import T0, Clock

KEY = ("jobs", "scratch")


def at(seconds: float) -> datetime.datetime:
    return T0 + datetime.timedelta(seconds=seconds)


def stamp(seconds: float) -> str:
    return at(seconds).strftime("%Y-%m-%dT%H:%M:%SZ")


def user(name: str, created: float, labels: dict[str, str] | None = None,
         finished_at: float | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "metadata": {"name": name, "namespace": "jobs", "creationTimestamp": stamp(created),
                     "labels": labels or {}},
        "spec": {"volumes": [{"name": "v",
                              "persistentVolumeClaim": {"claimName": "scratch"}}]},
        "status": {"phase": "Running"}}
    if finished_at is not None:
        body["status"] = {"phase": "Succeeded", "containerStatuses": [
            {"name": "c", "state": {"terminated": {"finishedAt": stamp(finished_at)}}}]}
    return body


def deadline_of(scheduler: Scheduler, key: Key = KEY) -> datetime.datetime:
    """The deadline of the claim's pending deletion, which it must have."""
    claim = scheduler.claims.get(key)
    assert claim is not None
    assert claim.countdown is not None
    assert claim.countdown.deletes_at is not None
    return claim.countdown.deletes_at


def idle_since(since: float) -> dict[str, Any]:
    body = evc_body()
    body["status"] = sealed({"phase": "Idle", "unusedSince": stamp(since)}, at=at(since))
    return body


def test_a_running_pod_deleted_before_any_decision_saw_it_is_a_use_until_then() -> None:
    """Idle since 60, grace 30: due at 90. Pod p, created at 55 (the index lagged when
    the claim went Idle), ran until it was deleted at about 85; no decision ever saw it.
    It was in use until then: InUse, then Idle from now, not deleted at 90."""
    clock = Clock(at(86))
    fake = FakeApi(fresh_pods=[])
    scheduler, _index = make(fake, [], clock=clock, body=idle_since(60))
    scheduler.poke_for_pod("jobs", ["scratch"], (pod_view(user("p", created=55)), None))
    drain(scheduler)  # taken from the queue, as the scheduler does before reconciling
    reconcile_now(scheduler, KEY)
    assert "patch_status:InUse" in fake.calls
    assert scheduler.queue.waiting(KEY)  # decided again without it: its use has ended
    reconcile_now(scheduler, KEY)
    claim = scheduler.claims.get(KEY)
    assert claim is not None
    assert claim.departed is None
    assert "patch_status:Idle" in fake.calls
    assert fake.evc is not None
    assert parse_time(fake.evc["status"]["unusedSince"]) >= at(86)
    clock.now = at(95)
    reconcile_now(scheduler, KEY)
    assert not [call for call in fake.calls if call.startswith("delete")]


def test_a_finished_pod_deleted_before_any_decision_saw_it_counts_its_end() -> None:
    """Pod p ran from 70 to 75, after the recorded end of use (60), and was deleted before
    a decision saw it: grace counts from after its end, not from 60."""
    clock = Clock(at(86))
    fake = FakeApi(fresh_pods=[])
    scheduler, _index = make(fake, [], clock=clock, body=idle_since(60))
    scheduler.poke_for_pod("jobs", ["scratch"],
                           (pod_view(user("p", created=70, finished_at=75)), None))
    drain(scheduler)
    reconcile_now(scheduler, KEY)
    assert deadline_of(scheduler) >= at(106)
    assert not scheduler.queue.waiting(KEY)  # nothing running left: decided once


def test_a_pod_that_stops_matching_a_claims_selector_departs_from_it() -> None:
    body = idle_since(60)
    body["spec"]["selector"] = {"matchLabels": {"app": "etl"}}
    scheduler, _index = make(FakeApi(fresh_pods=[]), [], clock=Clock(at(86)), body=body)
    before = pod_view(user("p", created=55, labels={"app": "etl"}))
    after = pod_view(user("p", created=55, labels={"app": "other"}))
    scheduler.poke_for_pod("jobs", [], (before, after))
    claim = scheduler.claims.get(KEY)
    assert claim is not None
    assert claim.departed == {"p": before}
    scheduler.poke_for_pod("jobs", [], (after, before))  # back: no departure of it
    assert claim.departed == {"p": before}


def test_a_standby_keeps_no_departed_users() -> None:
    """Only the leader decides, so only it takes departures in: a standby that kept them
    would hold every pod deleted in its time, and on taking over decide claims InUse for
    pods long gone."""
    scheduler, _index = make(FakeApi(fresh_pods=[]), [], clock=Clock(at(86)),
                             body=idle_since(60))
    scheduler.set_active(False)
    scheduler.poke_for_pod("jobs", ["scratch"], (pod_view(user("p", created=55)), None))
    claim = scheduler.claims.get(KEY)
    assert claim is not None
    assert claim.departed is None


def test_a_claim_decided_on_a_proofs_view_is_looked_at_again_soon() -> None:
    """Decided on a proof's view its informers lag behind (reconcile._ahead), a claim is
    looked at again within a second: once they have caught up the index decides, and the
    changes that bring them there need not be this claim's."""
    clock = Clock(at(70))
    scheduler, _index = make(FakeApi(fresh_pods=[]), [], clock=clock, body=idle_since(60))
    claim = scheduler.claims.get(KEY)
    assert claim is not None
    running = pod_view(user("p", created=65))
    claim.ahead = PodList(PodSnapshot([running], behind=lambda: True))
    drain(scheduler)
    reconcile_now(scheduler, KEY)
    woken = scheduler.queue.later.get(KEY)
    assert woken is not None
    assert woken <= at(71)


def test_a_statefulset_gone_after_a_write_unseen_counts_for_its_other_ordinals() -> None:
    """Claim data-web-5 (Idle since 60, due at 90) is named by StatefulSet web's claim
    template for an ordinal outside its range (2 replicas). Its spec was written at 70
    (perhaps scaled to 6 and back), and it was deleted before any decision saw that: its
    ordinal 5 may have used the claim until 70, so grace counts from now, not from 60."""
    body = idle_since(60)
    body["metadata"]["name"] = "data-web-5"
    statefulset = {
        "metadata": {"name": "web", "namespace": "jobs", "generation": 3,
                     "creationTimestamp": stamp(0),
                     "managedFields": [{"manager": "kubectl", "operation": "Update",
                                        "time": stamp(70)}]},
        "spec": {"replicas": 2, "volumeClaimTemplates": [{"metadata": {"name": "data"}}],
                 "template": {"spec": {}}}}
    scheduler, _index = make(FakeApi(fresh_pods=[]), [], clock=Clock(at(86)), body=body)
    scheduler.poke_for_pod("jobs", ["data-web-5"],
                           (workload_view("StatefulSet", statefulset), None))
    drain(scheduler)
    reconcile_now(scheduler, ("jobs", "data-web-5"))
    assert deadline_of(scheduler, ("jobs", "data-web-5")) >= at(116)


def test_a_running_pod_deleted_while_status_writes_are_refused_still_ends_its_use() -> None:
    """As above, with every status write refused (a policy on the status subresource):
    the decision that took the departed pod in stands unwritten (`decided`), so the next
    one, without it, counts the grace from now; kept departed until a write succeeded,
    the claim stayed InUse with no countdown for as long as writes were refused."""
    clock = Clock(at(86))
    fake = FakeApi(fresh_pods=[])
    fake.status_error = errors.Forbidden("denied by policy")
    scheduler, _index = make(fake, [], clock=clock, body=idle_since(60))
    scheduler.poke_for_pod("jobs", ["scratch"], (pod_view(user("p", created=55)), None))
    drain(scheduler)
    reconcile_now(scheduler, KEY)
    assert scheduler.queue.waiting(KEY)  # decided again at once without it
    reconcile_now(scheduler, KEY)
    claim = scheduler.claims.get(KEY)
    assert claim is not None
    assert claim.departed is None
    assert at(86) + datetime.timedelta(seconds=30) <= deadline_of(scheduler)
    assert claim.status_failures == 2  # neither decision was written


def test_a_record_a_long_proof_changed_is_sealed_when_it_is_written() -> None:
    """A due claim's proof took 7 s and found a user the index lacked: the InUse record is
    sealed as of its write, not as of the reconciliation's start (then the operator's own
    record failed `seal.written_in_time` after a restart, taken the later way with a
    warning that someone had put it back; a review)."""
    clock = Clock(at(90))  # Idle since 60, grace 30: due at 90

    async def slow_proof(namespace: str) -> PodSnapshot:
        clock.advance(7)  # late bookmarks, short watches, a list
        return PodSnapshot([pod_view(user("p", created=89))])

    fake = FakeApi(fresh_pods=[])
    scheduler, _ = make(fake, [], clock=clock, body=idle_since(60), lister=slow_proof)
    reconcile_now(scheduler, KEY)
    assert "patch_status:InUse" in fake.calls
    assert fake.evc is not None
    assert seal.sealed_at(fake.evc["status"]["seal"]) == at(97)
    assert seal.written_in_time(fake.evc["status"]["seal"], clock.now)
