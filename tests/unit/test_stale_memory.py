"""What this process remembers of a claim must not outweigh what happened without it: a
pod that took a known pod's name, and another leader's record while this one stood by
(reconcile level, with the fakes of tests/unit/fakes.py)."""

from __future__ import annotations

import datetime
from typing import Any

import pytest

from evc_operator.users import pod_view
from evc_operator.workloads import workload_view
from tests.unit.fakes import FakeApi, evc_body, make, reconcile_now, sealed
from tests.unit.support import T0, Clock

KEY = ("jobs", "scratch")


def at(seconds: float) -> datetime.datetime:
    return T0 + datetime.timedelta(seconds=seconds)


def stamp(seconds: float) -> str:
    return at(seconds).strftime("%Y-%m-%dT%H:%M:%SZ")


def finished(name: str, created: float, finished_at: float) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": "jobs",
                         "creationTimestamp": stamp(created)},
            "spec": {"volumes": [{"name": "v",
                                  "persistentVolumeClaim": {"claimName": "scratch"}}]},
            "status": {"phase": "Succeeded", "containerStatuses": [
                {"name": "c", "state": {"terminated": {"finishedAt": stamp(finished_at)}}}]}}


def idle_since(since: float, sealed_at: float, grace: str = "30s") -> dict[str, Any]:
    body = evc_body()
    body["spec"]["gracePeriod"] = grace
    body["status"] = sealed({"phase": "Idle", "unusedSince": stamp(since)}, at=at(sealed_at))
    return body


def deletes(fake: FakeApi) -> list[str]:
    return [call for call in fake.calls if call.startswith("delete")]


def test_a_new_pod_under_a_known_pods_name_is_a_new_use() -> None:
    """Pod p ended at 59 (Idle since 60, grace 30 s). A new pod p, created at 75, ran until
    80 and finished between two looks (a backlog, a dropped watch): its use counts, the
    deadline is not 90."""
    clock = Clock(at(70))
    old = finished("p", created=50, finished_at=59)
    fake = FakeApi(fresh_pods=[old])
    scheduler, index = make(fake, indexed_pods=[old], clock=clock, body=idle_since(60, 60))
    reconcile_now(scheduler, KEY)
    claim = scheduler.claims.get(KEY)
    assert claim is not None
    assert claim.countdown is not None
    assert claim.countdown.deletes_at == at(90)

    new = finished("p", created=75, finished_at=80)
    index.by_claim[KEY] = index.in_namespace["jobs"] = [pod_view(new)]
    fake.fresh_pods = [new]
    clock.advance(15)  # 85
    reconcile_now(scheduler, KEY)
    assert claim.countdown is not None
    assert claim.countdown.deletes_at >= at(81 + 30)
    clock.advance(10)  # 95: the old deadline is past
    fake.calls.clear()
    reconcile_now(scheduler, KEY)
    assert deletes(fake) == []


@pytest.mark.parametrize("noticed", [True, False])
def test_a_record_another_leader_wrote_meanwhile_outweighs_this_replicas_own(
        noticed: bool) -> None:
    """This replica decided Pending (expiry at 31); the other leader saw a pod use the
    claim and recorded Idle since 60, sealed at 61, grace 1 h. At 100, with the pod gone,
    this replica deletes nothing (the deadline is 3,660, not 31): whether it noticed it
    had lost the Lease and leads again (its memory forgotten, scheduler.set_active), or
    never noticed (a renewal hanging: the record sealed after its own last one is
    believed over its facts, reconcile._overtaken; gate.py keeps it from writing too)."""
    clock = Clock(at(10))
    body = evc_body()
    body["spec"]["gracePeriod"] = "1h"
    fake = FakeApi(fresh_pods=[])
    scheduler, _index = make(fake, indexed_pods=[], clock=clock, body=body)
    reconcile_now(scheduler, KEY)
    if noticed:
        scheduler.set_active(False)
    later = idle_since(60, 61, grace="1h")
    later["metadata"]["resourceVersion"] = "20"
    scheduler.observe_evc("MODIFIED", later)
    clock.advance(90)  # 100
    scheduler.set_active(True)
    fake.calls.clear()
    reconcile_now(scheduler, KEY)
    assert deletes(fake) == []
    claim = scheduler.claims.get(KEY)
    assert claim is not None
    assert claim.countdown is not None
    assert claim.countdown.deletes_at == at(60 + 3600)


def test_a_pod_is_told_from_a_workload_for_the_rules_on_creation() -> None:
    """A pod's creation is a use (a Job's too); a Deployment's is not (one created at zero
    replicas never ran a pod): lifecycle tells them apart by PodUse.from_creation."""
    assert pod_view(finished("p", created=1, finished_at=2)).use().from_creation
    deployment = {"metadata": {"name": "d", "namespace": "jobs", "generation": 1,
                               "creationTimestamp": stamp(1)},
                  "spec": {"replicas": 0, "template": {"spec": {}}}}
    assert not workload_view("Deployment", deployment).use().from_creation


def test_a_status_write_answered_after_the_lease_was_lost_is_not_kept_as_ours() -> None:
    """A write under way when leadership goes: its answer is what was stored then, no fact
    to set against the record the next leader writes (the race of the test above)."""
    clock = Clock(at(10))
    fake = FakeApi(fresh_pods=[])
    scheduler, _index = make(fake, indexed_pods=[], clock=clock, body=evc_body())
    reconcile_now(scheduler, KEY)
    claim = scheduler.claims.get(KEY)
    assert claim is not None
    assert claim.ours() is not None
    answered = evc_body()
    answered["status"] = {"phase": "Pending"}
    scheduler.set_active(False)
    scheduler.reconciler.remember(answered, answered["metadata"]["uid"])
    claim = scheduler.claims.get(KEY)
    assert claim is not None
    assert claim.ours() is None
