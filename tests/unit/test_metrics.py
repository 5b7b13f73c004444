"""Gauges computed from the reconciler's memory when scraped."""

from __future__ import annotations

import datetime
import types

from prometheus_client import CollectorRegistry, generate_latest

from evc_operator import lifecycle
from evc_operator.metrics import ClaimsCollector

T0 = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)


def _countdown(deletes_at: datetime.datetime) -> lifecycle.Decision:
    return lifecycle.Decision(phase=lifecycle.Phase.PENDING, active_users=(),
                              unused_since=None, deletes_at=deletes_at,
                              countdown=lifecycle.Countdown.EXPIRY,
                              action=lifecycle.Action.NONE, wake_at=deletes_at)


def test_countdowns_and_tracked_claims_are_counted_at_scrape_time() -> None:
    claim = types.SimpleNamespace(claim=types.SimpleNamespace(recorded_phase=None))
    reconciler = types.SimpleNamespace(
        evcs={("a", "one"): claim, ("a", "two"): claim, ("b", "three"): claim},
        countdowns={("a", "one"): _countdown(T0), ("b", "three"): _countdown(T0)},
        active=True, pods_view_complete=True, ready=lambda: True)
    registry = CollectorRegistry()
    registry.register(ClaimsCollector(reconciler))  # type: ignore[arg-type]
    assert registry.get_sample_value("evc_countdowns") == 2
    assert registry.get_sample_value("evc_claims_tracked") == 3
    reconciler.countdowns.clear()  # e.g. just restarted: nothing resumed yet
    assert registry.get_sample_value("evc_countdowns") == 0
    assert b"# TYPE evc_countdowns gauge" in generate_latest(registry)
