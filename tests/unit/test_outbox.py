"""Events give way to claims waiting for a slot (outbox.py), and only then."""

from __future__ import annotations

import asyncio
import datetime
import logging
from typing import Any

import pytest

from evc_operator import outbox, status
from evc_operator.limiter import Bounds
from evc_operator.outbox import Outbox, Pending
from tests.unit import fakes
from tests.unit.support import settle

AT = datetime.datetime(2026, 12, 5, 12, 0, tzinfo=datetime.UTC)
ONE_SLOT = Bounds(initial=1, minimum=1, maximum=1)


def _pending(reason: str, after: float = 0.0) -> Pending:
    """An Event announced `after` seconds past AT."""
    return Pending("jobs", "scratch", "evc-uid", status.Event("Normal", reason, "said"),
                   AT + datetime.timedelta(seconds=after))


def _claim(name: str) -> dict[str, Any]:
    body = fakes.evc_body()
    body["metadata"].update(name=name, uid=f"uid-{name}")
    return body


def _reasons(pendings: list[Pending]) -> list[str]:
    return [pending.event.reason for pending in pendings]


def test_the_outbox_hands_out_the_oldest_first_and_holds_no_more_than_its_capacity() -> None:
    outbox = Outbox(capacity=2)
    assert outbox.offer(_pending("First")) is None
    assert outbox.offer(_pending("Second")) is None
    third = _pending("Third")
    assert outbox.offer(third) is third  # full: its reconciliation posts it
    assert _reasons(outbox.take(1)) == ["First"]
    assert outbox.offer(third) is None
    assert _reasons(outbox.take(5)) == ["Second", "Third"]
    assert outbox.take(5) == []
    assert outbox.offer(_pending("Fourth")) is None
    assert outbox.drop() == 1
    assert len(outbox) == 0


def test_an_event_that_waited_max_wait_is_handed_out_by_the_next_one_offered() -> None:
    box = Outbox(capacity=4, max_wait=datetime.timedelta(seconds=1))
    assert box.offer(_pending("First")) is None
    assert box.offer(_pending("Second", after=0.5)) is None
    assert box.offer(_pending("Third", after=0.99)) is None  # the oldest not overdue yet
    # A second after the first: the first goes out now, the new one takes a place at the
    # end (even in a full outbox), and the order stays that of the Events.
    overdue = box.offer(_pending("Fourth", after=1.0))
    assert overdue is not None
    assert overdue.event.reason == "First"
    assert box.offer(_pending("Fifth", after=1.2)) is None  # Second waited 0.7 s only
    sixth = _pending("Sixth", after=1.3)
    assert box.offer(sixth) is sixth  # full, and none overdue: posted at once
    assert _reasons(box.take(5)) == ["Second", "Third", "Fourth", "Fifth"]


def _run(bounds: Bounds, claims: list[str], announcing: str,
         monkeypatch: pytest.MonkeyPatch, capacity: int = 10) -> tuple[list[str], Any]:
    """Claims reconciled by the scheduler's loop; `announcing`'s reconciliation announces
    an Event. Returns what happened, in order (reconciliations, and Events posted)."""
    fake = fakes.FakeApi(fresh_pods=[])
    scheduler, _ = fakes.make(fake, [], bounds=bounds)
    scheduler.outbox.capacity = capacity
    fakes.drain(scheduler)
    happened: list[str] = []
    logger = logging.LoggerAdapter(logging.getLogger("test"))

    async def reconcile(key: tuple[str, str]) -> None:
        happened.append(f"reconcile {key[1]}")
        if key[1] == announcing:
            await scheduler.reconciler.announcer.announce(
                fakes.view_of(scheduler, key), status.Event("Normal", "Idle", "said"), logger)
        await asyncio.sleep(0)

    real_post = scheduler.reconciler.announcer.post

    async def post(pending: Pending, logger: Any) -> None:
        happened.append(f"post {pending.event.reason} of {pending.name}")
        await real_post(pending, logger)

    monkeypatch.setattr(scheduler, "reconcile", reconcile)
    monkeypatch.setattr(scheduler.reconciler.announcer, "post", post)
    for name in claims:
        scheduler.observe_evc(None, _claim(name))

    async def scenario() -> None:
        task = asyncio.create_task(scheduler.run())
        await settle()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    asyncio.run(scenario())
    return happened, (scheduler, fake)


def test_while_a_claim_waits_for_a_slot_an_event_waits_for_it(
        monkeypatch: pytest.MonkeyPatch) -> None:
    happened, (scheduler, fake) = _run(ONE_SLOT, ["first", "second"], "first", monkeypatch)
    # Posted with its status write, the Event would have held the only slot while the
    # second claim waited: now the second claim goes first, and the Event after.
    assert happened == ["reconcile first", "reconcile second", "post Idle of first"]
    assert fake.calls == ["event:Idle"]  # posted, once, with its own name
    assert len(scheduler.outbox) == 0


def test_with_no_claim_waiting_an_event_goes_out_with_its_reconciliation(
        monkeypatch: pytest.MonkeyPatch) -> None:
    happened, (_, fake) = _run(ONE_SLOT, ["first"], "first", monkeypatch)
    assert happened == ["reconcile first", "post Idle of first"]
    assert fake.calls == ["event:Idle"]


def test_a_full_outbox_has_the_reconciliation_post_its_event_itself(
        monkeypatch: pytest.MonkeyPatch) -> None:
    happened, _ = _run(ONE_SLOT, ["first", "second"], "first", monkeypatch, capacity=0)
    assert happened == ["reconcile first", "post Idle of first", "reconcile second"]


def test_events_waiting_are_dropped_when_another_replica_leads(
        caplog: pytest.LogCaptureFixture) -> None:
    scheduler, _ = fakes.make(fakes.FakeApi(fresh_pods=[]), [], bounds=ONE_SLOT)
    scheduler.limit.backlogged = True  # claims wait: an Event announced now waits too
    assert asyncio.run(scheduler._defer(_pending("Idle")))
    assert len(scheduler.outbox) == 1
    scheduler.set_active(False)
    assert len(scheduler.outbox) == 0
    assert "1 Events not posted: another replica leads now" in caplog.text


def test_a_warning_never_waits_in_the_outbox() -> None:
    scheduler, _ = fakes.make(fakes.FakeApi(fresh_pods=[]), [], bounds=ONE_SLOT)
    scheduler.limit.backlogged = True
    warning = Pending("jobs", "scratch", "evc-uid",
                      status.Event("Warning", "PvcConflict", "not ours"), AT)
    assert not asyncio.run(scheduler._defer(warning))  # its reconciliation posts it, at once
    assert len(scheduler.outbox) == 0


def test_a_stopping_leader_posts_the_events_that_waited_and_a_follower_none() -> None:
    fake = fakes.FakeApi(fresh_pods=[])
    scheduler, _ = fakes.make(fake, [], bounds=ONE_SLOT)
    scheduler.limit.backlogged = True
    for reason in ("Idle", "Deleted"):
        assert asyncio.run(scheduler._defer(_pending(reason)))
    asyncio.run(scheduler.flush_events(seconds=5))
    assert fake.calls == ["event:Idle", "event:Deleted"]
    assert len(scheduler.outbox) == 0

    scheduler.outbox.offer(_pending("Expiring"))
    scheduler.active = False  # another replica leads: it is not this one's to post
    asyncio.run(scheduler.flush_events(seconds=5))
    assert fake.calls == ["event:Idle", "event:Deleted"]


def test_while_claims_keep_waiting_an_overdue_event_is_posted_in_the_place_of_a_new_one(
) -> None:
    fake = fakes.FakeApi(fresh_pods=[])
    scheduler, _ = fakes.make(fake, [], bounds=ONE_SLOT)
    scheduler.limit.backlogged = True  # claims wait, and go on waiting
    assert asyncio.run(scheduler._defer(_pending("Expiring")))
    assert asyncio.run(scheduler._defer(_pending("InUse", after=0.5)))
    assert fake.calls == []  # nothing overdue yet: both wait
    # The outbox's oldest has waited its MAX_WAIT: the reconciliation that leaves the next
    # Event posts that one, and the order of the Events is kept.
    assert asyncio.run(scheduler._defer(_pending("Idle", after=outbox.MAX_WAIT.total_seconds())))
    assert fake.calls == ["event:Expiring"]
    assert _reasons(scheduler.outbox.take(5)) == ["InUse", "Idle"]
