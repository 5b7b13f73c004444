"""Writes only while this replica may act (gate.py): a replica that still believes it
leads (its renewal hanging, its process paused, work under way when the Lease went) sends
nothing. (A record another leader sealed meanwhile is believed over this replica's own
facts: tests/unit/test_stale_memory.py.)"""

from __future__ import annotations

import asyncio
import datetime

import pytest

from evc_operator.freshness import PodSnapshot
from evc_operator.gate import Gated, NotLeading
from evc_operator.status import Event
from tests.unit.fakes import FakeApi, make
from tests.unit.support import T0

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
