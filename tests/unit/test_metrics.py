"""Gauges computed from the scheduler's memory when scraped."""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Callable

from prometheus_client import CollectorRegistry, generate_latest

from evc_operator import lifecycle
from evc_operator.metrics import ClaimsCollector

T0 = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)


def _countdown(deletes_at: datetime.datetime) -> lifecycle.Decision:
    return lifecycle.Decision(phase=lifecycle.Phase.PENDING, active_users=(),
                              unused_since=None, deletes_at=deletes_at,
                              countdown=lifecycle.Countdown.EXPIRY,
                              action=lifecycle.Action.NONE, wake_at=deletes_at)


@dataclasses.dataclass
class Observed:
    """What the collector reads (metrics.Observed), as plain data."""

    held: list[lifecycle.Phase | None]
    pending: dict[tuple[str, str], lifecycle.Decision]
    active: bool = True
    ready: Callable[[], bool] = lambda: True

    def phases(self) -> list[lifecycle.Phase | None]:
        return self.held

    def countdowns(self) -> list[tuple[tuple[str, str], lifecycle.Decision]]:
        return list(self.pending.items())


def test_countdowns_and_tracked_claims_are_counted_at_scrape_time() -> None:
    observed = Observed(held=[None, None, None],
                        pending={("a", "one"): _countdown(T0), ("b", "three"): _countdown(T0)})
    registry = CollectorRegistry()
    registry.register(ClaimsCollector(observed))
    assert registry.get_sample_value("evc_countdowns") == 2
    assert registry.get_sample_value("evc_claims_tracked") == 3
    observed.pending.clear()  # e.g. just restarted: nothing resumed yet
    assert registry.get_sample_value("evc_countdowns") == 0
    assert b"# TYPE evc_countdowns gauge" in generate_latest(registry)
