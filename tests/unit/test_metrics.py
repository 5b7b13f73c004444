"""Gauges computed from the scheduler's memory when scraped."""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Callable

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from evc_operator import kube, lifecycle, metrics
from evc_operator.metrics import ClaimsCollector
from evc_operator.status import Reason

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
    flagged: list[str | None] = dataclasses.field(default_factory=list)
    told: int = 0  # claims with the UnwatchedController condition

    def phases(self) -> list[lifecycle.Phase | None]:
        return self.held

    def reasons(self) -> list[str | None]:
        return self.flagged

    def unwatched(self) -> int:
        return self.told

    def countdowns(self) -> list[tuple[tuple[str, str], lifecycle.Decision]]:
        return list(self.pending.items())


def test_countdowns_and_tracked_claims_are_counted_at_scrape_time() -> None:
    observed = Observed(held=[None, None, None],
                        pending={("a", "one"): _countdown(T0), ("b", "three"): _countdown(T0)})
    registry = CollectorRegistry()
    registry.register(ClaimsCollector(observed, clock=lambda: T0))
    assert registry.get_sample_value("evc_countdowns") == 2
    assert registry.get_sample_value("evc_claims_tracked") == 3
    observed.pending.clear()  # e.g. just restarted: nothing resumed yet
    assert registry.get_sample_value("evc_countdowns") == 0
    assert b"# TYPE evc_countdowns gauge" in generate_latest(registry)


def scrape(observed: Observed, *, per_claim: bool = False,
           ) -> dict[str, tuple[str, list[Sample]]]:
    """What Prometheus would read from /metrics: every family's type and samples."""
    metrics.initialise(kube.OPERATIONS)
    claims = CollectorRegistry()
    claims.register(ClaimsCollector(observed, per_claim=per_claim, clock=lambda: T0))
    text = (generate_latest(metrics.REGISTRY) + generate_latest(claims)).decode()
    return {family.name: (family.type, family.samples)
            for family in text_string_to_metric_families(text)}


def values(samples: list[Sample], label: str) -> dict[str, float]:
    return {sample.labels[label]: sample.value for sample in samples}


def test_a_scrape_at_start_follows_prometheus_practice() -> None:
    """Names and types as Prometheus' parser reads them; process and build info; no
    `_created`; every series that can be enumerated already there, at 0."""
    families = scrape(Observed(held=[], pending={}))
    types = {name: kind for name, (kind, _) in families.items()}
    assert {"process_cpu_seconds": "counter", "process_resident_memory_bytes": "gauge",
            "process_open_fds": "gauge", "python_info": "gauge", "evc_build_info": "gauge",
            "evc_deletions": "counter", "evc_dry_run_deletions": "counter",
            "evc_api_errors": "counter", "evc_api_requests": "counter",
            "evc_reconcile_failures": "counter", "evc_reconcile_limit": "gauge",
            "evc_reaction_seconds": "histogram", "evc_gc_pause_seconds": "histogram",
            "evc_deletion_lateness_seconds": "histogram", "evc_claims": "gauge",
            "evc_claims_by_reason": "gauge", "evc_countdowns": "gauge",
            "evc_claims_overdue": "gauge", "evc_claims_tracked": "gauge",
            "evc_earliest_deletion_timestamp_seconds": "gauge",
            "evc_leader": "gauge", "evc_pod_view_complete": "gauge"}.items() <= types.items()
    every = [sample for _, samples in families.values() for sample in samples]
    assert not [sample.name for sample in every if sample.name.endswith("_created")]
    assert all(name.startswith(("evc_", "process_", "python_")) for name in families)

    (build,) = families["evc_build_info"][1]
    assert build.value == 1
    assert build.labels["version"] != "unknown"
    assert build.labels["kopf_version"] != "unknown"
    # Both series are there from the start (their values count this process's deletions and
    # dry-run reports: other unit tests in the same process may have made some before).
    for family in ("evc_deletions", "evc_dry_run_deletions"):
        assert set(values(families[family][1], "reason")) == {"expiry", "grace"}
    errors = {(s.labels["operation"], s.labels["status"]) for s in families["evc_api_errors"][1]}
    assert {(operation, status) for operation in ("create_pvc", "delete_evc", "patch_evc_status",
                                                  "replace_lease") for status in ("0", "403")
            } <= errors
    assert values(families["evc_claims"][1], "phase") == {
        "Pending": 0, "InUse": 0, "Idle": 0, "Deleting": 0, "Unknown": 0}
    assert values(families["evc_claims_by_reason"][1], "reason") == {
        str(reason): 0 for reason in Reason}
    assert "evc_deletion_timestamp_seconds" not in families  # per claim: off by default
    assert {s.labels["generation"] for s in families["evc_gc_pause_seconds"][1]
            if s.name == "evc_gc_pause_seconds_count"} == {"0", "1", "2"}


def test_claims_are_counted_by_phase_and_reason() -> None:
    observed = Observed(held=[lifecycle.Phase.PENDING, lifecycle.Phase.DELETING, None],
                        pending={}, flagged=["PvcConflict", None, "Kept", "PvcRefused"])
    families = scrape(observed)
    assert values(families["evc_claims"][1], "phase") == {
        "Pending": 1, "InUse": 0, "Idle": 0, "Deleting": 1, "Unknown": 1}
    assert values(families["evc_claims_by_reason"][1], "reason") == {
        "PvcConflict": 1, "InvalidSpec": 0, "PvcUpdateRejected": 0, "Kept": 1, "DryRun": 0,
        "PvcRefused": 1, "PvcSpecMismatch": 0, "LabelsTooLarge": 0, "PvcLost": 0,
        "PvcUpdateFailing": 0, "DeletionRefused": 0}


def test_claims_held_only_by_unwatched_controllers_pods_are_counted_by_the_leader() -> None:
    observed = Observed(held=[None, None], pending={}, told=2)
    assert scrape(observed)["evc_claims_unwatched_controller"][1][0].value == 2
    observed.active = False  # a standby exports it empty
    assert scrape(observed)["evc_claims_unwatched_controller"][1] == []


def test_series_per_claim_only_when_asked_for_and_overdue_claims_counted() -> None:
    later = T0 + datetime.timedelta(seconds=30)
    observed = Observed(held=[None, None], pending={("a", "due"): _countdown(T0),
                                                    ("b", "later"): _countdown(later)})
    assert scrape(observed)["evc_claims_overdue"][1][0].value == 1
    assert scrape(observed)["evc_earliest_deletion_timestamp_seconds"][1][0].value == (
        T0.timestamp())
    _, deadlines = scrape(observed, per_claim=True)["evc_deletion_timestamp_seconds"]
    assert {(s.labels["namespace"], s.labels["name"], s.labels["countdown"], s.value)
            for s in deadlines} == {("a", "due", "expiry", T0.timestamp()),
                                    ("b", "later", "expiry", later.timestamp())}


def test_a_standby_exports_no_claim_gauges_so_sums_over_replicas_count_each_claim_once(
        ) -> None:
    observed = Observed(held=[lifecycle.Phase.PENDING], pending={("a", "x"): _countdown(T0)},
                        flagged=["Kept"], active=False)
    families = scrape(observed, per_claim=True)
    for name in ("evc_claims", "evc_claims_by_reason", "evc_claims_unwatched_controller",
                 "evc_countdowns",
                 "evc_claims_overdue", "evc_earliest_deletion_timestamp_seconds",
                 "evc_deletion_timestamp_seconds"):
        assert families[name][1] == [], name
    assert families["evc_leader"][1][0].value == 0
    assert families["evc_claims_tracked"][1][0].value == 1  # this replica's memory


def test_every_request_is_counted_by_verb_resource_and_code() -> None:
    def count() -> float:
        return metrics.REGISTRY.get_sample_value("evc_api_requests_total", {
            "verb": "list", "resource": "pods", "code": "200"}) or 0.0

    before = count()
    metrics.count_api_request("list", "pods", 200)
    assert count() == before + 1
