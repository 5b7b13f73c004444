"""What a replica knows while it does not lead, and keeps for when it leads again
(tracked.TrackedClaim.unseen_end): an end of use the claim's record may lack. Without it,
a claim was deleted on its older record: after a Lease lapsed while status writes were
refused (one replica), or after a takeover from a leader that died before writing the
use its standby saw come and go. The rule (lifecycle.carried_end, with_end_of_use) pure,
then the scheduler with the fakes of tests/unit/fakes.py."""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import datetime

from hypothesis import given
from hypothesis import strategies as st

from evc_operator import errors, lifecycle
from evc_operator.lifecycle import Claim, Phase, PodUse
from evc_operator.scheduler import Scheduler
from evc_operator.tracked import TrackedClaim
from evc_operator.users import PodView, pod_view
from tests.unit.fakes import FakeApi, drain, evc_body, make, pod_body, reconcile_now, sealed
from tests.unit.support import T0, Clock
from tests.unit.test_departed import KEY, at, deadline_of, idle_since, user


def lead_after_standing_by(scheduler: Scheduler, clock: Clock, gone: PodView,
                           leads_at: float) -> TrackedClaim:
    """The user `gone` leaves while this replica stands by; it leads at `leads_at` and
    decides the claim."""
    scheduler.set_active(False)
    scheduler.poke_for_pod("jobs", ["scratch"], (gone, None))
    clock.now = at(leads_at)
    scheduler.set_active(True)
    drain(scheduler)
    reconcile_now(scheduler, KEY)
    claim = scheduler.claims.get(KEY)
    assert claim is not None
    return claim


def deletes(fake: FakeApi) -> list[str]:
    return [call for call in fake.calls if call.startswith("delete")]


# -- the rule ------------------------------------------------------------------------------

PHASES = st.sampled_from([None, *Phase])
SECONDS = st.integers(0, 400)


@given(PHASES, st.one_of(st.none(), SECONDS), SECONDS, st.integers(0, 100),
       st.integers(0, 100), SECONDS)
def test_an_end_kept_from_standing_by_never_makes_a_deadline_earlier(
        phase: Phase | None, since: int | None, end: int, expiry: int, grace: int,
        later: int) -> None:
    """Decided with no user left, the deadline is at least the record's and at least the
    kept end's grace: never earlier than either."""
    recorded = Claim(created=T0, expiry_period=expiry, grace_period=grace,
                     recorded_phase=phase,
                     recorded_unused_since=None if since is None else at(since))
    kept_end = at(1 + end)  # after the claim's creation: a use of it
    now = kept_end + datetime.timedelta(seconds=later)
    plain = lifecycle.decide(recorded, [], now)
    kept = lifecycle.decide(lifecycle.with_end_of_use(recorded, kept_end), [], now)
    assert plain.deletes_at is not None
    assert kept.deletes_at is not None
    assert kept.deletes_at >= plain.deletes_at
    assert kept.deletes_at >= kept_end + datetime.timedelta(seconds=grace)


def test_an_end_the_record_has_already_changes_nothing() -> None:
    recorded = Claim(created=T0, expiry_period=30, grace_period=30,
                     recorded_phase=Phase.IDLE, recorded_unused_since=at(60))
    assert lifecycle.with_end_of_use(recorded, at(50)) is recorded
    assert lifecycle.with_end_of_use(recorded, None) is recorded
    in_use = Claim(created=T0, expiry_period=30, grace_period=30, recorded_phase=Phase.IN_USE)
    assert lifecycle.with_end_of_use(in_use, at(90)) is in_use


def test_what_a_replica_carries_when_it_stops_leading() -> None:
    recorded = Claim(created=at(10), expiry_period=30, grace_period=30,
                     recorded_phase=Phase.IDLE, recorded_unused_since=at(20))
    latest = at(70.4)
    decided_in_use = Claim(created=at(10), expiry_period=30, grace_period=30,
                           recorded_phase=Phase.IN_USE)
    decided_idle = Claim(created=at(10), expiry_period=30, grace_period=30,
                         recorded_phase=Phase.IDLE, recorded_unused_since=at(56))
    # Its own facts, not written: in use until now, or unused since when it decided.
    assert lifecycle.carried_end(recorded, decided_in_use, [], latest) == at(71)
    assert lifecycle.carried_end(recorded, decided_idle, [], latest) == at(56)
    # Written (the same as stored): nothing the record lacks.
    assert lifecycle.carried_end(recorded, recorded, [], latest) is None
    # Users that left: running then, until now; finished after the recorded end, until now
    # too, as a decision now would count it (its node's clock may run behind: a review);
    # finished before it, the second after their end; one that finished before the claim
    # existed, none.
    running = PodUse(name="p", active=True, created=at(30))
    finished = PodUse(name="q", active=False, created=at(30), ended=at(40))
    before = PodUse(name="r", active=False, created=at(1), ended=at(5))
    assert lifecycle.carried_end(recorded, None, [running], latest) == at(71)
    assert lifecycle.carried_end(recorded, None, [finished, before], latest) == at(71)
    covered = dataclasses.replace(recorded, recorded_unused_since=at(60))
    assert lifecycle.carried_end(covered, None, [finished, before], latest) == at(41)
    assert lifecycle.carried_end(recorded, None, [before], latest) is None


# -- the scheduler -------------------------------------------------------------------------


def test_a_lease_lapse_while_writes_are_refused_forgets_no_use() -> None:
    """One replica. Idle since 10 (grace 30: due at 40). A pod uses the claim; the InUse
    write is refused (429s, a webhook), the pod is deleted at about 55, the Idle write
    refused too. The same trouble lapses the Lease; the replica takes it back at once. At
    60 its stored record says due at 40: what it decided and saw (in use until about 56)
    must outweigh that, as it did before the lapse."""
    body = evc_body()
    body["status"] = sealed({"phase": "Idle", "unusedSince": "2026-01-01T00:00:10Z"})
    clock = Clock(T0 + datetime.timedelta(seconds=20))
    fake = FakeApi(fresh_pods=[])
    fake.status_error = errors.Invalid("denied")
    scheduler, index = make(fake, [pod_body("newcomer")], clock=clock, body=body)
    for moment in (20, 56, 56):
        clock.now = at(moment)
        if moment == 56:  # deleted: gone from the index
            gone = pod_view(pod_body("newcomer"))
            index.by_claim[KEY], index.in_namespace["jobs"] = [], []
            scheduler.poke_for_pod("jobs", ["scratch"], (gone, None))
        reconcile_now(scheduler, KEY)
    refusing = scheduler.claims.get(KEY)
    assert refusing is not None
    assert refusing.status_failures == 3
    assert deletes(fake) == []
    scheduler.set_active(False)  # the renewal lapsed...
    scheduler.set_active(True)  # ...and the Lease is taken back
    fake.status_error = None
    clock.now = at(60)
    reconcile_now(scheduler, KEY)
    assert deletes(fake) == []
    assert deadline_of(scheduler) >= at(56 + 30)


def test_a_standby_that_takes_over_keeps_a_use_it_saw_come_and_go() -> None:
    """Idle since 60, sealed, grace 30: due at 90. The leader dies before it writes the
    use of pod p (created at 75); p is deleted at about 85 while this replica stands by,
    and at 92 it leads: the claim is not deleted, its grace counts from p's end."""
    clock = Clock(at(85))
    fake = FakeApi(fresh_pods=[])
    scheduler, _index = make(fake, [], clock=clock, body=idle_since(60))
    scheduler.set_active(False)
    scheduler.poke_for_pod("jobs", ["scratch"], (pod_view(user("p", created=75)), None))
    claim = scheduler.claims.get(KEY)
    assert claim is not None
    assert claim.departed is None  # a standby decides nothing: it keeps one end
    assert claim.unseen_end == at(85)
    clock.now = at(92)
    scheduler.set_active(True)
    drain(scheduler)
    reconcile_now(scheduler, KEY)
    assert deletes(fake) == []
    assert "patch_status:Idle" in fake.calls
    claim = scheduler.claims.get(KEY)
    assert claim is not None
    assert claim.countdown is not None
    assert claim.countdown.deletes_at == at(85 + 30)
    assert claim.unseen_end is None  # decided on: its facts hold it now
    clock.now = at(116)
    reconcile_now(scheduler, KEY)
    assert deletes(fake)


def test_a_standby_keeps_no_end_of_a_user_that_finished_before_the_record() -> None:
    """A pod that finished at 50 and is deleted at 85 (a Job's TTL) ended before the
    record (Idle since 60): taking over, the deadline stays at 90."""
    clock = Clock(at(85))
    fake = FakeApi(fresh_pods=[])
    scheduler, _index = make(fake, [], clock=clock, body=idle_since(60))
    claim = lead_after_standing_by(scheduler, clock,
                                   pod_view(user("p", created=40, finished_at=50)), 89)
    assert claim.countdown is not None
    assert claim.countdown.deletes_at == at(90)


def test_a_write_that_finds_the_lease_lapsed_unannounced_is_tried_again() -> None:
    """The Lease's validity ran out while its renewal's answer was on its way, and the
    renewal then succeeded: `leading()` said no for a moment, `set_active` was never
    called. The claim whose write was stopped then is looked at again, not dropped."""
    fake = FakeApi(fresh_pods=[])  # long past expiry: due
    scheduler, _index = make(fake, [])
    drain(scheduler)
    valid = False
    scheduler.leading = lambda: valid
    scheduler.queue.add(KEY)
    [(key, added)] = scheduler.queue.take()
    asyncio.run(scheduler._work(key, added))
    assert deletes(fake) == []
    assert KEY in scheduler.queue.later  # not dropped: the Lease may still be ours
    valid = True
    asyncio.run(scheduler._work(KEY, None))
    assert deletes(fake)


def test_a_use_kept_from_standing_by_outlives_a_longer_expiry_and_its_shortening() -> None:
    """Recorded Pending, expiry 600 s, grace 30 s. Pod p (created at 75) is deleted at 85
    while this replica stands by; at 92 it leads. The expiry (601) ends later than p's
    grace (115), so the claim stays Pending, and p's end must stay kept: the owner then
    shortens the expiry to 60 s, and at 100 the claim is not deleted (due at 115)."""
    clock = Clock(at(85))
    body = evc_body()
    body["spec"]["expiryPeriod"] = 600
    fake = FakeApi(fresh_pods=[])
    fake.body = copy.deepcopy(body)
    scheduler, _ = make(fake, [], clock=clock, body=body)
    claim = lead_after_standing_by(scheduler, clock, pod_view(user("p", created=75)), 92)
    assert claim.countdown is not None
    assert claim.countdown.deletes_at == at(601)
    edited = copy.deepcopy(fake.evc or fake.body)
    edited["spec"]["expiryPeriod"] = 60
    edited["metadata"]["resourceVersion"] = "30"
    edited["metadata"]["generation"] = 2
    fake.body = copy.deepcopy(edited)
    scheduler.observe_evc("MODIFIED", edited)
    clock.now = at(100)
    reconcile_now(scheduler, KEY)
    assert deletes(fake) == []
    assert claim.countdown is not None
    assert claim.countdown.deletes_at == at(85 + 30)


def test_a_finish_a_standby_saw_counts_from_when_it_saw_it_not_the_nodes_clock() -> None:
    """Idle since 60, grace 30. Pod p, created at 70, finishes at 78 by the API server's
    clock while this replica stands by (the leader stalled); its node's clock is 6 s behind,
    so it reports 72. Deleted at 85; this replica leads at 89. A leader that saw it finish
    counts the grace from 79 (docs/lifecycle.md: the moment it noticed, never the node's
    clock); the standby kept only the node's end, and deleted it at 103 (a review)."""
    clock = Clock(at(70))
    scheduler, _ = make(FakeApi(fresh_pods=[]), [], clock=clock, body=idle_since(60))
    scheduler.set_active(False)
    running = pod_view(user("p", created=70))
    finished = pod_view(user("p", created=70, finished_at=72))
    clock.now = at(78.2)
    scheduler.poke_for_pod("jobs", ["scratch"], (running, finished))
    clock.now = at(85)
    lead_after_standing_by(scheduler, clock, finished, leads_at=89)
    assert deadline_of(scheduler) >= at(79 + 30)


def test_a_finish_a_standby_saw_of_a_user_by_selector_counts_from_then_too() -> None:
    body = idle_since(60)
    body["spec"]["selector"] = {"matchLabels": {"app": "etl"}}
    clock = Clock(at(70))
    scheduler, _ = make(FakeApi(fresh_pods=[]), [], clock=clock, body=body)
    scheduler.set_active(False)
    running = pod_view(user("p", created=70, labels={"app": "etl"}))
    finished = pod_view(user("p", created=70, labels={"app": "etl"}, finished_at=72))
    clock.now = at(78.2)
    scheduler.poke_for_pod("jobs", [], (running, finished))
    clock.now = at(85)
    lead_after_standing_by(scheduler, clock, finished, leads_at=89)
    assert deadline_of(scheduler) >= at(79 + 30)


def test_a_conflict_read_back_keeps_our_unrecorded_end_of_use() -> None:
    """A deletion refused (409) reads the claim back: that read is a view, never the facts
    this process decided and could not write (a review: taken as ours, the stored end of
    use replaced the later one, and a deadline the same change made later came early)."""
    # Stored: Idle since 60, sealed; grace 30 (due 90). This replica stands by; pod p
    # (created 75) is seen to run and go at 85; it leads at 89: Idle since 85, due 115.
    # Its status writes are refused (a policy on the status subresource).
    clock = Clock(at(85))
    fake = FakeApi(fresh_pods=[])
    scheduler, _ = make(fake, [], clock=clock, body=idle_since(60))
    scheduler.set_active(False)
    scheduler.poke_for_pod("jobs", ["scratch"], (pod_view(user("p", created=75)), None))
    clock.now = at(89)
    scheduler.set_active(True)
    fake.status_error = errors.Invalid("denied by policy")
    drain(scheduler)
    reconcile_now(scheduler, KEY)
    assert deadline_of(scheduler) >= at(115)
    assert deletes(fake) == []
    # At 115 the owner raises gracePeriod to 60 s (true deadline: 85 + 60 = 145); the
    # watch has not brought it yet: the deletion is refused with 409; the read brings it.
    changed = idle_since(60)
    changed["metadata"]["resourceVersion"] = "12"
    changed["spec"]["gracePeriod"] = "60s"
    fake.evc = copy.deepcopy(changed)
    real_delete = fake.delete_evc
    conflicts = [errors.Conflict("Conflict")]

    async def delete_once_conflict(namespace: str, name: str, uid: str,
                                   resource_version: str, orphan: bool = False) -> None:
        if conflicts:
            fake.calls.append("delete:conflict")
            raise conflicts.pop()
        await real_delete(namespace, name, uid, resource_version, orphan)

    fake.delete_evc = delete_once_conflict  # type: ignore[method-assign]
    clock.now = at(115)
    reconcile_now(scheduler, KEY)
    assert fake.calls.count("read_evc") >= 1
    # Decided again (again=True): at 125, before the true deadline of 145.
    clock.now = at(125)
    drain(scheduler)
    reconcile_now(scheduler, KEY)
    assert [c for c in deletes(fake) if c != "delete:conflict"] == [], fake.calls


def test_a_finish_a_standby_never_saw_does_not_rest_on_the_nodes_clock() -> None:
    """Idle since 60 (sealed), grace 30. Pod p was created at 75, after the record (a use
    the old leader did not write), truly finished at about 84, its node's clock 6 s behind
    (finishedAt 78). This replica started after it finished, so never saw it finish; p is
    deleted at 86 while it stands by; it leads at 100. Kept by the node's clock, the end
    was 79, the deadline 109, before the true one; a leader finding p counts from when it
    sees it (a review)."""
    clock = Clock(at(86))
    scheduler, _index = make(FakeApi(fresh_pods=[]), [], clock=clock, body=idle_since(60))
    lead_after_standing_by(scheduler, clock, pod_view(user("p", created=75, finished_at=78)),
                           100)
    assert deadline_of(scheduler) >= at(86 + 30)
