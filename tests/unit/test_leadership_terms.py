"""Work begun in one leadership term writes nothing in a later one (gate.Term): a
reconciliation waiting for its deletion's proof while this replica's Lease lapses and is
taken back at once (its holder may) holds the record the scheduler replaced meanwhile;
a user that left in between is on the new record only (a review)."""

from __future__ import annotations

import asyncio
import datetime

from evc_operator.freshness import PodSnapshot
from evc_operator.gate import Term
from evc_operator.users import pod_view
from tests.unit.fakes import NOW, FakeApi, make, pod_body, work_once
from tests.unit.support import Clock
from tests.unit.test_departed import KEY, at, idle_since, user


def writes(lapse: bool) -> list[str]:
    clock = Clock(at(90))  # Idle since 60, grace 30: due at 90
    fake = FakeApi(fresh_pods=[])
    proof = asyncio.Event()

    asked = asyncio.Event()

    async def lister(namespace: str) -> PodSnapshot:
        asked.set()
        await proof.wait()
        return PodSnapshot([], live=lambda: True)  # the informer applied all it saw

    scheduler, index = make(fake, [], clock=clock, body=idle_since(60), lister=lister)
    p = pod_view(user("p", created=89))  # created before the deadline: a user

    async def scenario() -> None:
        work = asyncio.create_task(scheduler.reconcile(KEY))
        await asked.wait()  # the proof is under way
        # The informer, lagging, now sees p, running...
        index.by_claim[KEY], index.in_namespace["jobs"] = [p], [p]
        scheduler.poke_for_pod("jobs", ["scratch"], (None, p))
        clock.now = at(90.5)
        if lapse:
            scheduler.set_active(False)  # a renewal answered late: its validity ended
        # ...and deleted at 90.5 while it ran.
        index.by_claim[KEY], index.in_namespace["jobs"] = [], []
        scheduler.poke_for_pod("jobs", ["scratch"], (p, None))
        if lapse:
            scheduler.set_active(True)  # the holder takes its own Lease back at once
        proof.set()
        try:
            await work
        except Exception as error:
            fake.calls.append(type(error).__name__)

    asyncio.run(scenario())
    return [call for call in fake.calls if call.startswith(("delete", "NotLeading"))]


def test_without_a_lapse_the_user_that_left_keeps_the_claim() -> None:
    assert writes(lapse=False) == []


def test_work_begun_before_a_lapse_and_a_regain_deletes_nothing() -> None:
    assert writes(lapse=True) == ["NotLeading"]


def test_a_term_holds_for_work_begun_in_it_and_for_work_begun_in_none() -> None:
    term, other = Term(), Term()
    assert term.holds()
    with term.begun():
        assert term.holds()
        assert other.holds()
        other.next()
        assert other.holds()  # its own term was not begun here
        term.next()
        assert not term.holds()
    assert term.holds()


def test_work_begun_before_a_lapse_and_a_regain_leaves_no_event_to_post_later() -> None:
    """While claims wait for slots a Normal Event waits in the outbox, which the loop
    posts later in no term of its own: the stale work's Event would go out, its status
    write refused (a review). Not left there: posted at once, and so refused."""
    clock = Clock(at(90))  # Idle since 60, grace 30: due at 90
    fake = FakeApi(fresh_pods=[])
    proof, asked = asyncio.Event(), asyncio.Event()
    p = pod_view(user("p", created=89))  # running: the proof sees it

    async def lister(namespace: str) -> PodSnapshot:
        asked.set()
        await proof.wait()
        return PodSnapshot([p], live=lambda: True)

    scheduler, index = make(fake, [], clock=clock, body=idle_since(60), lister=lister)

    async def scenario() -> None:
        work = asyncio.create_task(scheduler.reconcile(KEY))
        await asked.wait()
        scheduler.set_active(False)
        scheduler.set_active(True)
        scheduler.limit.backlogged = True  # claims wait for slots: Normal Events wait
        index.by_claim[KEY], index.in_namespace["jobs"] = [p], [p]
        proof.set()
        try:
            await work
        except Exception as error:
            fake.calls.append(type(error).__name__)
        for pending in scheduler.outbox.take(len(scheduler.outbox)):  # as the loop does
            await scheduler._post_now(pending)

    asyncio.run(scenario())
    assert "NotLeading" in fake.calls
    assert not [call for call in fake.calls if call.startswith("event:")]


def test_a_transition_refused_as_not_leading_is_told_once_leading_again() -> None:
    """The Lease lapsed for a moment while held: the InUse write and its Event were both
    refused. Written on the next try, the Event was not sent: the phase decided before
    the refused write was taken as told."""
    clock = [NOW]
    fake = FakeApi(fresh_pods=[])
    scheduler, _ = make(fake, [pod_body("a")], clock=lambda: clock[0])
    leading = [False]
    scheduler.leading = lambda: leading[0]
    work_once(scheduler)
    assert "patch_status:InUse" not in fake.calls
    leading[0] = True
    clock[0] = NOW + datetime.timedelta(seconds=1)
    work_once(scheduler)
    assert fake.calls.count("patch_status:InUse") == 1
    assert fake.calls.count("event:InUse") == 1
