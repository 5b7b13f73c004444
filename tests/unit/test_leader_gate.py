"""Writes only while this replica may act (gate.py), and a record another leader sealed
after this replica's last is believed over its own older facts (reconcile._overtaken):
the two ways a replica that still believes it leads (its renewal hanging, its process
paused, work under way when the Lease went) could otherwise delete a claim early."""

from __future__ import annotations

import asyncio
import datetime
from typing import Any

import pytest

from evc_operator.freshness import PodSnapshot
from evc_operator.gate import Gated, NotLeading
from evc_operator.status import Event
from tests.unit.fakes import FakeApi, evc_body, make, reconcile_now, sealed
from tests.unit.support import T0, Clock

KEY = ("jobs", "scratch")


def at(seconds: float) -> datetime.datetime:
    return T0 + datetime.timedelta(seconds=seconds)


def stamp(seconds: float) -> str:
    return at(seconds).strftime("%Y-%m-%dT%H:%M:%SZ")


def writes(fake: FakeApi) -> list[str]:
    return [call for call in fake.calls if call.split(":")[0] in (
        "delete", "patch_status", "create_pvc", "patch_pvc") or call.startswith("event:")]


def test_no_write_is_sent_while_this_replica_may_not_act() -> None:
    fake = FakeApi(fresh_pods=[])
    acting = False
    gated = Gated(fake, lambda: acting)

    async def each_write() -> list[str]:
        refused = []
        for call in (gated.create_pvc({"metadata": {"name": "x", "namespace": "jobs"}}),
                     gated.patch_pvc("jobs", "x", "uid", "1", {}),
                     gated.patch_evc_status("jobs", "x", {"phase": "Idle"}),
                     gated.delete_evc("jobs", "x", "uid", "1"),
                     gated.post_event("jobs", "x", "uid", Event("Normal", "Deleted", "."),
                                      T0)):
            with pytest.raises(NotLeading):
                await call
            refused.append("refused")
        await gated.read_evc("jobs", "x")  # reads change nothing: they go through
        return refused

    assert asyncio.run(each_write()) == ["refused"] * 5
    assert writes(fake) == []
    acting = True
    asyncio.run(gated.delete_evc("jobs", "x", "uid", "1"))
    assert [call for call in fake.calls if call.startswith("delete")]


def test_a_deletion_under_way_when_the_lease_goes_is_not_sent() -> None:
    """The claim is due and its proof is being read when leadership is lost: no delete,
    no Deleted Event (the next leader decides it)."""
    fake = FakeApi(fresh_pods=[])
    proof: asyncio.Event | None = None

    async def lister(namespace: str) -> PodSnapshot:
        assert proof is not None
        fake.calls.append("list_pods")
        await proof.wait()
        return PodSnapshot([])

    scheduler, _index = make(fake, indexed_pods=[], lister=lister)  # long past expiry

    async def scenario() -> None:
        nonlocal proof
        proof = asyncio.Event()
        work = asyncio.create_task(scheduler._work(KEY, None))
        for _ in range(50):
            await asyncio.sleep(0)
        assert "list_pods" in fake.calls, fake.calls
        scheduler.set_active(False)
        proof.set()
        await work

    asyncio.run(scenario())
    assert writes(fake) == []
    assert KEY not in scheduler.queue.later  # not a failure to retry: not ours to do


def test_a_lease_no_longer_surely_valid_stops_every_write_before_the_change_is_told() -> None:
    """A paused process, resumed before its leadership loop has run: `leading()` says its
    renewal may have lapsed (on its monotonic clock) while `active` still says it leads."""
    fake = FakeApi(fresh_pods=[])
    scheduler, _index = make(fake, indexed_pods=[])
    valid = False
    scheduler.leading = lambda: valid
    asyncio.run(scheduler._work(KEY, None))
    assert writes(fake) == []
    valid = True
    asyncio.run(scheduler._work(KEY, None))
    assert [call for call in fake.calls if call.startswith("delete")]


def idle_since(since: float, sealed_at: float, grace: str) -> dict[str, Any]:
    body = evc_body()
    body["spec"]["gracePeriod"] = grace
    body["status"] = sealed({"phase": "Idle", "unusedSince": stamp(since)}, at=at(sealed_at))
    body["metadata"]["resourceVersion"] = "20"
    return body


def test_a_record_another_leader_sealed_later_outweighs_this_replicas_own() -> None:
    """This replica decided Pending (expiry at 31) and, never told it lost the Lease, sees
    the other leader's record: Idle since 60, sealed at 61, grace 1 h. At 100 it deletes
    nothing: the deadline is 3,660. Its own later facts still outweigh an older record."""
    clock = Clock(at(10))
    body = evc_body()
    body["spec"]["gracePeriod"] = "1h"
    fake = FakeApi(fresh_pods=[])
    scheduler, _index = make(fake, indexed_pods=[], clock=clock, body=body)
    reconcile_now(scheduler, KEY)
    scheduler.observe_evc("MODIFIED", idle_since(60, 61, grace="1h"))
    clock.advance(90)  # 100
    fake.calls.clear()
    reconcile_now(scheduler, KEY)
    assert [call for call in fake.calls if call.startswith("delete")] == []
    claim = scheduler.claims.get(KEY)
    assert claim is not None
    assert claim.countdown is not None
    assert claim.countdown.deletes_at == at(60 + 3600)
