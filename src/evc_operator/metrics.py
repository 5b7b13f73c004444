"""Prometheus metrics and the readiness endpoint, served from the operator's event loop.

Gauges that describe the claims (how many in each phase, when each is due) are
computed from the scheduler's memory at scrape time: nothing is updated per
event, and a scrape never calls the Kubernetes API.

Following Prometheus' practice: process and Python metrics, a build-info gauge, no
`_created` series, every labelled series the operator can enumerate exported at 0 from
the start (so `rate()` and alerts see the first event), bounded cardinality (series per
claim only with PER_CLAIM_METRICS=true), and the gauges that describe claims exported by
the active replica only, so a `sum()` over replicas counts each claim once.
"""

from __future__ import annotations

import datetime
import importlib.metadata
import socket
from collections import Counter as Tally
from collections.abc import Callable, Iterable, Iterator
from typing import Protocol

from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    Info,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from evc_operator import collector
from evc_operator.lifecycle import Countdown, Decision, Phase
from evc_operator.status import Reason
from evc_operator.timestamps import utcnow

# A `_created` series beside every counter is noise.
disable_created_metrics()  # type: ignore[no-untyped-call]
REGISTRY = CollectorRegistry()
ProcessCollector(registry=REGISTRY)  # process_cpu_seconds_total, process_resident_memory...
PlatformCollector(registry=REGISTRY)  # python_info
GCCollector(registry=REGISTRY)  # python_gc_*


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


BUILD = Info("evc_build", "The operator's version (and Kopf's), as labels of a 1.",
             registry=REGISTRY)
BUILD.info({"version": _version("evc-operator"), "kopf_version": _version("kopf")})

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
API_REQUESTS = Counter(
    "evc_api_requests", "Requests of the operator to the Kubernetes API (Kopf's watch of "
    "EphemeralVolumeClaims aside), by verb, resource and HTTP status code (0: no answer).",
    ["verb", "resource", "code"], registry=REGISTRY)
RECONCILE_FAILURES = Counter(
    "evc_reconcile_failures", "Reconciliations that failed and were retried later.",
    registry=REGISTRY)
RECONCILE_LIMIT = Gauge(
    "evc_reconcile_limit", "How many claims may be reconciled at once now: adapted to the "
    "API server's latency and overload answers (limiter.py).", registry=REGISTRY)
EVENTS_WAITING = Gauge(
    "evc_events_waiting", "Events announced and not posted yet: they give way to claims "
    "waiting for a slot (outbox.py).", registry=REGISTRY)
REACTION = Histogram(
    "evc_reaction_seconds", "From noticing a change (or a deadline) to having acted on it: "
    "status written, PVC created or claim deleted.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 1, 1.5, 2, 2.5, 5, 10, 30),
    registry=REGISTRY)
DELETION_LATENESS = Histogram(
    "evc_deletion_lateness_seconds", "How long after its deadline a claim was deleted.",
    buckets=(0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300), registry=REGISTRY)
# Where a deletion's lateness goes, in the operator: its namespace's proof, then its slot.
_PARTS = (0.05, 0.1, 0.25, 0.5, 0.75, 1, 1.25, 1.5, 2, 3, 5, 10, 30)
PROOF = Histogram(
    "evc_proof_seconds", "How long proving a namespace's users current took, for the "
    "deletions due there (proof.py: a consistent read, then a watch reaching that far, or "
    "a full list).", buckets=_PARTS, registry=REGISTRY)
DELETION_SLOT_WAIT = Histogram(
    "evc_deletion_slot_wait_seconds", "How long a deletion, its namespace proven current, "
    "waited for a slot to be reconciled again (limiter.py).", buckets=_PARTS,
    registry=REGISTRY)
GC_PAUSES = collector.Pauses()  # counted by the collector's hook, read when scraped


# Each replica's own (its clock is its own): exported by standbys too, 0 until learnt.
CLOCK_SKEW = Gauge(
    "evc_clock_skew_seconds", "The API server's clock minus this process's, as learnt from "
    "the Date headers of its responses (deadlines follow the server's clock).",
    registry=REGISTRY)


# Failures that mean the environment is broken (no answer; the RBAC forbids it): every
# operation's series of these exist from the start.
KNOWN_FAILURES = ("0", "403")


def initialise(operations: Iterable[str]) -> None:
    """Export every labelled series the operator can enumerate, at 0, before any event."""
    for reason in Countdown:
        DELETIONS.labels(str(reason))
        DRY_RUN_DELETIONS.labels(str(reason))
    for operation in operations:
        for status in KNOWN_FAILURES:
            API_ERRORS.labels(operation, status)


def count_api_error(operation: str, status: int) -> None:
    """The API layer's error hook (apihooks.set_error_hook)."""
    API_ERRORS.labels(operation, str(status)).inc()


def count_api_request(verb: str, resource: str, code: int) -> None:
    """The API layer's request hook (apihooks.set_request_hook)."""
    API_REQUESTS.labels(verb, resource, str(code)).inc()


class Observed(Protocol):
    """What the scheduler tells about the claims it holds."""

    active: bool

    def phases(self) -> Iterable[Phase | None]: ...

    def reasons(self) -> Iterable[str | None]: ...

    def unwatched(self) -> int:
        """Claims whose status has the UnwatchedController condition (unwatched.py)."""

    def countdowns(self) -> Iterable[tuple[tuple[str, str], Decision]]: ...

    def ready(self) -> bool: ...


class GcPausesCollector(Collector):
    """`evc_gc_pause_seconds`: the garbage collector's pauses, by generation, read from
    `collector.Pauses` when scraped (a Histogram's lock could be held by the scrape that
    a pass interrupts)."""

    def __init__(self, pauses: collector.Pauses) -> None:
        self.pauses = pauses

    def collect(self) -> Iterator[HistogramMetricFamily]:
        family = HistogramMetricFamily(
            "evc_gc_pause_seconds", "How long each pass of Python's garbage collector "
            "stopped the operator (and its event loop), by generation: 2 is a full pass.",
            labels=["generation"])
        for generation in range(collector.GENERATIONS):
            buckets, total = self.pauses.histogram(generation)
            family.add_metric([str(generation)], buckets, total)
        yield family


REGISTRY.register(GcPausesCollector(GC_PAUSES))


class ClaimsCollector(Collector):
    """Claims by phase and reason, their countdowns, read from the scheduler when scraped.

    Gauges about the claims come from the active replica only (a standby holds the same
    claims: a sum over replicas would count them twice); a standby exports them empty.
    """

    def __init__(self, observed: Observed, *, per_claim: bool = False,
                 clock: Callable[[], datetime.datetime] = utcnow) -> None:
        self.observed = observed
        self.per_claim = per_claim
        self.clock = clock

    def collect(self) -> Iterator[GaugeMetricFamily]:
        active = self.observed.active
        phases_held = list(self.observed.phases())
        yield from self._claims(phases_held if active else None)
        pending = list(self.observed.countdowns()) if active else []
        countdowns = GaugeMetricFamily(
            "evc_countdowns", "Claims whose countdown (expiry or grace) the scheduler holds: "
            "after a restart, all of them again once it has resumed. Active replica only.")
        overdue = GaugeMetricFamily(
            "evc_claims_overdue", "Claims whose deadline has passed and which still exist "
            "(deletions late, or paused by DRY_RUN). Active replica only.")
        earliest = GaugeMetricFamily(
            "evc_earliest_deletion_timestamp_seconds", "When the first of the running "
            "countdowns ends (Unix time); absent without one. Active replica only.")
        deadlines = [d.deletes_at for _, d in pending if d.deletes_at is not None]
        if active:
            now = self.clock()
            countdowns.add_metric([], len(pending))
            overdue.add_metric([], sum(1 for deadline in deadlines if deadline <= now))
            if deadlines:
                earliest.add_metric([], min(deadlines).timestamp())
        yield countdowns
        yield overdue
        yield earliest
        if self.per_claim:
            yield self._deadlines(pending)

        tracked = GaugeMetricFamily("evc_claims_tracked",
                                    "EphemeralVolumeClaims this replica holds in memory.")
        tracked.add_metric([], len(phases_held))
        yield tracked
        leader = GaugeMetricFamily("evc_leader", "1 while this replica is the active one.")
        leader.add_metric([], 1 if active else 0)
        yield leader
        ready = GaugeMetricFamily("evc_pod_view_complete",
                                  "1 once every namespace with claims has had its pods "
                                  "and PVCs listed.")
        ready.add_metric([], 1 if self.observed.ready() else 0)
        yield ready

    def _claims(self, phases_held: list[Phase | None] | None) -> Iterator[GaugeMetricFamily]:
        phases = GaugeMetricFamily(
            "evc_claims", "EphemeralVolumeClaims, by phase (Unknown: no status yet; "
            "Deleting: deletion begun, held by a finalizer, or due and refused by the API "
            "server). Active replica only.",
            labels=["phase"])
        reasons = GaugeMetricFamily(
            "evc_claims_by_reason", "EphemeralVolumeClaims whose status.reason flags them: "
            "PvcConflict, InvalidSpec, PvcUpdateRejected, PvcRefused, PvcSpecMismatch, "
            "LabelsTooLarge, PvcLost, PvcUpdateFailing; deletion paused by Kept or DryRun "
            "(InvalidSpec pauses it too), or refused (DeletionRefused). Active replica "
            "only.", labels=["reason"])
        if phases_held is not None:
            counted = Tally(str(phase or "Unknown") for phase in phases_held)
            for phase in [*(str(p) for p in Phase), "Unknown"]:
                phases.add_metric([phase], counted.get(phase, 0))
            flagged = Tally(self.observed.reasons())
            for reason in Reason:
                reasons.add_metric([str(reason)], flagged.get(str(reason), 0))
        unwatched = GaugeMetricFamily(
            "evc_claims_unwatched_controller", "EphemeralVolumeClaims with the condition "
            "UnwatchedController: their users are pods only, run by a controller the "
            "operator does not watch (or a workload whose template does not name the claim): "
            "between those pods nothing holds the claim. Active replica only.")
        if phases_held is not None:
            unwatched.add_metric([], self.observed.unwatched())
        yield phases
        yield reasons
        yield unwatched

    @staticmethod
    def _deadlines(pending: list[tuple[tuple[str, str], Decision]]) -> GaugeMetricFamily:
        deadlines = GaugeMetricFamily(
            "evc_deletion_timestamp_seconds",
            "When each claim with a running countdown will be deleted (Unix time); with "
            "PER_CLAIM_METRICS=true only. Active replica only.",
            labels=["namespace", "name", "countdown"])
        for (namespace, name), decision in pending:
            if decision.deletes_at is not None and decision.countdown is not None:
                deadlines.add_metric([namespace, name, str(decision.countdown)],
                                     decision.deletes_at.timestamp())
        return deadlines


def listen(address: str, port: int) -> socket.socket:
    """The listening socket of /metrics and /readyz; OSError if the port is taken."""
    return socket.create_server((address, port), reuse_port=False,
                                family=socket.AF_INET6 if ":" in address else socket.AF_INET)


async def serve(observed: Observed, listening: socket.socket, *,
                per_claim: bool = False) -> web.AppRunner:
    """Serve /metrics and /readyz on a socket from `listen`; the caller cleans the runner
    up."""
    REGISTRY.register(ClaimsCollector(observed, per_claim=per_claim))

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
    await web.SockSite(runner, listening).start()
    return runner
