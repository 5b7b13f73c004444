"""The EVC's status and Events, built from decisions made by `lifecycle.decide`."""

from __future__ import annotations

import dataclasses
import datetime
import itertools
import math
import re
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from evc_operator.lifecycle import Action, Claim, Decision, Phase, PodUse, decide
from evc_operator.settings import parse_duration
from evc_operator.status import (
    Condition,
    Event,
    PvcOutcome,
    build_status,
    condition_field,
    deletion_event,
    lifecycle_conditions,
    pvc_ready,
    reason_of,
    status_changed,
    transition_events,
)
from evc_operator.timestamps import format_time as timestamp
from evc_operator.timestamps import human_period

T0 = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
EXPIRY, GRACE = 30.0, 90.0


def at(seconds: float) -> datetime.datetime:
    return T0 + datetime.timedelta(seconds=seconds)


def claim(**changes: Any) -> Claim:
    return dataclasses.replace(Claim(created=T0, expiry_period=EXPIRY, grace_period=GRACE),
                               **changes)


def user(name: str, active: bool = True) -> PodUse:
    return PodUse(name=name, active=active, created=T0)


def pending(now: float = 10, **changes: Any) -> Decision:
    return decide(claim(**changes), [], at(now))


def in_use(*names: str) -> Decision:
    return decide(claim(), [user(name) for name in names], at(50))


def idle(now: float = 100, **changes: Any) -> Decision:
    """Its last user ended when observed at `now`: unused since then, deletes 90 s later."""
    return decide(claim(recorded_phase=Phase.IN_USE, **changes), [user("a", active=False)],
                  at(now))


def conditions_for(decision: Decision, *, keep: bool = False, dry_run: bool = False,
                   problems: tuple[str, ...] = ()) -> list[Condition]:
    return lifecycle_conditions(decision, keep=keep, dry_run=dry_run, problems=problems)


def status_for(decision: Decision, *, previous: dict[str, Any] | None = None,
               now: float = 200, generation: int = 3, **options: Any) -> dict[str, Any]:
    return build_status(decision, conditions_for(decision, **options), generation=generation,
                        previous=previous or {}, now=at(now))


def by_type(status: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {condition["type"]: condition for condition in status["conditions"]}


# --- build_status --------------------------------------------------------------------------

def test_status_of_a_pending_claim() -> None:
    status = status_for(pending())
    assert {key: value for key, value in status.items() if key != "conditions"} == {
        "phase": "Pending", "reason": None, "users": 0, "userNames": [], "unusedSince": None,
        "deletesAt": "2026-01-01T00:00:31Z", "countdown": "expiry", "observedGeneration": 3,
        "seal": None}
    assert status["conditions"] == [
        {"type": "InUse", "status": "False", "reason": "NoActiveUsers",
         "message": "No active pod or workload uses this claim: every pod that mounts it "
                    "(or matches its selector) has Succeeded or Failed, or there is none, "
                    "and no workload that names it may create pods. Pending, Running and "
                    "terminating pods count as users, and so do unfinished Jobs, CronJobs, "
                    "DaemonSets and workloads with replicas.",
         "lastTransitionTime": "2026-01-01T00:03:20Z", "observedGeneration": 3},
        {"type": "SpecValid", "status": "True", "reason": "Valid",
         "message": "The spec is valid.",
         "lastTransitionTime": "2026-01-01T00:03:20Z", "observedGeneration": 3},
        {"type": "DeletionPaused", "status": "False", "reason": "Active",
         "message": "Deletes when due.",
         "lastTransitionTime": "2026-01-01T00:03:20Z", "observedGeneration": 3},
    ]


def test_status_of_a_claim_in_use() -> None:
    status = status_for(in_use("b", "a"))
    assert status["phase"] == "InUse"
    assert status["users"] == 2
    assert status["userNames"] == ["a", "b"]
    assert status["unusedSince"] is None
    assert status["deletesAt"] is None
    assert status["countdown"] is None
    assert by_type(status)["InUse"]["status"] == "True"
    assert by_type(status)["InUse"]["message"] == "Used by a, b."


def test_status_of_an_idle_claim() -> None:
    status = status_for(idle())
    assert status["phase"] == "Idle"
    assert status["users"] == 0
    assert status["unusedSince"] == "2026-01-01T00:01:40Z"
    assert status["deletesAt"] == "2026-01-01T00:03:10Z"
    assert status["countdown"] == "grace"


def test_status_of_a_kept_claim_has_no_deadline() -> None:
    status = status_for(idle(keep=True), keep=True)
    assert status["phase"] == "Idle"
    assert status["unusedSince"] == "2026-01-01T00:01:40Z"
    assert status["deletesAt"] is None
    assert status["countdown"] is None
    assert by_type(status)["DeletionPaused"]["reason"] == "KeepAnnotation"


def test_status_of_a_claim_being_deleted() -> None:
    status = status_for(pending(now=31))
    assert status["phase"] == "Deleting"
    assert status["deletesAt"] == "2026-01-01T00:00:31Z"


def test_many_users_are_counted_but_only_ten_listed() -> None:
    status = status_for(in_use(*(f"p{i:02}" for i in range(12))))
    assert status["users"] == 12
    assert status["userNames"] == [f"p{i:02}" for i in range(10)]


def test_observed_generation_is_on_the_status_and_every_condition() -> None:
    status = status_for(pending(), generation=17)
    assert status["observedGeneration"] == 17
    assert len(status["conditions"]) == 3
    assert all(condition["observedGeneration"] == 17 for condition in status["conditions"])


def test_unchanged_conditions_keep_their_transition_time() -> None:
    first = status_for(pending(), now=100)
    second = status_for(pending(20), previous=first, now=500, generation=4)
    for condition in second["conditions"]:
        assert condition["lastTransitionTime"] == "2026-01-01T00:01:40Z"
        assert condition["observedGeneration"] == 4


def test_changed_conditions_get_now() -> None:
    first = status_for(pending(), now=100)
    second = status_for(in_use("a"), previous=first, now=500)
    conditions = by_type(second)
    assert conditions["InUse"]["lastTransitionTime"] == timestamp(at(500))
    assert conditions["SpecValid"]["lastTransitionTime"] == timestamp(at(100))
    assert conditions["DeletionPaused"]["lastTransitionTime"] == timestamp(at(100))


def test_a_reason_change_without_a_status_change_keeps_the_time() -> None:
    first = status_for(pending(), now=100, keep=True)
    second = status_for(pending(), previous=first, now=500, dry_run=True)
    paused = by_type(second)["DeletionPaused"]
    assert paused["reason"] == "DryRun"
    assert paused["lastTransitionTime"] == timestamp(at(100))


def test_a_previous_condition_without_a_time_gets_now() -> None:
    previous = {"conditions": [{"type": "InUse", "status": "False"},
                               {"type": "SpecValid", "status": "True",
                                "lastTransitionTime": None}]}
    status = status_for(pending(), previous=previous, now=500)
    assert all(c["lastTransitionTime"] == timestamp(at(500)) for c in status["conditions"])


def test_no_previous_conditions_means_now() -> None:
    previous: dict[str, Any]
    for previous in ({"conditions": None}, {"conditions": []}, {"phase": "Pending"}):
        status = status_for(pending(), previous=previous, now=7)
        assert all(c["lastTransitionTime"] == "2026-01-01T00:00:07Z"
                   for c in status["conditions"])


# --- status_changed ------------------------------------------------------------------------

def in_use_by_a() -> Decision:
    return in_use("a")


@pytest.mark.parametrize("make", [pending, in_use_by_a, idle])
def test_rebuilding_from_the_same_decision_changes_nothing(
        make: Callable[[], Decision]) -> None:
    decision = make()
    first = status_for(decision, now=100)
    second = status_for(decision, previous=first, now=900)
    assert second == first
    assert not status_changed(second, first)


def test_a_phase_change_is_a_change() -> None:
    first = status_for(pending(), now=100)
    second = status_for(in_use("a"), previous=first, now=100)
    assert status_changed(second, first)
    assert status_changed({**first, "phase": "Idle"}, first)


def test_a_new_deadline_is_a_change() -> None:
    first = status_for(idle(100), now=100)
    second = status_for(idle(150), previous=first, now=150)
    assert status_changed(second, first)


def test_a_first_status_is_a_change() -> None:
    assert status_changed(status_for(pending()), {})


def test_none_and_empty_lists_count_as_absent() -> None:
    assert not status_changed({"unusedSince": None, "userNames": [], "conditions": []}, {})
    assert not status_changed({"unusedSince": None}, {"unusedSince": None})
    assert not status_changed({"userNames": []}, {"userNames": None})
    assert not status_changed({"countdown": None}, {"countdown": {}})
    assert status_changed({"unusedSince": None}, {"unusedSince": "2026-01-01T00:00:00Z"})
    assert status_changed({"countdown": "grace"}, {})
    assert status_changed({"users": 0}, {})


def test_only_new_keys_are_compared() -> None:
    assert not status_changed({"phase": "Idle"}, {"phase": "Idle", "unknown": "x"})


def test_a_condition_change_is_a_change() -> None:
    first = status_for(pending(), now=100)
    second = status_for(pending(), previous=first, now=100, problems=("spec.size is missing",))
    assert status_changed(second, first)


# --- transition_events ---------------------------------------------------------------------

def events(decision: Decision, recorded: Phase | None) -> list[Event]:
    return transition_events(decision, recorded, expiry_period=EXPIRY, grace_period=GRACE)


@pytest.mark.parametrize(("make", "phase"), [
    (pending, Phase.PENDING), (in_use_by_a, Phase.IN_USE), (idle, Phase.IDLE),
])
def test_no_events_while_the_phase_stays(make: Callable[[], Decision], phase: Phase) -> None:
    decision = make()
    assert decision.phase is phase
    assert events(decision, phase) == []


def test_becoming_pending_announces_the_expiry() -> None:
    assert events(pending(), None) == [Event(
        "Normal", "Expiring",
        "Not used by any pod yet; expiry period 30s. "
        "Deletes at 2026-01-01T00:00:31Z unless a pod uses it.")]


def test_becoming_in_use_names_the_users() -> None:
    for recorded in (None, Phase.PENDING, Phase.IDLE):
        assert events(in_use("web", "etl"), recorded) == [
            Event("Normal", "InUse", "Used by etl, web.")]


def test_becoming_idle_names_the_time_and_the_deadline() -> None:
    assert events(idle(), Phase.IN_USE) == [Event(
        "Normal", "Idle",
        "No pod uses it since 2026-01-01T00:01:40Z; grace period 1m30s started. "
        "Deletes at 2026-01-01T00:03:10Z.")]


def test_kept_claims_announce_no_countdown() -> None:
    """A kept claim never expires: no `Expiring`, no grace period said to start."""
    assert events(idle(keep=True), Phase.IN_USE) == [Event(
        "Normal", "Idle", "No pod uses it since 2026-01-01T00:01:40Z; its deletion is paused.")]
    assert events(pending(keep=True), None) == []


def test_the_deleting_phase_has_no_transition_event() -> None:
    decision = pending(now=31)
    assert decision.phase is Phase.DELETING
    assert events(decision, Phase.PENDING) == []


# --- deletion_event ------------------------------------------------------------------------

def grace_elapsed(**options: Any) -> Decision:
    recorded = claim(recorded_phase=Phase.IDLE, recorded_unused_since=at(100))
    return decide(recorded, [user("a", active=False)], at(190), **options)


def test_deleting_after_the_grace_period() -> None:
    decision = grace_elapsed()
    assert decision.action is Action.DELETE
    event = deletion_event(decision, expiry_period=EXPIRY, grace_period=GRACE, dry_run=False)
    assert event == Event("Normal", "Deleted",
                          "Deleting it (GracePeriodElapsed): unused since "
                          "2026-01-01T00:01:40Z, longer than the grace period of 1m30s.")


def test_deleting_after_the_expiry_period() -> None:
    decision = pending(now=31)
    assert decision.action is Action.DELETE
    event = deletion_event(decision, expiry_period=EXPIRY, grace_period=GRACE, dry_run=False)
    assert event == Event("Normal", "Deleted",
                          "Deleting it (ExpiryPeriodElapsed): never used within the expiry "
                          "period of 30s.")


def test_dry_run_would_delete() -> None:
    decision = pending(now=31)
    event = deletion_event(decision, expiry_period=EXPIRY, grace_period=GRACE, dry_run=True)
    assert event == Event("Normal", "WouldDelete",
                          "DRY_RUN: would delete it now (never used within the expiry "
                          "period of 30s).")


def test_a_dry_run_decision_would_delete_even_without_the_flag() -> None:
    decision = grace_elapsed(dry_run=True)
    assert decision.action is Action.REPORT_DRY_RUN
    event = deletion_event(decision, expiry_period=EXPIRY, grace_period=GRACE, dry_run=False)
    assert event.reason == "WouldDelete"
    assert "unused since 2026-01-01T00:01:40Z, longer than the grace period of 1m30s" in (
        event.message)
    assert "Deleting" not in event.message


# --- human_period and timestamp ------------------------------------------------------------

@pytest.mark.parametrize(("seconds", "text"), [
    (0, "0s"), (1, "1s"), (59, "59s"), (60, "1m"), (90, "1m30s"), (3599, "59m59s"),
    (3600, "1h"), (3601, "1h1s"), (3660, "1h1m"), (5400, "1h30m"), (86400, "24h"),
    (90061, "25h1m1s"), (0.2, "1s"), (59.5, "1m"), (0.0001, "1s"), (3599.01, "1h"),
])
def test_human_period(seconds: float, text: str) -> None:
    assert human_period(seconds) == text


@given(st.floats(0, 1e7, allow_nan=False))
def test_human_period_reads_back_as_the_time_rounded_up(seconds: float) -> None:
    text = human_period(seconds)
    assert text
    assert re.fullmatch(r"0s|([1-9]\d*h)?([1-9]m|[1-5]\dm)?([1-9]s|[1-5]\ds)?", text)
    assert parse_duration(text) == math.ceil(seconds)


def test_timestamp_is_utc_with_z_and_whole_seconds() -> None:
    assert timestamp(T0) == "2026-01-01T00:00:00Z"
    assert timestamp(at(90061.999999)) == "2026-01-02T01:01:01Z"
    plus_two = datetime.timezone(datetime.timedelta(hours=2))
    assert timestamp(datetime.datetime(2026, 6, 1, 2, 30, tzinfo=plus_two)) == (
        "2026-06-01T00:30:00Z")
    minus_five = datetime.timezone(datetime.timedelta(hours=-5))
    assert timestamp(datetime.datetime(2025, 12, 31, 22, 0, 5, 5, tzinfo=minus_five)) == (
        "2026-01-01T03:00:05Z")


@given(st.datetimes(min_value=datetime.datetime(2000, 1, 1),
                    max_value=datetime.datetime(2100, 1, 1), timezones=st.just(datetime.UTC)))
def test_timestamp_reads_back_to_the_second(moment: datetime.datetime) -> None:
    text = timestamp(moment)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", text)
    assert datetime.datetime.fromisoformat(text.replace("Z", "+00:00")) == moment.replace(
        microsecond=0)


# --- lifecycle_conditions ------------------------------------------------------------------

def test_conditions_are_in_use_spec_valid_and_deletion_paused() -> None:
    conditions = conditions_for(in_use("b", "a"))
    assert conditions == [
        Condition("InUse", True, "ActiveUsers", "Used by a, b."),
        Condition("SpecValid", True, "Valid", "The spec is valid."),
        Condition("DeletionPaused", False, "Active", "Deletes when due."),
    ]


def test_problems_make_the_spec_invalid_and_are_listed() -> None:
    problems = ("spec.size is missing", "spec.selector is invalid: x")
    spec_valid = conditions_for(pending(), problems=problems)[1]
    assert spec_valid == Condition("SpecValid", False, "InvalidSpec",
                                   "spec.size is missing; spec.selector is invalid: x")


def test_the_in_use_condition_lists_at_most_ten_users() -> None:
    in_use_condition = conditions_for(in_use(*(f"p{i:02}" for i in range(12))))[0]
    assert in_use_condition.status is True
    assert in_use_condition.message == "Used by " + ", ".join(
        f"p{i:02}" for i in range(10)) + "."


@pytest.mark.parametrize(("invalid", "keep", "dry_run"),
                         list(itertools.product([False, True], repeat=3)))
def test_deletion_paused_reason_priority(invalid: bool, keep: bool, dry_run: bool) -> None:
    problems = ("spec.size is missing",) if invalid else ()
    paused = conditions_for(pending(), keep=keep, dry_run=dry_run, problems=problems)[2]
    assert paused.type == "DeletionPaused"
    if invalid:
        expected = "InvalidSpec"
    elif keep:
        expected = "KeepAnnotation"
    elif dry_run:
        expected = "DryRun"
    else:
        expected = "Active"
    assert paused.reason == expected
    assert paused.status is (expected != "Active")
    assert paused.message


@pytest.mark.parametrize(("invalid", "keep", "dry_run"),
                         list(itertools.product([False, True], repeat=3)))
def test_the_reason_column_names_why_deletion_is_paused(invalid: bool, keep: bool,
                                                        dry_run: bool) -> None:
    problems = ("spec.size is missing",) if invalid else ()
    status = status_for(pending(keep=keep or invalid), keep=keep, dry_run=dry_run,
                        problems=problems)
    paused = by_type(status)["DeletionPaused"]["status"] == "True"
    expected = ("InvalidSpec" if invalid else "Kept" if keep else "DryRun" if dry_run
                else None)
    assert status["reason"] == expected
    assert (status["reason"] is not None) == paused


@pytest.mark.parametrize(("pvc", "expected"), [
    (Condition("PvcReady", False, "PvcConflict", "not ours"), "PvcConflict"),
    (Condition("PvcReady", True, "PvcUpdateRejected", "no"), "PvcUpdateRejected"),
    (Condition("PvcReady", False, "Pending", "waits"), None),
    (Condition("PvcReady", True, "Bound", "bound"), None),
    (Condition("PvcReady", False, "Lost", "its volume is gone"), "PvcLost"),
    (Condition("PvcReady", True, "PvcUpdateFailing", "keeps failing"), "PvcUpdateFailing"),
    (Condition("PvcReady", False, "PvcUpdateFailing", "keeps failing"), "PvcUpdateFailing"),
    # a failure or two that may pass by themselves are no reason, as PvcRetrying is none
    (Condition("PvcReady", True, "PvcUpdateRetrying", "failed for now"), None),
    (Condition("PvcReady", False, "PvcRetrying", "failed for now"), None),
])
def test_the_reason_column_flags_pvc_problems_first(pvc: Condition,
                                                   expected: str | None) -> None:
    conditions = [*conditions_for(pending(), keep=True), pvc]
    assert reason_of(conditions) == (expected or "Kept")
    assert reason_of([*conditions_for(pending()), pvc]) == expected


def test_the_reason_is_pvc_update_failing_while_updates_keep_failing_and_gone_after() -> None:
    """status.reason (the REASON column, evc_claims_by_reason, EvcClaimsStuck) flags a
    claim whose PVC updates failed three times in a row, and no longer once one went
    through; the failures before that flag nothing."""
    decision = in_use_by_a()
    retrying, _ = pvc_ready(PvcOutcome.UPDATE_RETRYING, "scratch", {}, detail="500",
                            phase="Bound")
    before = build_status(decision, [*conditions_for(decision), retrying], generation=3,
                          previous={}, now=at(200))
    assert before["reason"] is None
    failing, _ = pvc_ready(PvcOutcome.UPDATE_FAILING, "scratch", before, detail="500",
                           phase="Bound")
    flagged = build_status(decision, [*conditions_for(decision), failing], generation=3,
                           previous=before, now=at(201))
    assert by_type(flagged)["PvcReady"]["reason"] == "PvcUpdateFailing"
    assert flagged["reason"] == "PvcUpdateFailing"
    assert status_changed(flagged, before)
    through, _ = pvc_ready(PvcOutcome.IN_PLACE, "scratch", flagged, phase="Bound")
    cleared = build_status(decision, [*conditions_for(decision), through], generation=3,
                           previous=flagged, now=at(202))
    assert by_type(cleared)["PvcReady"]["reason"] == "Bound"
    assert cleared["reason"] is None
    assert status_changed(cleared, flagged)


def test_a_condition_field_is_read_from_any_shape_of_status() -> None:
    """A claim's status as the API server holds it (evc.evc_view reads the
    UnwatchedController condition through it): what is not a condition says nothing."""
    odd = {"conditions": ["InUse", None, {"type": "InUse", "status": "True"}]}
    assert condition_field(odd, "InUse") == "True"
    assert condition_field({"conditions": "InUse"}, "InUse") is None
    assert condition_field({"conditions": None}, "InUse") is None
