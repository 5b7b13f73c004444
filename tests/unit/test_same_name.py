"""A claim deleted and made again under the same name (CI and GitOps re-apply the same
manifest) while this process still works on the first: nothing about the first may become
a fact about the second (reconcile and scheduler level, with tests/unit/fakes.py)."""

from __future__ import annotations

import asyncio
import datetime
from collections.abc import Mapping
from typing import Any

from evc_operator import status
from evc_operator.scheduler import Scheduler
from tests.unit.fakes import FakeApi, evc_body, make, reconcile_now, sealed
from tests.unit.support import T0

KEY = ("jobs", "scratch")


def at(seconds: float) -> datetime.datetime:
    return T0 + datetime.timedelta(seconds=seconds)


def successor(created: float, expiry: str = "1h") -> dict[str, Any]:
    """Claim B: the same name as the fakes' claim A, another uid, no status yet."""
    body = evc_body()
    del body["status"]
    body["metadata"].update(uid="evc-b", resourceVersion="20",
                            creationTimestamp=at(created).strftime("%Y-%m-%dT%H:%M:%SZ"))
    body["spec"]["expiryPeriod"] = expiry
    return body


class Replacing(FakeApi):
    """While a call for A is on its way, A is deleted and B made, and the watch says so."""

    def __init__(self, b: dict[str, Any]) -> None:
        super().__init__(fresh_pods=[])
        self.b = b
        self.scheduler: Scheduler | None = None

    def replace(self) -> None:
        assert self.scheduler is not None
        self.scheduler.observe_evc("DELETED", evc_body())
        self.scheduler.observe_evc("ADDED", self.b)


class StatusLandsOnB(Replacing):
    async def patch_evc_status(self, namespace: str, name: str,
                               status: Mapping[str, Any]) -> dict[str, Any]:
        self.replace()
        self.calls.append(f"patch_status:{status['phase']}")
        body = dict(self.b, status=dict(status))  # a merge patch goes by name: B's now
        body["metadata"] = dict(self.b["metadata"], resourceVersion="21")
        return body


class MadeWhileDeleting(Replacing):
    async def post_event(self, namespace: str, name: str, uid: str, event: status.Event,
                         now: datetime.datetime) -> None:
        if event.reason == "Deleted":
            self.replace()
        await super().post_event(namespace, name, uid, event, now)


def test_a_status_write_for_a_claim_that_lands_on_its_successor_is_no_fact_about_it() -> None:
    """A's last user is gone: Idle, written. The write lands on B, made meanwhile with an
    hour's expiry. B's deadline is its own (an hour), not A's grace after A's use."""
    a = evc_body()
    a["status"] = sealed({"phase": "InUse"})
    fake = StatusLandsOnB(successor(created=36))
    now = [at(35)]
    scheduler, _index = make(fake, [], body=a, clock=lambda: now[0])
    fake.scheduler = scheduler
    reconcile_now(scheduler, KEY)
    b = scheduler.claims.get(KEY)
    assert b is not None
    assert b.view.uid == "evc-b"
    assert b.ours() is None
    now[0] = at(80)  # past A's grace, within B's hour
    fake.calls.clear()
    reconcile_now(scheduler, KEY)
    assert not [call for call in fake.calls if call.startswith("delete")]


def test_a_claim_made_while_its_namesake_is_deleted_stays_tracked() -> None:
    """The operator deletes A; while it posts A's Deleted Event, the watch tells of A gone
    and B made. B is the claim held now: A's outcome does not drop it."""
    fake = MadeWhileDeleting(successor(created=101))
    scheduler, _index = make(fake, [])
    fake.scheduler = scheduler

    async def work() -> None:
        for key, added in scheduler.queue.take():
            scheduler.limit.take()
            await scheduler._work(key, added)

    asyncio.run(work())
    assert "delete:evc-uid:10" in fake.calls
    b = scheduler.claims.get(KEY)
    assert b is not None
    assert b.view.uid == "evc-b"
    assert scheduler.queue.waiting(KEY)


def test_a_claim_seen_under_a_held_claims_name_starts_afresh() -> None:
    """B seen without A's deletion (a relist after a dropped watch): what this process
    decided and saw about A is not B's."""
    fake = FakeApi(fresh_pods=[])
    scheduler, _index = make(fake, [], clock=lambda: at(10))
    reconcile_now(scheduler, KEY)
    a = scheduler.claims.get(KEY)
    assert a is not None
    assert a.written is not None
    a.seen_users = ("p",)
    scheduler.observe_evc("ADDED", successor(created=101))
    b = scheduler.claims.get(KEY)
    assert b is not None
    assert b.view.uid == "evc-b"
    assert (b.written, b.seen_users, b.sealed_at) == (None, (), None)
