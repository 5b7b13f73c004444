"""Decisions that moved out of the reconcile into the pure core: which recorded facts to
trust (lifecycle.trusted), the PvcReady wording (status.pvc_ready), the InvalidSpec rule
(status.spec_warnings) and what a PVC update is tried on (claims.update_attempt)."""

from __future__ import annotations

import datetime

from hypothesis import given
from hypothesis import strategies as st

from evc_operator.claims import pvc_view, update_attempt
from evc_operator.lifecycle import Claim, Phase, decide, trusted
from evc_operator.status import PvcOutcome, pvc_ready, spec_warnings

T0 = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
moments = st.one_of(st.none(), st.integers(0, 600).map(
    lambda seconds: T0 + datetime.timedelta(seconds=seconds)))
phases = st.one_of(st.none(), st.sampled_from(list(Phase)))


def _claim(phase: Phase | None, unused_since: datetime.datetime | None) -> Claim:
    return Claim(created=T0, expiry_period=30, grace_period=30, recorded_phase=phase,
                 recorded_unused_since=unused_since)


@given(phases, moments, phases, moments, st.integers(0, 1200))
def test_a_rewritten_status_never_makes_a_deadline_earlier_than_ours(
        phase: Phase | None, since: datetime.datetime | None, our_phase: Phase | None,
        our_since: datetime.datetime | None, now: int) -> None:
    recorded, ours = _claim(phase, since), _claim(our_phase, our_since)
    moment = T0 + datetime.timedelta(seconds=now)
    ours_decided = decide(ours, [], moment)
    decided = decide(trusted(recorded, ours), [], moment)
    if ours_decided.deletes_at is not None:
        assert decided.deletes_at is not None
        assert decided.deletes_at >= ours_decided.deletes_at


def test_recorded_facts_are_trusted_when_they_are_ours_or_we_wrote_none() -> None:
    recorded = _claim(Phase.IDLE, T0)
    assert trusted(recorded, None) is recorded
    assert trusted(recorded, _claim(Phase.IDLE, T0)) is recorded
    later = T0 + datetime.timedelta(seconds=5)
    assert trusted(_claim(Phase.IDLE, T0), _claim(Phase.IDLE, later)).recorded_unused_since == (
        later)


def test_an_invalid_spec_is_warned_of_once() -> None:
    problems = ["spec.size is missing"]
    assert [event.reason for event in spec_warnings(problems, {})] == ["InvalidSpec"]
    said = {"conditions": [{"type": "SpecValid", "status": "False"}]}
    assert spec_warnings(problems, said) == []
    assert spec_warnings([], {}) == []


def _said(reason: str, message: str = "said before") -> dict[str, object]:
    return {"conditions": [{"type": "PvcReady", "status": "True", "reason": reason,
                            "message": message}]}


def test_a_refused_update_is_warned_of_once_and_not_tried_again() -> None:
    condition, events = pvc_ready(PvcOutcome.REJECTED, "scratch", {}, detail="cannot expand")
    assert (condition.reason, condition.status) == ("PvcUpdateRejected", True)
    assert condition.message == "PersistentVolumeClaim scratch refused the update: cannot expand"
    assert [event.reason for event in events] == ["PvcUpdateRejected"]
    _, again = pvc_ready(PvcOutcome.REJECTED, "scratch", _said("PvcUpdateRejected"),
                         detail="cannot expand")
    assert again == []
    memo, none = pvc_ready(PvcOutcome.REJECTED, "scratch", _said("PvcUpdateRejected", "why"))
    assert (memo.message, none) == ("why", [])
    pvc = pvc_view({"metadata": {"name": "scratch", "resourceVersion": "5"}})
    evc = {"metadata": {"labels": {"b": "2", "a": "1"}}}
    assert update_attempt(evc, 3, pvc) == (3, (("a", "1"), ("b", "2")), "5")


def test_the_pvc_condition_keeps_its_creation_wording_until_something_happens() -> None:
    created, events = pvc_ready(PvcOutcome.CREATED, "scratch", {}, size="1Gi")
    assert (created.reason, created.message) == (
        "PvcCreated", "Created PersistentVolumeClaim scratch of 1Gi.")
    assert [event.reason for event in events] == ["PvcCreated"]
    recreated, _ = pvc_ready(PvcOutcome.CREATED, "scratch", _said("PvcReady"), size="1Gi")
    assert recreated.reason == "PvcRecreated"
    kept, none = pvc_ready(PvcOutcome.IN_PLACE, "scratch", _said("PvcCreated", "Created."))
    assert (kept.reason, kept.message, none) == ("PvcCreated", "Created.", [])
    resized, events = pvc_ready(PvcOutcome.IN_PLACE, "scratch", _said("PvcCreated"),
                                size="2Gi", resized_from="1Gi")
    assert resized.reason == "PvcReady"
    assert [event.message for event in events] == [
        "Requested 2Gi for PersistentVolumeClaim scratch (was 1Gi)."]


def test_a_conflict_is_warned_of_once() -> None:
    condition, events = pvc_ready(PvcOutcome.CONFLICT, "scratch", {}, detail="not ours")
    assert (condition.status, condition.reason, len(events)) == (False, "PvcConflict", 1)
    _, again = pvc_ready(PvcOutcome.CONFLICT, "scratch", _said("PvcConflict"), detail="x")
    assert again == []
