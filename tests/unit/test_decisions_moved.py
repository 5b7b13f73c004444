"""Decisions that moved out of the reconcile into the pure core: which recorded facts to
trust (lifecycle.trusted), the PvcReady wording (status.pvc_ready), the InvalidSpec rule
(status.spec_warnings) and what a PVC update is tried on (claims.update_attempt)."""

from __future__ import annotations

import datetime

from hypothesis import given
from hypothesis import strategies as st

from evc_operator.claims import pvc_view, update_attempt
from evc_operator.lifecycle import Claim, Phase, decide, trusted
from evc_operator.pvcsync import _as_asked
from evc_operator.status import PvcOutcome, pvc_ready, reason_of, spec_warnings

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


def _said(reason: str, message: str = "said before", status: str = "True",
          ) -> dict[str, object]:
    return {"conditions": [{"type": "PvcReady", "status": status, "reason": reason,
                            "message": message}]}


def test_a_refused_update_is_warned_of_once_and_not_tried_again() -> None:
    condition, events = pvc_ready(PvcOutcome.REJECTED, "scratch", {}, detail="cannot expand",
                                  phase="Bound")
    assert (condition.reason, condition.status) == ("PvcUpdateRejected", True)
    assert condition.message == "PersistentVolumeClaim scratch refused the update: cannot expand"
    assert [event.reason for event in events] == ["PvcUpdateRejected"]
    _, again = pvc_ready(PvcOutcome.REJECTED, "scratch", _said("PvcUpdateRejected"),
                         detail="cannot expand")
    assert again == []
    memo, none = pvc_ready(PvcOutcome.REJECTED, "scratch", _said("PvcUpdateRejected", "why"),
                           phase="Bound")
    assert (memo.message, none) == ("why", [])
    unbound, _ = pvc_ready(PvcOutcome.REJECTED, "scratch", {}, detail="cannot expand")
    assert (unbound.reason, unbound.status) == ("PvcUpdateRejected", False)
    pvc = pvc_view({"metadata": {"name": "scratch", "resourceVersion": "5"}})
    evc = {"metadata": {"labels": {"b": "2", "a": "1"}}}
    assert update_attempt(evc, 3, pvc) == (3, (("a", "1"), ("b", "2")), "5")


def test_the_pvc_is_ready_only_once_bound() -> None:
    created, events = pvc_ready(PvcOutcome.CREATED, "scratch", {}, size="1Gi")
    assert (created.status, created.reason) == (False, "Pending")
    assert created.message.startswith("Created PersistentVolumeClaim scratch of 1Gi. It is "
                                      "not bound to a volume yet")
    assert [event.reason for event in events] == ["PvcCreated"]
    _, events = pvc_ready(PvcOutcome.CREATED, "scratch", _said("Bound"), size="1Gi")
    assert [event.reason for event in events] == ["PvcRecreated"]
    for never_had_one in ("PvcRefused", "InvalidSpec", "PvcConflict", "LabelsTooLarge"):
        _, events = pvc_ready(PvcOutcome.CREATED, "scratch", _said(never_had_one), size="1Gi")
        assert [event.reason for event in events] == ["PvcCreated"], never_had_one
    for phase, status, reason in (("Pending", False, "Pending"), ("Bound", True, "Bound")):
        condition, none = pvc_ready(PvcOutcome.IN_PLACE, "scratch", {}, phase=phase)
        assert (condition.status, condition.reason, none) == (status, reason, [])


def test_a_lost_pvc_is_warned_of_once() -> None:
    """Its volume is gone, and the data on it: one Warning when it turns Lost, none again
    at each reconciliation while it stays so (the stored condition says it was said)."""
    lost, events = pvc_ready(PvcOutcome.IN_PLACE, "scratch", _said("Bound"), phase="Lost")
    assert (lost.status, lost.reason) == (False, "Lost")
    assert lost.message.startswith("PersistentVolumeClaim scratch is Lost: the "
                                   "PersistentVolume it was bound to no longer exists")
    assert [(event.type, event.reason, event.message) for event in events] == [
        ("Warning", "PvcLost", lost.message)]
    _, again = pvc_ready(PvcOutcome.IN_PLACE, "scratch",
                         _said("Lost", lost.message, status="False"), phase="Lost")
    assert again == []
    assert reason_of([lost]) == "PvcLost"


def test_the_pvc_condition_keeps_its_wording_while_its_status_and_reason_stay() -> None:
    """Rewording alone would be a status write per claim that tells nothing new."""
    waiting = _said("Pending", "Created.", status="False")
    kept, none = pvc_ready(PvcOutcome.IN_PLACE, "scratch", waiting)
    assert (kept.reason, kept.message, none) == ("Pending", "Created.", [])
    bound, _ = pvc_ready(PvcOutcome.IN_PLACE, "scratch", waiting, phase="Bound")
    assert (bound.status, bound.message) == (True, "PersistentVolumeClaim scratch is bound "
                                                   "to a volume.")
    resized, events = pvc_ready(PvcOutcome.IN_PLACE, "scratch", _said("Bound"),
                                size="2Gi", resized_from="1Gi", phase="Bound")
    assert resized.reason == "Bound"
    assert [event.message for event in events] == [
        "Requested 2Gi for PersistentVolumeClaim scratch (was 1Gi)."]


def test_a_conflict_is_warned_of_once() -> None:
    condition, events = pvc_ready(PvcOutcome.CONFLICT, "scratch", {}, detail="not ours")
    assert (condition.status, condition.reason, len(events)) == (False, "PvcConflict", 1)
    _, again = pvc_ready(PvcOutcome.CONFLICT, "scratch", _said("PvcConflict"), detail="x")
    assert again == []


def test_a_lost_pvc_that_also_lacks_an_asked_field_is_warned_of_once() -> None:
    """Lost wins over a field the API server dropped: the mismatch in its place made the
    Lost Warning new again at every look."""
    body = {"metadata": {"name": "scratch", "namespace": "jobs", "uid": "u", "labels": {}},
            "spec": {"size": "1Gi", "storageClassName": "fast"}}
    lost = pvc_view({"metadata": {"name": "scratch", "namespace": "jobs"},
                     "spec": {"resources": {"requests": {"storage": "1Gi"}}},
                     "status": {"phase": "Lost"}})
    previous: dict[str, object] = {}
    said = []
    for _ in range(3):
        condition, events = pvc_ready(PvcOutcome.IN_PLACE, "scratch", previous, phase="Lost")
        condition, events = _as_asked(body, lost, previous, condition, events)
        said += [event.reason for event in events]
        previous = _said(condition.reason, condition.message, status="False")
    assert condition.reason == "Lost"
    assert said == ["PvcLost"]
