"""A status someone else wrote never makes a deletion earlier (issue 18).

The facts a deadline rests on (phase, unusedSince) are believed after a restart only if
the operator sealed them (seal.py); otherwise `lifecycle.believed` takes them the later
way. Checked on the pure core (every forged record against every genuine one) and through
the reconciler as it runs after a start.
"""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from evc_operator import seal
from evc_operator.errors import ApiException
from evc_operator.lifecycle import Claim, Phase, PodUse, believed, decide
from evc_operator.scheduler import Scheduler
from evc_operator.timestamps import format_time
from tests.unit.fakes import NOW, FakeApi, evc_body, make, pod_body, reconcile_now, sealed
from tests.unit.support import T0, Clock
from tests.unit.test_refusals import quota_refusal

KEY = b"k" * 32
SECONDS = st.integers(0, 400)


def at(seconds: float) -> datetime.datetime:
    return T0 + datetime.timedelta(seconds=seconds)


def record(phase: Phase | None, since: float | None) -> dict[str, object]:
    return {"phase": phase, "since": None if since is None else at(since)}


PHASES = st.sampled_from([None, *Phase])
USERS = st.lists(st.builds(
    PodUse, name=st.sampled_from(["a", "b", "c"]), active=st.booleans(),
    created=SECONDS.map(at), ended=st.one_of(st.none(), SECONDS.map(at))), max_size=3)


@settings(max_examples=2000, deadline=None)
@given(expiry=SECONDS, grace=SECONDS, now=SECONDS, users=USERS,
       forged_phase=PHASES, forged_since=st.one_of(st.none(), st.integers(-10**6, 10**6)),
       true_phase=PHASES, true_since=st.one_of(st.none(), SECONDS))
def test_an_unverified_record_never_moves_a_deadline_earlier(
        expiry: int, grace: int, now: int, users: list[PodUse], forged_phase: Phase | None,
        forged_since: int | None, true_phase: Phase | None, true_since: int | None) -> None:
    """Whatever the operator truly recorded (any phase, any end of use up to now), a
    forged record, not verified, gives a deadline no earlier than the true record would:
    after a restart, the users are as observed, none of them seen before."""
    base = Claim(created=T0, expiry_period=expiry, grace_period=grace)
    true_since = None if true_since is None else min(true_since, now)
    genuine = dataclasses.replace(base, recorded_phase=true_phase,
                                  recorded_unused_since=None if true_since is None
                                  else at(true_since))
    forged = dataclasses.replace(base, recorded_phase=forged_phase,
                                 recorded_unused_since=None if forged_since is None
                                 else at(forged_since))
    truth = decide(genuine, users, at(now))
    taken = decide(believed(forged, verified=False, now=at(now)), users, at(now))
    if truth.deletes_at is None:  # in use, or kept: no deadline either way
        assert taken.deletes_at is None
    else:
        assert taken.deletes_at is not None
        assert taken.deletes_at >= truth.deletes_at


@given(phase=PHASES, since=st.one_of(st.none(), SECONDS), now=SECONDS)
def test_a_verified_record_is_taken_as_it_is(phase: Phase | None, since: int | None,
                                             now: int) -> None:
    claim = Claim(created=T0, expiry_period=30, grace_period=60, recorded_phase=phase,
                  recorded_unused_since=None if since is None else at(since))
    assert believed(claim, verified=True, now=at(now)) is claim


def test_an_unverified_record_counts_the_later_of_expiry_and_grace_from_now() -> None:
    forged = Claim(created=T0, expiry_period=600, grace_period=30,
                   recorded_phase=Phase.IDLE, recorded_unused_since=at(-10**6))
    # Never used: 601 s from creation is later than now + 30 s.
    assert decide(believed(forged, verified=False, now=at(100)), [], at(100)).deletes_at \
        == at(601)
    # Now + 30 s is later: as if its last user had just ended.
    decision = decide(believed(forged, verified=False, now=at(590.5)), [], at(590.5))
    assert (decision.phase, decision.deletes_at) == (Phase.IDLE, at(621))


def test_a_seal_binds_the_key_the_claim_both_facts_and_its_moment() -> None:
    stored = seal.seal(KEY, "uid-1", "Idle", at(10), at(12))
    assert seal.sealed_at(stored) == at(12)
    assert seal.verify(KEY, "uid-1", "Idle", at(10), stored)
    assert not seal.verify(b"x" * 32, "uid-1", "Idle", at(10), stored)
    assert not seal.verify(KEY, "uid-2", "Idle", at(10), stored)  # copied from another claim
    assert not seal.verify(KEY, "uid-1", "Pending", at(10), stored)
    assert not seal.verify(KEY, "uid-1", "Idle", at(9), stored)
    assert not seal.verify(KEY, "uid-1", "Idle", at(10), None)
    assert not seal.verify(KEY, "uid-1", "Idle", at(10), "v1:" + "0" * 64)  # older version
    later = stored.replace(format_time(at(12), micro=True), format_time(at(99), micro=True))
    assert seal.sealed_at(later) == at(99)
    assert not seal.verify(KEY, "uid-1", "Idle", at(10), later)


def test_a_record_is_in_time_only_if_written_within_the_tolerance_of_its_seal() -> None:
    stored = seal.seal(KEY, "uid-1", "Pending", None, at(10.5))
    assert seal.written_in_time(stored, at(10))  # the stamp is cut to the second
    assert seal.written_in_time(stored, at(10.5) + seal.TOLERANCE)
    assert not seal.written_in_time(stored, at(11) + seal.TOLERANCE)
    assert seal.written_in_time(stored, None)  # no stamp: managedFields reset by an editor
    assert not seal.written_in_time("v1:" + "0" * 64, at(10))


FACTS = st.sampled_from([("Pending", None), ("InUse", None), ("Idle", at(5)), ("Idle", at(9))])


@settings(max_examples=2000, deadline=None)
@given(writes=st.lists(st.tuples(st.floats(0, 12), FACTS, st.floats(0, 0.999),
                                 st.booleans()),
                       min_size=2, max_size=8),
       after=st.floats(0.001, 30))
def test_no_superseded_record_put_back_after_the_operators_writes_is_in_time(
        writes: list[tuple[float, tuple[str, datetime.datetime | None], float, bool]],
        after: float) -> None:
    """The operator writes records (facts changing at any pace; each lands within a second
    of its sealing) and, as `seal.confirm_after` asks, writes one once more. It may stop
    before any step (a restart, a change of leader): the process after it knows no
    confirmation due, only the record it finds, and confirms it as `seal.confirm_found`
    says (it stops at once: a confirmation due meanwhile is lost). Any record superseded
    that would make a deadline earlier (not one in use, not the same facts as the last),
    put back after all the writes and after the last process found the record it found,
    is written too late to be believed. (One put back before a process that stopped
    could read it back, and found by the next: nothing tells it from a genuine record;
    while that process runs, the facts it decided last stand: `lifecycle.trusted`.)"""
    records: list[tuple[tuple[str, datetime.datetime | None], float, float]] = []
    moment, confirm, last, found = 0.0, None, None, 0.0

    def write(facts: tuple[str, datetime.datetime | None], sealed: float,
              latency: float) -> None:
        nonlocal confirm, last
        previous = records[-1][0] if records else None
        if previous is not None:
            again = seal.confirm_after(previous, facts, last, at(sealed))
            if again is not None:
                confirm = max(again, confirm or again)
        records.append((facts, sealed, sealed + latency))
        last = at(sealed)

    for gap, facts, latency, restarted in writes:
        moment += gap
        if restarted and records:  # what the process knew is gone; the record is not
            confirm, found = seal.confirm_found(at(records[-1][1]), at(moment)), moment
        if confirm is not None and confirm <= at(moment):
            due, confirm = (confirm - T0).total_seconds(), None
            write(records[-1][0], due, latency)
        if not records or records[-1][0] != facts:
            write(facts, moment, latency)
    if confirm is not None:
        write(records[-1][0], (confirm - T0).total_seconds(), 0.5)
    final, _, landed = records[-1]
    # The stamp, cut to the second.
    put_back = at(max(landed, found) + after).replace(microsecond=0)
    for facts, sealed_then, _ in records[:-1]:
        if facts != final and facts[0] != "InUse":
            stored = seal.seal(KEY, "uid", *facts, at(sealed_then))
            assert not seal.written_in_time(stored, put_back), (facts, sealed_then, put_back)


def test_a_record_superseded_soon_after_its_seal_is_written_once_more_later() -> None:
    pending, in_use = ("Pending", None), ("InUse", None)
    assert seal.confirm_after(pending, in_use, at(10), at(11)) == at(10) + seal.SPACING
    assert seal.confirm_after(pending, in_use, at(10), at(10) + seal.SPACING) is None
    assert seal.confirm_after(("Idle", at(5)), ("Idle", at(9)), at(10), at(11)) is not None
    # Put back, a record in use counts from when it is read: later, never earlier.
    assert seal.confirm_after(in_use, ("Idle", at(9)), at(10), at(11)) is None
    assert seal.confirm_after(pending, pending, at(10), at(11)) is None  # same facts
    assert seal.confirm_after(pending, in_use, None, at(11)) is None  # nothing sealed before


# Through the reconciler, as it runs after a start: nothing decided by this process yet.

KEY_OF_CLAIM = ("jobs", "scratch")


def after_a_start(status: dict[str, object] | None, *, own_pvc: bool = True,
                  written: datetime.datetime | None = None) -> tuple[Scheduler, FakeApi]:
    """The claim with this stored status (None: none at all), reconciled once by a process
    that has decided nothing yet; its own PVC indexed unless `own_pvc` is false; its
    status last written at `written` as managedFields stamp it (None: no stamp)."""
    body = evc_body()
    if status is None:
        del body["status"]
    else:
        body["status"] = status
    if written is not None:
        body["metadata"]["managedFields"] = [
            {"manager": "kubectl", "operation": "Update", "time": "2025-12-31T00:00:00Z"},
            {"manager": "evc", "operation": "Update", "subresource": "status",
             "time": format_time(written)}]
    fake = FakeApi(fresh_pods=[])
    reconciler, index = make(fake, [], body=body)
    if not own_pvc:
        del index.pvcs[KEY_OF_CLAIM]
    reconcile_now(reconciler, KEY_OF_CLAIM)
    return reconciler, fake


def deleted(fake: FakeApi) -> bool:
    return any(call.startswith("delete") for call in fake.calls)


def test_after_a_start_a_forged_idle_status_does_not_delete() -> None:
    reconciler, fake = after_a_start({"phase": "Idle", "unusedSince": "2000-01-01T00:00:00Z"})
    assert not deleted(fake)
    claim = reconciler.claims.get(KEY_OF_CLAIM)
    assert claim is not None
    assert claim.countdown is not None
    assert claim.countdown.deletes_at == NOW + datetime.timedelta(seconds=30)
    # The facts written back are sealed: the next start resumes them exactly.
    written = claim.view.status
    assert written["unusedSince"] == format_time(NOW)
    assert seal.verify(b"", "evc-uid", "Idle", NOW, written["seal"])


def test_after_a_start_a_sealed_idle_status_resumes_exactly() -> None:
    _, fake = after_a_start(sealed({"phase": "Idle", "unusedSince": "2026-01-01T00:00:10Z"}))
    assert "delete:evc-uid:10" in fake.calls  # 00:00:10 + 30 s grace is long past


def test_a_seal_from_another_claim_is_not_believed() -> None:
    reconciler, fake = after_a_start(sealed(
        {"phase": "Idle", "unusedSince": "2026-01-01T00:00:10Z"}, uid="another-claim"))
    assert not deleted(fake)
    # The later way: grace from now, not from the record's 00:00:10.
    assert _deadline(reconciler) == NOW + datetime.timedelta(seconds=30)


def test_a_cleared_status_of_a_claim_with_its_pvc_counts_the_later_way() -> None:
    reconciler, fake = after_a_start(None)  # its own PVC exists: it is not new
    assert not deleted(fake)
    assert _deadline(reconciler) == NOW + datetime.timedelta(seconds=30)


def _deadline(reconciler: Scheduler) -> datetime.datetime | None:
    claim = reconciler.claims.get(KEY_OF_CLAIM)
    assert claim is not None
    assert claim.countdown is not None
    return claim.countdown.deletes_at


def test_a_new_claim_without_status_or_pvc_expires_from_its_creation() -> None:
    _, fake = after_a_start(None, own_pvc=False)
    assert fake.calls[0] == "create_pvc"
    assert "delete:evc-uid:10" in fake.calls  # created at T0, 30 s expiry: due at NOW


def test_after_a_start_a_genuine_record_written_in_time_resumes_exactly() -> None:
    stored = sealed({"phase": "Idle", "unusedSince": "2026-01-01T00:00:10Z"}, at=at(11))
    _, fake = after_a_start(stored, written=at(13))
    assert "delete:evc-uid:10" in fake.calls  # 00:00:10 + 30 s grace is long past


def test_after_a_start_a_genuine_record_written_later_counts_the_later_way() -> None:
    """Sealed at 00:00:11 but written at 00:01:00 (put back, perhaps while the claim was in
    use): not believed. As if used until now (00:01:40): 30 s of grace from then."""
    stored = sealed({"phase": "Idle", "unusedSince": "2026-01-01T00:00:10Z"}, at=at(11))
    reconciler, fake = after_a_start(stored, written=at(60))
    assert not deleted(fake)
    claim = reconciler.claims.get(KEY_OF_CLAIM)
    assert claim is not None
    assert claim.countdown is not None
    assert claim.countdown.deletes_at == NOW + datetime.timedelta(seconds=30)
    assert claim.view.status["unusedSince"] == format_time(NOW)  # sealed again, as is


def _a_use_soon_after_pending(fake: FakeApi) -> tuple[Scheduler, list[datetime.datetime],
                                                       datetime.datetime]:
    """Pending sealed at NOW - 1 s, then a user: InUse is written at once, and its
    confirmation is due once `SPACING` has passed since that seal."""
    body = evc_body()
    body["status"] = sealed(body["status"], at=NOW - datetime.timedelta(seconds=1))
    clock = [NOW]
    reconciler, _ = make(fake, [pod_body("user")], body=body, clock=lambda: clock[0])
    reconcile_now(reconciler, KEY_OF_CLAIM)
    assert fake.calls.count("patch_status:InUse") == 1
    claim = reconciler.claims.get(KEY_OF_CLAIM)
    assert claim is not None
    due = NOW - datetime.timedelta(seconds=1) + seal.SPACING
    assert claim.confirm_after == due
    clock[0] = due - datetime.timedelta(seconds=0.5)
    reconcile_now(reconciler, KEY_OF_CLAIM)
    assert fake.calls.count("patch_status:InUse") == 1  # not yet
    assert "read_evc" not in fake.calls
    return reconciler, clock, due


def test_a_use_recorded_soon_after_the_last_seal_is_confirmed_by_a_read() -> None:
    """Once `SPACING` has passed since the Pending seal, the API server still holds the
    InUse record as written: a Pending record put back from then on is written too late to
    be believed, so the record is read, not written again."""
    fake = FakeApi(fresh_pods=[])
    reconciler, clock, due = _a_use_soon_after_pending(fake)
    clock[0] = due
    reconcile_now(reconciler, KEY_OF_CLAIM)
    assert fake.calls.count("read_evc") == 1
    assert fake.calls.count("patch_status:InUse") == 1
    claim = reconciler.claims.get(KEY_OF_CLAIM)
    assert claim is not None
    assert claim.confirm_after is None
    clock[0] = due + datetime.timedelta(seconds=10)
    reconcile_now(reconciler, KEY_OF_CLAIM)
    assert fake.calls.count("read_evc") == 1  # nothing more to confirm
    assert fake.calls.count("patch_status:InUse") == 1


def _put_back(fake: FakeApi) -> None:
    assert fake.evc is not None
    fake.evc["status"] = sealed(evc_body()["status"], at=NOW - datetime.timedelta(seconds=1))


def _read_fails(fake: FakeApi) -> None:
    fake.read_error = ApiException(503, "Service Unavailable")


@pytest.mark.parametrize("meanwhile", [_put_back, _read_fails],
                         ids=["the Pending record put back", "the read fails"])
def test_a_record_not_seen_to_stand_is_written_once_more(
        meanwhile: Callable[[FakeApi], None]) -> None:
    """Someone put the Pending record back before the moment (it would still be believed),
    or the read cannot tell: the InUse record is written once more, sealed at the moment,
    and nothing is due after."""
    fake = FakeApi(fresh_pods=[])
    reconciler, clock, due = _a_use_soon_after_pending(fake)
    meanwhile(fake)
    clock[0] = due
    reconcile_now(reconciler, KEY_OF_CLAIM)
    assert fake.calls.count("read_evc") == 1
    assert fake.calls.count("patch_status:InUse") == 2
    claim = reconciler.claims.get(KEY_OF_CLAIM)
    assert claim is not None
    assert seal.sealed_at(claim.view.stored_seal) == due
    assert claim.confirm_after is None
    clock[0] = due + datetime.timedelta(seconds=10)
    reconcile_now(reconciler, KEY_OF_CLAIM)
    assert fake.calls.count("patch_status:InUse") == 2


def test_a_record_sealed_moments_before_a_start_is_confirmed_as_its_writer_would_have() -> None:
    """The process that sealed the InUse record (over a Pending one sealed moments before)
    stopped before its confirmation was due: a leader that died, or this one before a
    restart. The process after it cannot tell what the record superseded, so it confirms
    the young record itself once `SPACING` has passed since its seal: a Pending record
    put back before then would still be believed after yet another start."""
    fake = FakeApi(fresh_pods=[])
    first, _ = make(fake, [pod_body("user")])
    reconcile_now(first, KEY_OF_CLAIM)  # sealed InUse at NOW
    assert fake.calls.count("patch_status:InUse") == 1
    assert fake.evc is not None
    clock = [NOW + datetime.timedelta(seconds=2)]  # another process, 2 s later
    fake.calls.clear()
    second, _ = make(fake, [pod_body("user")], body=fake.evc, clock=lambda: clock[0])
    reconcile_now(second, KEY_OF_CLAIM)
    assert fake.calls == []  # the record stands as it is: nothing written
    claim = second.claims.get(KEY_OF_CLAIM)
    assert claim is not None
    due = NOW + seal.SPACING
    assert claim.confirm_after == due
    clock[0] = due
    reconcile_now(second, KEY_OF_CLAIM)
    assert fake.calls == ["read_evc"]  # still as written: read, not written again
    assert claim.confirm_after is None


def test_a_record_sealed_long_before_a_start_needs_no_confirmation() -> None:
    fake = FakeApi(fresh_pods=[])
    first, _ = make(fake, [pod_body("user")])
    reconcile_now(first, KEY_OF_CLAIM)
    assert fake.evc is not None
    fake.calls.clear()
    later = NOW + seal.SPACING
    second, _ = make(fake, [pod_body("user")], body=fake.evc, clock=lambda: later)
    reconcile_now(second, KEY_OF_CLAIM)
    claim = second.claims.get(KEY_OF_CLAIM)
    assert claim is not None
    assert claim.confirm_after is None
    assert fake.calls == []


@pytest.mark.parametrize("has_pvc", [True, False])
def test_a_record_taken_out_of_a_claim_without_its_pvc_is_not_taken_for_a_new_claim(
        has_pvc: bool) -> None:
    """Row 40 of docs/bad-input.md on a claim whose PVC was refused (a quota): a status
    writer takes `phase`, `unusedSince` and `seal` out while no operator runs. With no
    phase and no PVC of its own, it was taken for a new claim and its expiry counted from
    its creation: deleted at once, its hour of grace lost (a review). Counted the later
    way, as with its PVC."""
    body = evc_body()
    body["spec"]["gracePeriod"] = "1h"
    body["status"] = {"conditions": []}  # what is left of it
    fake = FakeApi(fresh_pods=[])
    fake.create_error = quota_refusal()
    scheduler, index = make(fake, [], clock=Clock(T0 + datetime.timedelta(seconds=600)),
                            body=body)
    if not has_pvc:
        index.pvcs.clear()
    reconcile_now(scheduler, ("jobs", "scratch"))
    assert not [call for call in fake.calls if call.startswith("delete")]
    claim = scheduler.claims.get(("jobs", "scratch"))
    assert claim is not None
    assert claim.countdown is not None
    assert claim.countdown.deletes_at is not None
    assert claim.countdown.deletes_at >= T0 + datetime.timedelta(seconds=600 + 3600)


def test_a_confirmation_whose_read_and_write_both_fail_is_tried_again() -> None:
    """The read cannot tell and the write once more is refused: the record is still not
    known to stand, so the confirmation is owed still (it was dropped: the stored seal
    held for the facts, and nothing was written again)."""
    fake = FakeApi(fresh_pods=[])
    reconciler, clock, due = _a_use_soon_after_pending(fake)
    fake.read_error = ApiException(503, "Service Unavailable")
    fake.status_error = ApiException(503, "Service Unavailable")
    clock[0] = due
    reconcile_now(reconciler, KEY_OF_CLAIM)
    claim = reconciler.claims.get(KEY_OF_CLAIM)
    assert claim is not None
    assert claim.confirm_after is not None
    assert claim.confirm_after > due  # with backoff
    fake.read_error = fake.status_error = None
    clock[0] = claim.confirm_after
    reconcile_now(reconciler, KEY_OF_CLAIM)
    assert fake.calls.count("read_evc") == 2  # confirmed now, by a read
    assert claim.confirm_after is None
