"""Prometheus metrics and the readiness endpoint, served from the operator's event loop.

Gauges that describe the claims (how many in each phase, when each is due) are
computed from the scheduler's memory at scrape time: nothing is updated per
event, and a scrape never calls the Kubernetes API.
"""

from __future__ import annotations

from collections import Counter as Tally
from collections.abc import Iterable, Iterator
from typing import Protocol

from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from evc_operator.lifecycle import Decision, Phase

REGISTRY = CollectorRegistry()

DELETIONS = Counter(
    "evc_deletions", "EphemeralVolumeClaims deleted by the operator, by reason "
    "(expiry: never used; grace: unused since its last user ended).",
    ["reason"], registry=REGISTRY)
DRY_RUN_DELETIONS = Counter(
    "evc_dry_run_deletions", "Deletions that DRY_RUN reported instead of doing.",
    ["reason"], registry=REGISTRY)
API_ERRORS = Counter(
    "evc_api_errors", "Failed calls to the Kubernetes API, by operation and HTTP status "
    "(0: no answer).", ["operation", "status"], registry=REGISTRY)
RECONCILE_FAILURES = Counter(
    "evc_reconcile_failures", "Reconciliations that failed and were retried later.",
    registry=REGISTRY)
REACTION = Histogram(
    "evc_reaction_seconds", "From noticing a change (or a deadline) to having acted on it: "
    "status written, PVC created or claim deleted.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
    registry=REGISTRY)
DELETION_LATENESS = Histogram(
    "evc_deletion_lateness_seconds", "How long after its deadline a claim was deleted.",
    buckets=(0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300), registry=REGISTRY)


def count_api_error(operation: str, status: int) -> None:
    """The API layer's error hook (kube.set_error_hook)."""
    API_ERRORS.labels(operation, str(status)).inc()


class Observed(Protocol):
    """What the scheduler tells about the claims it holds."""

    active: bool

    def phases(self) -> Iterable[Phase | None]: ...

    def countdowns(self) -> Iterable[tuple[tuple[str, str], Decision]]: ...

    def ready(self) -> bool: ...


class ClaimsCollector(Collector):
    """Claims by phase and their deadlines, read from the scheduler when scraped."""

    def __init__(self, observed: Observed) -> None:
        self.observed = observed

    def collect(self) -> Iterator[GaugeMetricFamily]:
        phases = GaugeMetricFamily("evc_claims", "EphemeralVolumeClaims known, by phase.",
                                   labels=["phase"])
        phases_held = list(self.observed.phases())
        counted = Tally(str(phase or "Unknown") for phase in phases_held)
        for phase in [*(str(p) for p in Phase), "Unknown"]:
            phases.add_metric([phase], counted.get(phase, 0))
        yield phases

        deadlines = GaugeMetricFamily(
            "evc_deletion_timestamp_seconds",
            "When each claim with a running countdown will be deleted (Unix time).",
            labels=["namespace", "name", "countdown"])
        pending = list(self.observed.countdowns())
        for (namespace, name), decision in pending:
            if decision.deletes_at is not None and decision.countdown is not None:
                deadlines.add_metric([namespace, name, str(decision.countdown)],
                                     decision.deletes_at.timestamp())
        yield deadlines

        tracked = GaugeMetricFamily("evc_claims_tracked",
                                    "EphemeralVolumeClaims the scheduler holds in memory.")
        tracked.add_metric([], len(phases_held))
        yield tracked
        countdowns = GaugeMetricFamily(
            "evc_countdowns", "Claims whose countdown (expiry or grace) the scheduler holds: "
            "after a restart, all of them again once it has resumed.")
        countdowns.add_metric([], len(pending))
        yield countdowns

        leader = GaugeMetricFamily("evc_leader", "1 while this replica is the active one.")
        leader.add_metric([], 1 if self.observed.active else 0)
        yield leader

        ready = GaugeMetricFamily("evc_pod_view_complete",
                                  "1 once every namespace with claims has had its pods "
                                  "and PVCs listed.")
        ready.add_metric([], 1 if self.observed.ready() else 0)
        yield ready


async def serve(observed: Observed, port: int) -> web.AppRunner:
    """Start /metrics and /readyz on `port`; the caller cleans the runner up."""
    REGISTRY.register(ClaimsCollector(observed))

    async def metrics(_: web.Request) -> web.Response:
        return web.Response(body=generate_latest(REGISTRY),
                            headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def readyz(_: web.Request) -> web.Response:
        if observed.ready():
            return web.Response(text="ok\n")
        return web.Response(status=503, text="waiting for the complete view of pods\n")

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/readyz", readyz)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    # All interfaces: in a pod, Prometheus and the kubelet reach it from outside.
    await web.TCPSite(runner, host="0.0.0.0", port=port).start()
    return runner
