from __future__ import annotations

import datetime

import pytest

from evc_operator.leadership import LeaseSettings, claimed_spec, may_take

NOW = datetime.datetime(2026, 1, 1, 12, 0, 0, tzinfo=datetime.UTC)
ME = LeaseSettings(name="evc-operator", namespace="ops", identity="me", duration=10)


def held_by(holder: str, renewed_seconds_ago: float) -> dict[str, object]:
    renewed = NOW - datetime.timedelta(seconds=renewed_seconds_ago)
    return {"holderIdentity": holder, "leaseDurationSeconds": 10,
            "renewTime": renewed.strftime("%Y-%m-%dT%H:%M:%S.%fZ"), "leaseTransitions": 3}


def test_a_free_or_own_lease_may_be_taken() -> None:
    assert may_take({}, "me", NOW)
    assert may_take(held_by("me", 5), "me", NOW)


def test_a_live_lease_of_another_holder_may_not() -> None:
    assert not may_take(held_by("other", 9.9), "me", NOW)


def test_an_expired_lease_may_be_taken_over() -> None:
    assert may_take(held_by("other", 10), "me", NOW)


def test_taking_over_counts_a_transition_and_renewing_does_not() -> None:
    taken = claimed_spec(held_by("other", 30), ME, NOW)
    assert taken["holderIdentity"] == "me"
    assert taken["leaseTransitions"] == 4
    assert taken["acquireTime"] == taken["renewTime"]
    renewed = claimed_spec({**taken, "acquireTime": "earlier"}, ME, NOW)
    assert renewed["leaseTransitions"] == 4
    assert renewed["acquireTime"] == "earlier"


@pytest.mark.parametrize(("duration", "written"),
                         [(0.001, 1), (0.5, 1), (1, 1), (1.2, 2), (10, 10), (10.5, 11)])
def test_the_lease_duration_is_written_rounded_up_and_never_zero(
        duration: float, written: int) -> None:
    """int() wrote 0 for a duration below 1 s: anyone could take such a Lease at once."""
    settings = LeaseSettings(name="l", namespace="n", identity="me", duration=duration)
    spec = claimed_spec({}, settings, NOW)
    assert spec["leaseDurationSeconds"] == written
    assert not may_take(spec, "other", NOW)
