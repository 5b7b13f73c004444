"""The operator's API requests, read from the API server's audit log. Pure parsing.

The log is the API server's own record, independent of the operator: it counts
requests the operator's metrics could not see (Kopf's watches and lists).
"""

from __future__ import annotations

import bisect
import dataclasses
import datetime
import json
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

CONTROLLER_MANAGER = "kube-controller-manager"  # its user in controlplane's tokens
WRITES = frozenset({"create", "update", "patch", "delete", "deletecollection"})
# Questions asked by a `create` that stores nothing (the API server answers in the response
# and keeps no object): the operator's RBAC check at start. Requests, not writes.
REVIEWS = frozenset({"selfsubjectaccessreviews", "selfsubjectrulesreviews",
                     "subjectaccessreviews", "localsubjectaccessreviews", "tokenreviews",
                     "selfsubjectreviews"})


@dataclasses.dataclass(frozen=True)
class Request:
    verb: str
    resource: str  # "pods", "ephemeralvolumeclaims/status", or a non-resource path
    code: int
    at: float  # Unix time the API server received it
    namespace: str = ""
    name: str = ""
    done: float = 0.0  # Unix time of the logged stage: answered (a watch: its start)
    probe: bool = False  # a read of at most one object (`limit=1`): a consistent read

    @property
    def write(self) -> bool:
        """Whether it writes an object (a review asks, and stores nothing)."""
        return self.verb in WRITES and self.resource not in REVIEWS

    @property
    def label(self) -> str:
        return f"{self.verb} {self.resource}"


def _seconds(stamp: str) -> float:
    return datetime.datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def requests(lines: Iterable[str], user: str) -> Iterator[Request]:
    """Each request by `user` once (a watch is logged when it starts and when it ends)."""
    seen: set[str] = set()
    for line in lines:
        try:
            entry = json.loads(line)
        except ValueError:
            continue  # a line cut short by a stopped API server
        if (entry.get("user") or {}).get("username") != user or entry["auditID"] in seen:
            continue
        seen.add(entry["auditID"])
        ref = entry.get("objectRef") or {}
        resource = ref.get("resource") or entry.get("requestURI", "?").split("?")[0]
        if ref.get("subresource"):
            resource += "/" + ref["subresource"]
        received = _seconds(entry["requestReceivedTimestamp"])
        yield Request(verb=entry["verb"], resource=resource,
                      code=int((entry.get("responseStatus") or {}).get("code") or 0),
                      at=received, namespace=ref.get("namespace") or "",
                      name=ref.get("name") or "",
                      done=_seconds(entry["stageTimestamp"]) if entry.get("stageTimestamp")
                      else received,
                      probe="limit=1&" in entry.get("requestURI", "") + "&")


def read(path: Path, user: str) -> list[Request]:
    """Requests in the log at `path` and in the files the API server rotated it into
    (`audit-<time>.log`, at 100 MB each), oldest first."""
    rotated = sorted(path.parent.glob(f"{path.stem}-*{path.suffix}"))
    found: list[Request] = []
    for part in [*rotated, path]:
        if part.exists():
            with part.open(errors="replace") as lines:
                found.extend(requests(lines, user))
    return found


def tally(found: Iterable[Request]) -> dict[str, int]:
    """Requests by "verb resource", most frequent first."""
    return dict(Counter(request.label for request in found).most_common())


def between(found: Iterable[Request], start: float, end: float) -> list[Request]:
    return [request for request in found if start <= request.at < end]


def cost(found: list[Request], claims: int, idle_start: float,
         idle_end: float) -> dict[str, Any]:
    """A run's API cost: `found` are the operator's requests during the run, `claims` how
    many claims it served, and nothing changed between `idle_start` and `idle_end`."""
    writes = [request for request in found if request.write]
    idle_writes = [request for request in between(found, idle_start, idle_end)
                   if request.write]
    return {
        "requests": len(found),
        "requests_per_claim": round(len(found) / claims, 2),
        "writes": len(writes),
        "writes_per_claim_lifetime": round(len(writes) / claims, 2),
        "writes_per_claim_by_kind": {label: round(count / claims, 2)
                                     for label, count in tally(writes).items()},
        "requests_by_verb": tally(found),
        "idle_writes_per_minute": round(len(idle_writes) * 60 / (idle_end - idle_start), 2),
        "failed": sum(1 for request in found if request.code >= 400),
    }


def claims_read(found: Iterable[Request], start: float) -> int:
    """Claims read one by one (`get ephemeralvolumeclaims`) from `start` on: records
    confirmed by a read (confirm.py). After a restart, the records the restarted operator
    found sealed less than seal.SPACING before and read back (`seal.confirm_found`)."""
    return sum(1 for request in found if request.at >= start and request.verb == "get"
               and request.resource == "ephemeralvolumeclaims")


def busiest_second(found: Iterable[Request]) -> int:
    """The most requests the API server received in one second (of the clock)."""
    return max(Counter(int(request.at) for request in found).values(), default=0)


def per_job(found: list[Request], jobs: int, busy_start: float,
            busy_end: float) -> dict[str, Any]:
    """kube-controller-manager's requests in a run with `jobs` Jobs (all its controllers
    share one client and its rate limit), per Job, and how many a second while the Jobs'
    pods finished (from `busy_start` to `busy_end`)."""
    busy = between(found, busy_start, busy_end)
    return {"requests_per_job": round(len(found) / jobs, 2),
            "requests_per_job_by_kind": {label: round(count / jobs, 2)
                                         for label, count in tally(found).items()},
            "per_second_while_finishing": round(len(busy) / (busy_end - busy_start), 1),
            "busiest_second": busiest_second(found)}


def deletion_split(found: list[Request], deletes_at: dict[tuple[str, str], float],
                   seen: dict[tuple[str, str], float]) -> dict[str, list[float]]:
    """Where each claim's deletion lateness went, in seconds, by the API server's clock
    of the operator's requests: from the deadline to the consistent read of the pods
    that began its proof (the first in its namespace at or after the deadline: the
    proof of that second), from there to its delete, the delete's answer, and from the
    answer to the harness seeing it gone (`seen`). `deletes_at`: each claim's deadline,
    by (namespace, name)."""
    reads: dict[str, list[float]] = {}
    for request in found:
        if request.probe and request.verb == "list" and request.resource == "pods":
            reads.setdefault(request.namespace, []).append(request.at)
    for times in reads.values():
        times.sort()
    split: dict[str, list[float]] = {"proof_began": [], "proof_to_delete": [],
                                     "delete_answered": [], "seen_after_answer": []}
    for request in found:
        key = (request.namespace, request.name)
        if (request.verb != "delete" or request.resource != "ephemeralvolumeclaims"
                or key not in deletes_at or request.code >= 400):
            continue
        times = reads.get(request.namespace, [])
        first = bisect.bisect_left(times, deletes_at[key])
        if first < len(times) and times[first] <= request.at:
            began = times[first]
            split["proof_began"].append(began - deletes_at[key])
            split["proof_to_delete"].append(request.at - began)
        split["delete_answered"].append(request.done - request.at)
        if key in seen:
            split["seen_after_answer"].append(seen[key] - request.done)
    return split


def reaction_split(found: list[Request], sent: dict[tuple[str, str], float],
                   phases: dict[tuple[str, str], dict[str, float]]) -> dict[str, list[float]]:
    """Where each claim's reaction went, in seconds: from the harness ending its user
    (`sent`) until the API server received the operator's next status write of the claim
    (its `Idle`: the pod's change on its way to the operator, and the operator's work),
    the write's answer, and from the answer until the harness's watch saw the claim
    `Idle` (`phases`)."""
    writes: dict[tuple[str, str], list[Request]] = {}
    for request in found:
        if request.verb == "patch" and request.resource == "ephemeralvolumeclaims/status":
            writes.setdefault((request.namespace, request.name), []).append(request)
    split: dict[str, list[float]] = {"to_write": [], "write_answered": [],
                                     "seen_after_answer": []}
    for key, at in sent.items():
        after = [write for write in writes.get(key, ()) if write.at >= at]
        if not after:
            continue
        write = min(after, key=lambda each: each.at)
        split["to_write"].append(write.at - at)
        split["write_answered"].append(write.done - write.at)
        if "Idle" in phases.get(key, {}):
            split["seen_after_answer"].append(phases[key]["Idle"] - write.done)
    return split


def splits(found: list[Request], sent: dict[tuple[str, str], float],
           phases: dict[tuple[str, str], dict[str, float]],
           deletes_at: dict[tuple[str, str], float],
           deleted: dict[tuple[str, str], float]) -> dict[str, dict[str, list[float]]]:
    """A run's reaction and deletion lateness, each split as above."""
    return {"reaction_split_ms": reaction_split(found, sent, phases),
            "deletion_split_ms": deletion_split(found, deletes_at, deleted)}
