"""The record of a tracked claim (tracked.py): what this process decided last."""

from __future__ import annotations

import datetime

from evc_operator.evc import evc_view
from evc_operator.lifecycle import Action, Countdown, Decision, Phase
from evc_operator.settings import Settings
from evc_operator.tracked import TrackedClaim

from .test_evc import make_evc

SETTINGS = Settings(expiry_period=11.0, grace_period=22.0)
UNUSED = datetime.datetime(2026, 1, 1, 0, 1, tzinfo=datetime.UTC)


def _idle(unused_since: datetime.datetime) -> Decision:
    deadline = unused_since + datetime.timedelta(seconds=22)
    return Decision(Phase.IDLE, (), unused_since, deadline, Countdown.GRACE, Action.NONE,
                    deadline)


def test_the_facts_decided_are_ours_before_they_are_written() -> None:
    record = TrackedClaim(evc_view(make_evc(status={"phase": "InUse"}), SETTINGS))
    assert record.ours() is None
    record.decided(_idle(UNUSED))
    ours = record.ours()
    assert ours is not None
    assert (ours.recorded_phase, ours.recorded_unused_since) == (Phase.IDLE, UNUSED)
    assert record.view.claim.recorded_phase is Phase.IN_USE  # the stored ones stay apart


def test_facts_decided_as_they_are_stored_are_not_kept_twice() -> None:
    # A restarted operator decides 10,000 claims as their statuses say: one copy each.
    stored = {"phase": "Idle", "unusedSince": "2026-01-01T00:01:00Z"}
    record = TrackedClaim(evc_view(make_evc(status=stored), SETTINGS))
    record.decided(_idle(UNUSED))
    assert record.ours() is record.view.claim


def test_ours_are_only_of_the_same_claim() -> None:
    record = TrackedClaim(evc_view(make_evc(status={"phase": "InUse"}), SETTINGS))
    record.decided(_idle(UNUSED))
    record.view = evc_view(make_evc(uid="uid-2"), SETTINGS)  # deleted and made again
    assert record.ours() is None
