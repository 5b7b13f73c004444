"""The observer of the fault scenarios: the API server's audit log, not the operator.

From the audit log (who did what, to which object, when, as the server saw it) and the
driver's record of which pod mounts which claim, `Judge` rebuilds every claim's true
deadline and reports each broken invariant (see `tests.faults.scenario` and
docs/reliability.md). When a pod ended comes from its status writes: the driver's own
(no node: any status write ends it) or, on a real node, the kubelet's write that made
it `Succeeded` or `Failed` (its body is in the audit log); its removal ends it too.

Replicated workloads and CronJobs are users in spans (`Spans`), read from the audit log
with what the driver recorded (`Deployment`): a Deployment from its creation (replicas 1)
and from each scale-up until each scale to 0 or its deletion; each of its ReplicaSets,
which follow it, from a write of its controller's (or its creation) while its Deployment
is above zero until the first such write after its Deployment went to zero, or its
deletion; its pods as pods; a CronJob from its creation to its deletion. Each span is a
use of its own (`Deployment/web`, then `Deployment/web#2`, ...), ending where the API
server took the write: the operator counts the grace from when it sees that write, which
is later, never earlier (docs/lifecycle.md, "Workloads").
"""

from __future__ import annotations

import dataclasses
import datetime
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tests.faults.deadlines import Use, latest, settle

UTC = datetime.UTC
OPERATOR_AGENT = "evc-operator"
# Seconds a deletion may lag its true deadline when nothing fails, as the design has it:
# an end of use is recorded rounded up to the second (up to 1 s), on the server's clock
# taken the late way (up to 1 s while the operator has few responses to bound it by, as
# after each restart); the proof before the delete waits for a bookmark (the API server's
# timer: up to 1.25 s after the deadline); and 0.75 s for the watch that brings the end and
# for the delete itself. It was 3 s: measured on 2026-12-07, deletions came a median 2.0 s
# and at worst 2.96 s after their deadlines (seeds 345-352), and once 3.1 s in CI.
BOUND = 4.0
RECOVERY = 10.0  # after an outage: the operator restarts or reconnects, relists, decides
TERMINAL = ("Succeeded", "Failed")


def now() -> datetime.datetime:
    return datetime.datetime.now(UTC)


def parse(stamp: str) -> datetime.datetime:
    return datetime.datetime.fromisoformat(stamp.replace("Z", "+00:00"))


@dataclasses.dataclass
class Claim:
    name: str
    expiry: int
    grace: int
    conflict: bool = False  # its name is taken by a PVC that someone else made
    created: datetime.datetime | None = None  # its creationTimestamp


@dataclasses.dataclass
class Pod:
    name: str
    claim: str
    ended: bool = False
    deleted: bool = False


def deployment_of(pod: str) -> str:
    """The Deployment a ReplicaSet's pod is of, by its name: `<deployment>-<hash>-<id>`."""
    return pod.rpartition("-")[0].rpartition("-")[0]


@dataclasses.dataclass
class Deployment:
    """A Deployment the driver made (replicas 1) whose template mounts `claim`, and the
    replicas of each of its scale writes, in order (the audit log keeps no bodies)."""

    claim: str
    scales: list[int] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class Span:
    name: str  # the use's: `Kind/name`, then `Kind/name#2`, ...
    began: datetime.datetime
    ended: datetime.datetime | None = None
    deleted: bool = False  # ended by the workload's removal


class Spans:
    """When each workload was an active user, by `Kind/name`: its spans in order."""

    def __init__(self) -> None:
        self.spans: dict[str, list[Span]] = {}
        self.claim_of: dict[str, str] = {}  # by `Kind/name`: the claim its template mounts
        self.scaled: dict[str, int] = {}  # by Deployment: its scale writes read so far

    def active(self, user: str) -> bool:
        spans = self.spans.get(user) or []
        return bool(spans) and spans[-1].ended is None

    def begin(self, user: str, when: datetime.datetime) -> None:
        if not self.active(user):
            spans = self.spans.setdefault(user, [])
            spans.append(Span(user if not spans else f"{user}#{len(spans) + 1}", when))

    def end(self, user: str, when: datetime.datetime, deleted: bool = False) -> None:
        if self.active(user):
            self.spans[user][-1].ended = when
            self.spans[user][-1].deleted = deleted

    def named_at(self, user: str, when: datetime.datetime) -> str:
        """The span a status write at `when` that names `user` speaks of: the last one
        begun by then (the user's own name if it has no span)."""
        begun = [span for span in self.spans.get(user, ()) if span.began <= when]
        return begun[-1].name if begun else user


@dataclasses.dataclass
class Report:
    seed: int
    namespace: str
    claims: int = 0
    pods: int = 0
    faults: dict[str, int] = dataclasses.field(default_factory=dict)
    deletions: int = 0
    latecomers: int = 0  # users created after their claim was due: counted, not judged
    # Seconds each deletion came after its deadline, where no outage extended the bound:
    # how close to BOUND the operator comes (a margin that shrinks is seen before a failure).
    lateness: list[float] = dataclasses.field(default_factory=list)
    violations: list[str] = dataclasses.field(default_factory=list)
    seconds: float = 0.0

    def line(self) -> str:
        faults = ", ".join(f"{k} {v}" for k, v in sorted(self.faults.items())) or "none"
        verdict = "ok" if not self.violations else f"{len(self.violations)} VIOLATIONS"
        return (f"seed {self.seed}: {self.claims} claims, {self.pods} pods, "
                f"{self.deletions} deleted, faults: {faults}; "
                + (f"{self.latecomers} latecomers; " if self.latecomers else "")
                + (f"late {max(self.lateness):.1f} s at most; " if self.lateness else "")
                + f"{self.seconds:.0f} s; {verdict}")


@dataclasses.dataclass
class Judge:
    audit_log: Path
    namespace: str
    claims: list[Claim]
    pods: list[Pod]  # every user: pods, and Jobs as `Job/<name>`
    job_ends: dict[str, datetime.datetime]  # `Job/<name>`: when it finished
    outages: list[tuple[datetime.datetime, datetime.datetime]]
    report: Report
    kubelet: bool = False  # pods really run: the kubelet reports their ends
    # The claims still there when judged (None: not known). One gone with no DELETE of the
    # operator's answered 2xx was taken as still there and judged on time: now the first
    # DELETE answered 5xx (its write made, the answer lost) is its deletion, and with none
    # at all (its entry lost) it is a violation, as it cannot be judged.
    remaining: set[str] | None = None
    # Simulated pods: the finishedAt the driver reported (what the operator reads).
    reported_ends: dict[str, datetime.datetime] = dataclasses.field(default_factory=dict)
    deployments: dict[str, Deployment] = dataclasses.field(default_factory=dict)  # by name
    cronjobs: dict[str, str] = dataclasses.field(default_factory=dict)  # name -> its claim

    def _audit(self, offset: int) -> Iterator[dict[str, Any]]:
        with self.audit_log.open() as log:
            log.seek(offset)
            for line in log:
                if f'"namespace":"{self.namespace}"' not in line:
                    continue
                entry: dict[str, Any] = json.loads(line)
                code = (entry.get("responseStatus") or {}).get("code", 0)
                # Answered 5xx, a request may have been done all the same (its write made,
                # the answer lost as the API server stopped): kept, `code` says so.
                if entry.get("stage") == "ResponseComplete" and (200 <= code < 300
                                                                 or code >= 500):
                    yield entry

    def _pod_entry(self, entry: dict[str, Any], name: str, when: datetime.datetime,
                   ended: dict[str, datetime.datetime],
                   gone: dict[str, datetime.datetime]) -> None:
        if entry["verb"] == "delete":  # the last delete removes it (a graceful one marks it)
            gone[name] = when
            if not self.kubelet:
                ended.setdefault(name, when)
        elif entry["objectRef"].get("subresource") == "status":
            phase = ((entry.get("responseObject") or {}).get("status") or {}).get("phase")
            if not self.kubelet or phase in TERMINAL:
                ended.setdefault(name, when)  # the first end counts

    def run(self, offset: int) -> None:
        """Judge the audit log's entries from `offset` on."""
        created: dict[str, datetime.datetime] = {}
        ended: dict[str, datetime.datetime] = {}
        gone: dict[str, datetime.datetime] = {}
        claim_created: dict[str, datetime.datetime] = {}
        deleted_claims: dict[str, datetime.datetime] = {}
        seen: dict[str, set[str]] = {}  # by claim: the users the operator named in status
        operator_pvc_writes: list[str] = []
        unanswered: dict[str, datetime.datetime] = {}  # the operator's DELETEs answered 5xx
        spans = Spans()
        workload_entries: list[tuple[datetime.datetime, dict[str, Any]]] = []
        named: list[tuple[str, datetime.datetime, list[str]]] = []  # claim, when, userNames
        replicated: dict[str, datetime.datetime] = {}  # a Deployment's pod: first named
        for entry in self._audit(offset):
            ref, verb = entry.get("objectRef") or {}, entry["verb"]
            if entry["responseStatus"]["code"] >= 500:
                if (ref.get("resource") == "ephemeralvolumeclaims" and verb == "delete"
                        and entry.get("userAgent", "").startswith(OPERATOR_AGENT)):
                    unanswered.setdefault(ref.get("name", ""), parse(
                        entry.get("requestReceivedTimestamp") or entry["stageTimestamp"]))
                continue
            when = parse(entry["stageTimestamp"])
            resource, name = ref.get("resource"), ref.get("name", "")
            by_operator = entry.get("userAgent", "").startswith(OPERATOR_AGENT)
            if resource == "pods" and verb == "create" and not ref.get("subresource"):
                created[name] = when  # not its binding to a node, which may come much later
            elif resource == "pods":
                self._pod_entry(entry, name, when, ended, gone)
                # A ReplicaSet's pod (<deployment>-<hash>-<id>): its creation, under a
                # generated name, is logged without it (metadata only); named when it is
                # written or removed.
                if deployment_of(name) in self.deployments:
                    replicated.setdefault(name, when)
            elif resource == "jobs" and verb == "create" and not ref.get("subresource"):
                created[f"Job/{name}"] = when
            elif resource in ("deployments", "replicasets", "cronjobs"):
                workload_entries.append((parse(entry.get("requestReceivedTimestamp")
                                               or entry["stageTimestamp"]), entry))
            elif resource == "ephemeralvolumeclaims" and verb == "create":
                claim_created[name] = when
            elif resource == "ephemeralvolumeclaims" and verb == "delete" and by_operator:
                # The first (a claim held by a finalizer may be deleted again), as the
                # server received it (not when it answered, after the write).
                deleted_claims.setdefault(name, parse(
                    entry.get("requestReceivedTimestamp") or entry["stageTimestamp"]))
            elif (resource == "ephemeralvolumeclaims" and ref.get("subresource") == "status"
                  and by_operator):
                status = (entry.get("responseObject") or {}).get("status") or {}
                named.append((name, when, list(status.get("userNames") or ())))
            elif (resource == "persistentvolumeclaims" and by_operator
                  and verb in ("update", "patch", "delete")):
                operator_pvc_writes.append(name)
        for name, at in gone.items():  # its removal ends a pod, if nothing did before
            ended[name] = min(ended.get(name, at), at)
        # In the order the server received them: the log is in the order it answered, and
        # a ReplicaSet's controller may write it (answered) before the scale of its
        # Deployment that made it do so is answered.
        for _received, entry in sorted(workload_entries, key=lambda pair: pair[0]):
            self._workload_entry(entry, parse(entry["stageTimestamp"]), spans)
        for name, when, users in named:
            seen.setdefault(name, set()).update(spans.named_at(user, when) for user in users)
        for pod in self.pods:  # one the driver listed, never named in the log (Pending)
            if deployment_of(pod.name) in self.deployments:
                replicated.setdefault(pod.name, now())
        listed = {pod.name for pod in self.pods}
        pods = [*self.pods, *(pod for pod in self._replicated_pods(replicated, spans, created)
                              if pod.name not in listed)]
        for pod in self.pods:  # a Job's pod: its creation logged without its generated name
            job = f"Job/{pod.name.rpartition('-')[0]}"
            if pod.name not in created and job in created:
                created[pod.name] = created[job]  # no later than it was
        finished = now()
        ended.update(self.job_ends)  # a Job: a user until it finished
        self.report.deletions = len(deleted_claims)
        for claim in self.claims:
            if claim.conflict and claim.name in operator_pvc_writes:
                self.report.violations.append(f"{claim.name}: the operator wrote to a PVC "
                                              f"it did not create")
            if claim.created is None:
                continue
            deleted_at = deleted_claims.get(claim.name)
            if (deleted_at is None and self.remaining is not None
                    and claim.name not in self.remaining):
                # Gone: by a DELETE of the operator's answered 5xx, if any (its write made,
                # the answer lost as the API server stopped: seen in CI, seed 9).
                deleted_at = unanswered.get(claim.name)
            if (deleted_at is None and self.remaining is not None
                    and claim.name not in self.remaining):
                self.report.violations.append(
                    f"{claim.name} is gone, and no DELETE of the operator's is in the audit "
                    f"log: its deletion cannot be judged")
                continue
            moment = deleted_at or finished
            # A pod deleted before the claim existed never used it; one that had merely
            # finished still exists and counts from the claim's start (as if it ended then).
            born = claim_created.get(claim.name, claim.created)
            # One whose container ended (its reported finishedAt, as the operator reads it;
            # else its first end in the audit log) in an earlier second than the claim's
            # creation never used it.
            candidates = [p for p in pods if p.claim == claim.name
                          and p.name in created and created[p.name] < moment
                          and not (p.name in gone and gone[p.name] < born)
                          and not self._ended_before(p.name, ended, born)]
            uses = [Use(p.name, created[p.name],
                        max(ended[p.name], born) if p.name in ended else None)
                    for p in candidates]
            # A workload's spans likewise: one removed before the claim existed, or scaled
            # to 0 in an earlier second than its creation (the operator reads that write's
            # time to the second, from managedFields), never used it.
            uses += [Use(span.name, span.began,
                         max(span.ended, born) if span.ended is not None else None)
                     for user, claimed in spans.claim_of.items() if claimed == claim.name
                     for span in spans.spans.get(user, ()) if span.began < moment
                     and not (span.ended is not None and span.ended < (
                         born if span.deleted else born.replace(microsecond=0)))]
            # creationTimestamp is cut to the second: expiry counts from the next one.
            expires = claim.created + datetime.timedelta(seconds=1 + claim.expiry)
            grace = datetime.timedelta(seconds=claim.grace)
            verdict = settle(expires, uses, grace, seen.get(claim.name, ()))
            self.report.latecomers += len(verdict.latecomers)
            for use in verdict.users:
                if deleted_at is not None and (use.ended is None or use.ended > deleted_at):
                    self.report.violations.append(
                        f"{claim.name} deleted at {deleted_at:%H:%M:%S.%f} "
                        f"while {use.name} was active")
            deadline = verdict.deadline
            if deadline is None:
                continue  # a user never ended: it must not have been deleted (checked above)
            if deleted_at is not None and deleted_at < deadline:
                self.report.violations.append(
                    f"{claim.name} deleted {(deadline - deleted_at).total_seconds():.2f} s early")
            # Late only past the latest deadline a latecomer it may have seen could set.
            deadline = latest(expires, uses, grace, self._allowed, seen.get(claim.name, ()))
            if deadline is None:
                continue
            allowed = self._allowed(deadline)
            if deleted_at is not None and allowed == deadline + datetime.timedelta(seconds=BOUND):
                self.report.lateness.append((deleted_at - deadline).total_seconds())
            if (deleted_at or finished) > allowed:
                late = ((deleted_at or finished) - deadline).total_seconds()
                self.report.violations.append(
                    f"{claim.name} {'deleted' if deleted_at else 'still there'} {late:.1f} s after "
                    f"its deadline (allowed {(allowed - deadline).total_seconds():.1f} s; "
                    f"deadline {deadline:%H:%M:%S.%f}, users "
                    + ", ".join(f"{use.name} {use.created:%H:%M:%S.%f}-"
                                + (f"{use.ended:%H:%M:%S.%f}" if use.ended else "")
                                for use in uses) + ")")

    def _workload_entry(self, entry: dict[str, Any], when: datetime.datetime,
                        spans: Spans) -> None:
        """A write of a Deployment, ReplicaSet or CronJob the driver made: its spans."""
        ref, verb = entry["objectRef"], entry["verb"]
        resource, name, subresource = ref["resource"], ref.get("name", ""), ref.get("subresource")
        if resource == "cronjobs" and name in self.cronjobs and not subresource:
            spans.claim_of[f"CronJob/{name}"] = self.cronjobs[name]
            if verb == "create":
                spans.begin(f"CronJob/{name}", when)
            elif verb == "delete":
                spans.end(f"CronJob/{name}", when, deleted=True)
        elif resource == "deployments" and name in self.deployments:
            user, deployment = f"Deployment/{name}", self.deployments[name]
            spans.claim_of[user] = deployment.claim
            if verb == "create" and not subresource:
                spans.begin(user, when)  # replicas 1
            elif verb == "delete" and not subresource:
                spans.end(user, when, deleted=True)
            elif subresource == "scale" and verb in ("update", "patch"):
                done = spans.scaled.get(name, 0)
                spans.scaled[name] = done + 1
                if done < len(deployment.scales) and deployment.scales[done] > 0:
                    spans.begin(user, when)
                elif done < len(deployment.scales):
                    spans.end(user, when)
        elif resource == "replicasets" and name.rpartition("-")[0] in self.deployments:
            owner = name.rpartition("-")[0]
            user = f"ReplicaSet/{name}"
            spans.claim_of[user] = self.deployments[owner].claim
            if verb == "delete" and not subresource:
                spans.end(user, when, deleted=True)
            elif verb in ("create", "update", "patch") and not subresource:
                # Its controller's writes follow the Deployment's replicas as it has them;
                # once its Deployment is deleted, its replicas stay until it is removed.
                parent = spans.spans.get(f"Deployment/{owner}") or []
                if spans.active(f"Deployment/{owner}"):
                    spans.begin(user, when)
                elif not (parent and parent[-1].deleted):
                    spans.end(user, when)

    def _replicated_pods(self, first_named: dict[str, datetime.datetime], spans: Spans,
                         created: dict[str, datetime.datetime]) -> list[Pod]:
        """The pods of the Deployments' ReplicaSets, as users (by when each was first named
        in the log, or listed). One is created while its ReplicaSet is above zero: taken as
        created when that span of its ReplicaSet began (no later than it was), its end read
        as any pod's."""
        pods = []
        for name, first in first_named.items():
            replica_set = name.rpartition("-")[0]
            begun = [span.began for span in spans.spans.get(f"ReplicaSet/{replica_set}", ())
                     if span.began <= first]
            created[name] = begun[-1] if begun else first
            pods.append(Pod(name, self.deployments[deployment_of(name)].claim))
        return pods

    def _ended_before(self, name: str, ended: dict[str, datetime.datetime],
                      born: datetime.datetime) -> bool:
        end = self.reported_ends.get(name, ended.get(name))
        return end is not None and end < born.replace(microsecond=0)

    def _allowed(self, deadline: datetime.datetime) -> datetime.datetime:
        """The deadline plus the bound, pushed past any outage that overlapped it."""
        allowed = deadline + datetime.timedelta(seconds=BOUND)
        changed = True
        while changed:
            changed = False
            for began, ended in self.outages:
                if began <= allowed and ended + datetime.timedelta(seconds=RECOVERY) > allowed \
                        and ended >= deadline - datetime.timedelta(seconds=RECOVERY):
                    allowed = ended + datetime.timedelta(seconds=RECOVERY)
                    changed = True
        return allowed
