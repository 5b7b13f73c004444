"""Fresh views of a namespace's pods: shared lists, proofs made ahead, and their limits."""

from __future__ import annotations

import asyncio
import datetime
from typing import Any

import pytest

from evc_operator import errors, metrics
from evc_operator.freshness import Freshness, FreshPods, PodList, PodSnapshot
from evc_operator.users import pod_view
from tests.unit.fakes import pod_body
from tests.unit.support import T0, Clock, settle


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
            raise errors.ApiException(status=503, reason="Service Unavailable")
        return PodSnapshot([pod_view({"metadata": {
            "name": f"list-{number}", "namespace": namespace,
            "creationTimestamp": "2026-01-01T00:00:00Z"}})], live=lambda: self.live)

    def finish(self, number: int) -> None:
        self.release[number].set_result(None)


def _fresh() -> tuple[FakeLister, Clock, FreshPods]:
    lister, clock = FakeLister(), Clock()
    return lister, clock, FreshPods(lister, clock)


def _names(result: Any) -> list[str]:
    return [pod.name for pod in result.pods]


def test_requests_made_together_share_one_list() -> None:
    async def scenario() -> None:
        lister, _, fresh = _fresh()
        waiting = [asyncio.create_task(fresh.get("jobs", T0)) for _ in range(5)]
        await settle()
        lister.finish(1)
        results = await asyncio.gather(*waiting)
        assert lister.started == ["jobs"]
        assert all(_names(result) == ["list-1"] for result in results)

    asyncio.run(scenario())


def test_a_request_that_a_list_in_flight_cannot_serve_starts_its_own_at_once() -> None:
    # The list in flight began before the deadline asked about: it serves nothing that
    # waits for it, and the next deadline's claims must not wait for two lists.
    async def scenario() -> None:
        lister, clock, fresh = _fresh()
        first = asyncio.create_task(fresh.get("jobs", T0))
        await settle()
        assert lister.started == ["jobs"]  # list 1 in flight
        due = clock.advance(1)
        later = [asyncio.create_task(fresh.get("jobs", due)) for _ in range(3)]
        await settle()
        assert lister.started == ["jobs", "jobs"]  # one more list, for all three, now
        lister.finish(2)
        assert all(_names(result) == ["list-2"] for result in await asyncio.gather(*later))
        assert not first.done()
        lister.finish(1)
        assert _names(await first) == ["list-1"]
        # List 2 is still the latest done although list 1 ended after it.
        assert _names(await fresh.get("jobs", due)) == ["list-2"]
        assert lister.started == ["jobs", "jobs"]

    asyncio.run(scenario())


async def _proven_ahead(live: bool) -> tuple[FakeLister, Clock, FreshPods]:
    """A proof prefetched at T0 and finished (list 1), live or not."""
    lister, clock, fresh = _fresh()
    lister.live = live
    fresh.prefetch("jobs", not_before=T0)
    await settle()
    lister.finish(1)
    await settle()
    return lister, clock, fresh


def test_a_live_proof_begun_at_the_deadline_serves_the_deletions_due_then() -> None:
    async def scenario() -> None:
        lister, _, fresh = await _proven_ahead(True)
        fresh.prefetch("jobs", not_before=T0)  # one begun that late is there: no second
        results = await asyncio.gather(*(fresh.get("jobs", T0) for _ in range(3)))
        # The live index is proven current: it decides, not the proof's older copy.
        assert results == [None, None, None]
        assert lister.started == ["jobs"]

    asyncio.run(scenario())


def test_a_finished_proof_serves_while_one_for_a_later_deadline_is_in_flight() -> None:
    async def scenario() -> None:
        lister, clock, fresh = await _proven_ahead(False)
        fresh.prefetch("jobs", not_before=clock.advance(1))  # for the next deadline
        await settle()
        assert lister.started == ["jobs", "jobs"]  # list 2 in flight
        decision = asyncio.create_task(fresh.get("jobs", T0))  # due at T0
        await settle()
        assert decision.done()  # not held up by list 2
        assert _names(decision.result()) == ["list-1"]
        lister.finish(2)
        await settle()

    asyncio.run(scenario())


@pytest.mark.parametrize("live", [True, False])
def test_a_proof_begun_before_the_deadline_serves_no_deletion_however_live(
        live: bool) -> None:
    # Its informer's unbroken watch brings later changes eventually, not by the deadline.
    async def scenario() -> None:
        lister, clock, fresh = await _proven_ahead(live)
        deadline = T0 + datetime.timedelta(seconds=1)
        clock.now = deadline
        decision = asyncio.create_task(fresh.get("jobs", deadline))
        await settle()
        assert lister.started == ["jobs", "jobs"]  # a list begun at the deadline
        lister.finish(2)
        result = await decision
        if live:
            assert result is None  # the live index, proven current after the deadline
        else:
            assert _names(result) == ["list-2"]

    asyncio.run(scenario())


def test_a_prefetch_starts_a_list_unless_one_begun_late_enough_is_there() -> None:
    async def scenario() -> None:
        lister, clock, fresh = _fresh()
        fresh.prefetch("jobs", not_before=T0)
        await settle()
        fresh.prefetch("jobs", not_before=T0)  # list 1 serves that deadline
        await settle()
        assert lister.started == ["jobs"]
        fresh.prefetch("jobs", not_before=clock.advance(1))  # list 1 began too early
        await settle()
        assert lister.started == ["jobs", "jobs"]
        lister.finish(1)
        lister.finish(2)
        await settle()
        fresh.forget_older_than(clock.advance(10))
        fresh.prefetch("jobs", not_before=T0)  # nothing held any more: a list again
        await settle()
        assert lister.started == ["jobs", "jobs", "jobs"]
        fresh.close()

    asyncio.run(scenario())


def test_namespaces_are_listed_independently() -> None:
    async def scenario() -> None:
        lister, _, fresh = _fresh()
        jobs = asyncio.create_task(fresh.get("jobs", T0))
        await settle()
        other = asyncio.create_task(fresh.get("other", T0))
        await settle()
        assert lister.started == ["jobs", "other"]
        lister.finish(2)
        assert _names(await other) == ["list-2"]
        assert not jobs.done()
        lister.finish(1)
        assert _names(await jobs) == ["list-1"]

    asyncio.run(scenario())


def test_a_failed_list_fails_its_wave_only_and_a_cancelled_waiter_only_itself() -> None:
    async def scenario() -> None:
        lister, clock, fresh = _fresh()
        lister.fail.add(1)
        failing = [asyncio.create_task(fresh.get("jobs", T0)) for _ in range(2)]
        await settle()
        decided = clock.advance(1)
        later = [asyncio.create_task(fresh.get("jobs", decided)) for _ in range(2)]
        await settle()
        later[0].cancel()
        lister.finish(1)
        for task in failing:
            with pytest.raises(errors.ApiException):
                await task
        await settle()
        lister.finish(2)
        assert _names(await later[1]) == ["list-2"]
        assert later[0].cancelled()
        assert lister.started == ["jobs", "jobs"]

    asyncio.run(scenario())


def test_closing_cancels_lists_and_waiters() -> None:
    async def scenario() -> None:
        _, clock, fresh = _fresh()
        first = asyncio.create_task(fresh.get("jobs", T0))
        await settle()
        queued = asyncio.create_task(fresh.get("jobs", clock.advance(1)))
        await settle()
        fresh.close()
        await settle()
        assert first.cancelled()
        assert queued.cancelled()

    asyncio.run(scenario())




def test_a_deletion_decided_late_is_served_by_the_proof_begun_at_its_own_deadline() -> None:
    # A backlog delays the decision past the next whole second: the proof begun at the
    # claim's deadline still serves it; it does not wait for a later one.
    async def scenario() -> None:
        lister, clock, fresh = _fresh()
        proofs = Freshness(lambda namespace: True, lister, clock)
        proofs.pods = fresh
        proofs.pods_view_complete = True
        proofs.prepare("jobs", T0)
        await settle()
        lister.finish(1)
        clock.advance(1.5)
        assert _names(await proofs.for_deletion("jobs", T0)) == ["list-1"]
        assert lister.started == ["jobs"]
        # A deletion due later than the proof began is not served by it.
        due = T0 + datetime.timedelta(seconds=1)
        later = asyncio.create_task(proofs.for_deletion("jobs", due))
        await settle()
        assert lister.started == ["jobs", "jobs"]
        lister.finish(2)
        assert _names(await later) == ["list-2"]

    asyncio.run(scenario())


class _CountedPods(list[Any]):
    """A snapshot's pods that count how often they are read whole."""

    reads = 0

    def __iter__(self) -> Any:
        self.reads += 1
        return super().__iter__()


def test_a_views_pods_by_claim_are_built_only_when_asked_and_once() -> None:
    pods = _CountedPods([pod_view(pod_body(name)) for name in ("a", "b")])
    view = PodList.of(PodSnapshot(pods, live=lambda: True))
    assert pods.reads == 0  # a proof still live is served by the live index
    assert view.live()
    assert [pod.name for pod in view.by_claim["scratch"]] == ["a", "b"]
    assert [pod.name for pod in view.pods] == ["a", "b"]
    assert view.by_claim.get("other", ()) == ()
    assert pods.reads == 1


def _proofs_counted() -> float:
    return metrics.REGISTRY.get_sample_value("evc_proof_seconds_count") or 0.0


def test_each_proof_made_is_counted_in_its_histogram_and_a_failed_one_is_not() -> None:
    async def scenario() -> None:
        lister, clock, fresh = _fresh()
        lister.fail.add(1)
        before = _proofs_counted()
        failing = asyncio.create_task(fresh.get("jobs", T0))
        await settle()
        lister.finish(1)
        with pytest.raises(errors.ApiException):
            await failing
        assert _proofs_counted() == before
        made = asyncio.create_task(fresh.get("jobs", clock.advance(1)))
        await settle()
        lister.finish(2)
        await made
        assert _proofs_counted() == before + 1

    asyncio.run(scenario())
