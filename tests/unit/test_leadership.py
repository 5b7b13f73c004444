from __future__ import annotations

import datetime
import time
from typing import Any, cast

import pytest

from evc_operator import timestamps
from evc_operator.leadership import Leadership, LeaseSettings, claimed_spec, may_take

NOW = datetime.datetime(2026, 1, 1, 12, 0, 0, tzinfo=datetime.UTC)
ME = LeaseSettings(name="evc-operator", namespace="ops", identity="me", duration=10)


def held_by(holder: str, renewed_seconds_ago: float, duration: int = 10) -> dict[str, object]:
    renewed = NOW - datetime.timedelta(seconds=renewed_seconds_ago)
    return {"holderIdentity": holder, "leaseDurationSeconds": duration,
            "renewTime": renewed.strftime("%Y-%m-%dT%H:%M:%S.%fZ"), "leaseTransitions": 3}


def test_a_free_or_own_lease_may_be_taken() -> None:
    assert may_take({}, "me", 0, 10)
    assert may_take({**held_by("other", 0), "holderIdentity": ""}, "me", 0, 10)
    assert may_take(held_by("me", 5), "me", 0, 10)


def test_another_holders_lease_only_once_unchanged_for_its_whole_duration() -> None:
    """Judged by how long this replica has seen the same record, on its own clock: the
    holder's renewTime (its wall clock) plays no part, however old or new it looks."""
    assert not may_take(held_by("other", 9.9), "me", 9.9, 10)
    assert may_take(held_by("other", 9.9), "me", 10, 10)
    assert not may_take(held_by("other", 3600), "me", 0, 10)  # the holder's clock is behind
    assert may_take(held_by("other", -3600), "me", 10, 10)  # or ahead
    assert not may_take(held_by("other", 0, duration=30), "me", 29, 10)  # the record's own
    assert may_take({"holderIdentity": "other"}, "me", 10, 10)  # none written: ours


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
    assert not may_take(spec, "other", 0, 10)


def test_the_lease_is_timed_on_a_clock_that_goes_on_while_the_machine_sleeps(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """CLOCK_BOOTTIME where there is one: a holder whose machine was suspended past its
    Lease must not wake up believing it still leads (the monotonic clock stops then)."""
    replica = Leadership(cast(Any, None), LeaseSettings(name="l", namespace="n",
                                                        identity="me"), lambda held: None)
    assert replica.monotonic is timestamps.boottime
    # Each clock reads apart, as on a machine that was suspended: the one asked is told.
    readings = {getattr(time, "CLOCK_BOOTTIME", -1): 5000.0, time.CLOCK_MONOTONIC: 1000.0}
    monkeypatch.setattr(time, "clock_gettime", lambda clock: readings[clock])
    expected = 5000.0 if hasattr(time, "CLOCK_BOOTTIME") else 1000.0
    assert timestamps.boottime() == expected
