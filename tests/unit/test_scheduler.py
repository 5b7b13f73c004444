"""The scheduler: work queue -> reconcile -> outcome, deadlines, proofs made ahead of
deletions, and the countdown log, with the fakes of tests/unit/fakes.py."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import logging
from collections.abc import Mapping
from typing import Any

import pytest

from evc_operator import countdowns, lifecycle
from evc_operator.freshness import PodSnapshot
from evc_operator.timestamps import format_time
from tests.unit import fakes
from tests.unit.support import T0, Clock, VirtualLoop, settle


def test_a_claim_in_a_namespace_not_yet_listed_waits() -> None:
    fake = fakes.FakeApi(fresh_pods=[])
    reconciler, index = fakes.make(fake, indexed_pods=[])
    listed = False
    index.listed = lambda namespace: listed
    fakes.drain(reconciler)
    fakes.reconcile_now(reconciler, ("jobs", "scratch"))
    assert fake.calls == []  # no PVC, no status, no deletion on a partial view
    listed = True
    reconciler.namespace_synced("jobs")
    assert reconciler.queue.waiting(("jobs", "scratch"))
    fakes.reconcile_now(reconciler, ("jobs", "scratch"))
    assert fake.calls


def test_the_scheduler_wakes_at_the_earliest_deadline(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [T0]
    reconciler, _ = fakes.make(fakes.FakeApi(fresh_pods=[]), [], clock=lambda: clock[0])
    reconciler.forget(("jobs", "scratch"))
    reconciled: list[tuple[str, str]] = []
    woken_at: list[float] = []  # the event loop's virtual time of each reconcile

    async def reconcile(key: tuple[str, str]) -> None:
        reconciled.append(key)
        woken_at.append(asyncio.get_running_loop().time())

    monkeypatch.setattr(reconciler, "reconcile", reconcile)
    for name in ("late", "soon"):
        body = fakes.evc_body()
        body["metadata"]["name"] = name
        reconciler.observe_evc(None, body)
    fakes.drain(reconciler)  # only the deadlines should bring them up
    reconciler.queue.add_after(("jobs", "late"), T0 + datetime.timedelta(seconds=0.5))
    reconciler.queue.add_after(("jobs", "soon"), T0 + datetime.timedelta(seconds=0.05))

    async def scenario() -> None:
        task = asyncio.create_task(reconciler.run())
        await asyncio.sleep(0.01)
        assert reconciled == []
        clock[0] = T0 + datetime.timedelta(seconds=0.1)
        await asyncio.sleep(0.1)  # its timer, computed at T0, ran out meanwhile
        assert reconciled == [("jobs", "soon")]
        assert woken_at == [pytest.approx(0.05)]  # by that timer: 0.05 s from T0
        clock[0] = T0 + datetime.timedelta(seconds=1)
        await asyncio.sleep(0.5)
        assert reconciled == [("jobs", "soon"), ("jobs", "late")]
        # 0.4 s after the first: its timer was computed then, at T0 + 0.1 s on the clock
        assert woken_at == [pytest.approx(0.05), pytest.approx(0.45)]
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    with asyncio.Runner(loop_factory=VirtualLoop) as runner:  # no wall-clock race
        runner.run(scenario())


def test_simultaneous_deletions_in_a_namespace_cost_one_list() -> None:
    fake = fakes.FakeApi(fresh_pods=[])
    reconciler, index = fakes.make(fake, indexed_pods=[])
    for name in ("other-1", "other-2"):
        body = fakes.evc_body()
        body["metadata"]["name"] = name
        body["metadata"]["uid"] = f"{name}-uid"
        body["status"] = fakes.sealed(body["status"], uid=f"{name}-uid")
        reconciler.observe_evc(None, body)
        index.pvcs[("jobs", name)] = dataclasses.replace(
            fakes.OWN_PVC, name=name, controllers=(f"{name}-uid",))

    async def scenario() -> None:
        await asyncio.gather(*(reconciler.reconcile(("jobs", name))
                               for name in ("scratch", "other-1", "other-2")))

    asyncio.run(scenario())
    assert fake.calls.count("list_pods") == 1
    assert len([call for call in fake.calls if call.startswith("delete")]) == 3


def test_a_coming_deletion_proves_its_namespace_fresh_at_its_deadline() -> None:
    # Not ahead of it: a pod created a moment before the deadline may not have reached
    # the informer yet, however unbroken its watch (tests/unit/test_freshness_deadline.py).
    fake = fakes.FakeApi(fresh_pods=[])
    clock = Clock()
    proofs: list[datetime.datetime] = []

    async def current_pods(namespace: str) -> PodSnapshot:
        proofs.append(clock.now)
        return PodSnapshot([], live=lambda: True)

    anticipated: list[tuple[str, datetime.datetime]] = []
    reconciler, _ = fakes.make(fake, [], lister=current_pods, clock=clock,
                               ahead=lambda namespace: anticipated.append((namespace,
                                                                           clock.now)))
    key = ("jobs", "scratch")
    deadline = T0 + datetime.timedelta(seconds=1 + 30)  # never used: the 30 s expiry
    second = datetime.timedelta(seconds=1)

    async def scenario() -> None:
        clock.advance(10)
        await reconciler.reconcile(key)
        # A second ahead, only the short watches a proof waits on are opened.
        assert reconciler.proofs.get(key) == deadline - second
        reconciler._prefetch(reconciler.proofs.pop_due(clock.advance(20)))
        await settle()
        assert anticipated == [("jobs", deadline - second)]
        assert proofs == []  # not yet
        assert reconciler.proofs.get(key) == deadline
        clock.advance(0.5)
        await reconciler.reconcile(key)  # decided again meanwhile (a pod event, say)
        reconciler._prefetch(reconciler.proofs.pop_due(clock.now))
        await settle()
        assert proofs == []  # not yet: anticipated again at most, never proven early
        assert reconciler.proofs.get(key) == deadline
        reconciler._prefetch(reconciler.proofs.pop_due(clock.advance(0.5)))
        await settle()
        assert proofs == [deadline]
        clock.advance(0.01)
        await reconciler.reconcile(key)

    asyncio.run(scenario())
    assert proofs == [deadline]  # the one begun at the deadline serves the deletion
    assert anticipated[0] == ("jobs", deadline - second)
    assert all(moment < deadline for _, moment in anticipated)
    assert "delete:evc-uid:11" in fake.calls


def test_countdowns_are_logged_nearest_first_and_the_rest_summed_up(
        caplog: pytest.LogCaptureFixture) -> None:
    fake = fakes.FakeApi(fresh_pods=[])
    reconciler, _index = fakes.make(fake, indexed_pods=[])
    template = lifecycle.decide(fakes.view_of(reconciler, ("jobs", "scratch")).claim, [], T0,
                                dry_run=False)
    assert template.deletes_at is not None
    for number in range(countdowns.COUNTDOWN_LOG_LINES + 7):
        body = fakes.evc_body()
        body["metadata"]["name"] = f"claim-{number:03}"
        reconciler.observe_evc(None, body)
        claim = reconciler.claims.get(("jobs", body["metadata"]["name"]))
        assert claim is not None
        claim.countdown = dataclasses.replace(
            template, deletes_at=fakes.NOW + datetime.timedelta(seconds=1000 - number))

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
                          f"{format_time(fakes.NOW + datetime.timedelta(seconds=1000))}.")


def test_the_echo_of_its_own_status_write_is_not_looked_at_again() -> None:
    fake = fakes.FakeApi(fresh_pods=[])
    reconciler, _index = fakes.make(fake, indexed_pods=[fakes.pod_body("worker")])
    key = ("jobs", "scratch")
    fakes.drain(reconciler)
    fakes.reconcile_now(reconciler, key)
    assert "patch_status:InUse" in fake.calls  # the patch answered resourceVersion 11
    for version, looked_at in (("10", False), ("11", False), ("12", True)):
        body = fakes.evc_body()
        body["metadata"]["resourceVersion"] = version
        reconciler.observe_evc("MODIFIED", body)
        assert reconciler.queue.waiting(key) is looked_at, version
        assert fakes.view_of(reconciler, key).resource_version == ("12" if looked_at else "11")


def test_a_status_write_answered_after_a_later_change_was_seen_does_not_put_it_back() -> None:
    """Our write committed at 11; someone labelled the claim at 12, and the watch brought
    that before our answer was handled. Put back, the view at 11 had every deletion
    refused (409) until the claim changed again, and the label never reached the PVC."""
    fake = fakes.FakeApi(fresh_pods=[])
    reconciler, _index = fakes.make(fake, indexed_pods=[fakes.pod_body("worker")])
    key = ("jobs", "scratch")
    labelled = fakes.evc_body()
    labelled["metadata"]["resourceVersion"] = "12"
    labelled["metadata"]["labels"] = {"team": "a"}
    written = fake.patch_evc_status

    async def answered_late(namespace: str, name: str,
                            status: Mapping[str, Any]) -> dict[str, Any]:
        body = await written(namespace, name, status)  # resourceVersion 11
        reconciler.observe_evc("MODIFIED", labelled)
        return body

    fake.patch_evc_status = answered_late  # type: ignore[method-assign]
    fakes.drain(reconciler)
    fakes.reconcile_now(reconciler, key)
    assert "patch_status:InUse" in fake.calls
    view = fakes.view_of(reconciler, key)
    assert view.resource_version == "12"
    assert view.body["metadata"]["labels"] == {"team": "a"}


def test_metrics_read_a_claim_being_deleted_as_deleting_and_each_reason() -> None:
    """phase="Deleting" is real: a claim whose deletion began (someone's finalizer holds it)."""
    reconciler, _ = fakes.make(fakes.FakeApi(fresh_pods=[]), indexed_pods=[])
    assert reconciler.phases() == [lifecycle.Phase.PENDING]
    assert reconciler.reasons() == [None]
    body = fakes.evc_body()
    body["metadata"].update(resourceVersion="30", deletionTimestamp="2026-01-01T00:01:00Z",
                            finalizers=["example.com/hold"])
    body["status"]["reason"] = "Kept"
    reconciler.observe_evc("MODIFIED", body)
    assert reconciler.phases() == [lifecycle.Phase.DELETING]
    assert reconciler.reasons() == ["Kept"]


def test_a_deletion_of_another_claim_of_the_name_forgets_not_the_one_held() -> None:
    """A claim found gone after a list is forgotten by the uid it was known by: another of
    its name, seen since (made again), stays."""
    reconciler, _index = fakes.make(fakes.FakeApi(fresh_pods=[]), indexed_pods=[])
    key = ("jobs", "scratch")
    old = fakes.evc_body()
    old["metadata"]["uid"] = "old-uid"
    reconciler.observe_evc("DELETED", old)
    assert fakes.view_of(reconciler, key).uid == "evc-uid"
    reconciler.observe_evc("DELETED", fakes.evc_body())
    assert reconciler.claims.get(key) is None


def test_the_loop_ends_only_once_its_reconciliations_have() -> None:
    """Stopping, the loop's reconciliations were cancelled but not waited for: the stop
    went on to close the watches and the API session under them."""
    scheduler, _ = fakes.make(fakes.FakeApi(fresh_pods=[]), [])
    ended: list[str] = []

    async def reconcile(key: object) -> None:
        try:
            await asyncio.sleep(3600)
        finally:
            await asyncio.sleep(0.01)  # its own cleanup: a request's answer, say
            ended.append("reconciliation")

    async def scenario() -> None:
        scheduler.reconcile = reconcile  # type: ignore[method-assign]
        run = asyncio.create_task(scheduler.run())
        await asyncio.sleep(0.01)
        run.cancel()
        await asyncio.gather(run, return_exceptions=True)
        ended.append("loop")

    asyncio.run(scenario())
    assert ended == ["reconciliation", "loop"]


def test_a_reconciliation_cancelled_while_it_waits_for_its_slot_back_gives_back_one() -> None:
    """It gave its slot back while its proof was made, and was cancelled while in line
    for one again: the wait undone, its work's end gave back a slot it did not hold, and
    the limit let one claim more run than it allows."""
    from evc_operator.limiter import Bounds

    async def scenario() -> int:
        scheduler, _ = fakes.make(fakes.FakeApi(fresh_pods=[]), [],
                                  bounds=Bounds(initial=1, minimum=1, maximum=4))
        proof: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        async def reconcile(key: object) -> None:
            await scheduler._unslotted(proof)

        scheduler.reconcile = reconcile  # type: ignore[method-assign]
        scheduler.limit.take()  # as the loop does for the key
        task = asyncio.create_task(scheduler._work(("jobs", "scratch"), None))
        await asyncio.sleep(0)  # its slot given back while it waits for its proof
        scheduler.limit.take()  # another claim takes it
        proof.set_result(None)
        await asyncio.sleep(0)  # in line for a slot again
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        scheduler.limit.release()  # the other claim ends
        return scheduler.limit.in_flight

    assert asyncio.run(scenario()) == 0
