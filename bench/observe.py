"""What the harness sees through its own watches: the yardstick for the operator.

A claim's phase is timed when the harness's watch delivers it; the floor is the
same harness's watch of pods seeing the change it made. Both pass through the
same API server, network stack and event loop, so their ratio is the operator's
own share.
"""

from __future__ import annotations

import asyncio
import datetime
import time
from collections.abc import Callable, Mapping
from typing import Any

from bench.client import Api
from evc_operator.seal import SPACING

Key = tuple[str, str]
EVCS = "/apis/zalando.org/v1/ephemeralvolumeclaims"
PODS = "/api/v1/pods"
JOBS = "/apis/batch/v1/jobs"
JOB_NAME = "batch.kubernetes.io/job-name"  # the label the Job controller gives its pods


def _key(obj: dict[str, Any]) -> Key:
    return (obj["metadata"].get("namespace", ""), obj["metadata"]["name"])


def _unix(stamp: str) -> float:
    return datetime.datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


class ClaimWatch:
    """When each claim first showed each phase, its deadline, and when it was deleted."""

    def __init__(self) -> None:
        self.phases: dict[Key, dict[str, float]] = {}
        self.deletes_at: dict[Key, float] = {}
        self.deleted: dict[Key, float] = {}
        self.users: dict[Key, int] = {}  # the active users its status counts, last seen
        self.events = 0

    def count(self, phase: str) -> int:
        return sum(1 for seen in self.phases.values() if phase in seen)

    def counting(self, users: int) -> int:
        """Claims whose status last counted at least `users` active users."""
        return sum(1 for count in self.users.values() if count >= users)

    async def run(self, api: Api, resource_version: str) -> None:
        async for event in api.watch(EVCS, resource_version):
            now = time.time()
            self.events += 1
            obj = event["object"]
            key = _key(obj)
            if event["type"] == "DELETED":
                self.deleted.setdefault(key, now)
                continue
            status = obj.get("status") or {}
            phase = status.get("phase")
            self.users[key] = int(status.get("users") or 0)
            if not phase:
                continue
            deadline = status.get("deletesAt")
            if phase == "Idle" and not deadline:
                continue  # "Idle with its deadline" is what counts
            self.phases.setdefault(key, {}).setdefault(phase, now)
            if deadline:
                self.deletes_at[key] = _unix(deadline)


class PodWatch:
    """When each pod was first seen Succeeded: the bare watch, the floor. And the pod
    each Job made, by the Job's key."""

    def __init__(self) -> None:
        self.succeeded: dict[Key, float] = {}
        self.of_job: dict[Key, str] = {}

    async def run(self, api: Api, resource_version: str) -> None:
        async for event in api.watch(PODS, resource_version):
            obj = event["object"]
            job = (obj["metadata"].get("labels") or {}).get(JOB_NAME)
            if job:
                self.of_job.setdefault((_key(obj)[0], job), obj["metadata"]["name"])
            if (obj.get("status") or {}).get("phase") == "Succeeded":
                self.succeeded.setdefault(_key(obj), time.time())


class JobWatch:
    """When each Job was first seen Complete: the floor of a claim whose user is a Job."""

    def __init__(self) -> None:
        self.complete: dict[Key, float] = {}

    async def run(self, api: Api, resource_version: str) -> None:
        async for event in api.watch(JOBS, resource_version):
            obj = event["object"]
            if any(c.get("type") == "Complete" and c.get("status") == "True"
                   for c in (obj.get("status") or {}).get("conditions") or ()):
                self.complete.setdefault(_key(obj), time.time())


async def until(done: Callable[[], int], total: int, what: str, *, limit: float,
                check: Callable[[], None] = lambda: None) -> float:
    """Wait until done() reaches total (at most `limit` seconds), printing progress;
    returns the seconds it took."""
    start = time.monotonic()
    last_report = start
    while (count := done()) < total:
        check()
        now = time.monotonic()
        if now - start > limit:
            raise TimeoutError(f"{what}: {count}/{total} after {limit:.0f} s")
        if now - last_report >= 10:
            print(f"  {what}: {count}/{total} ({now - start:.0f} s)", flush=True)
            last_report = now
        await asyncio.sleep(0.2)
    return time.monotonic() - start


def reseals(phases: Mapping[Key, Mapping[str, float]]) -> dict[str, Any]:
    """Claims seen `InUse` less than seal.SPACING after `Pending`: the operator confirms
    each of those records when SPACING has passed (docs/lifecycle.md), by reading the claim
    back (`get ephemeralvolumeclaims` in the audit; before `confirm.py`, a second status
    patch). Seen by the harness's watch, so about."""
    within = SPACING.total_seconds()
    claims = sum(1 for seen in phases.values()
                 if "Pending" in seen and "InUse" in seen
                 and seen["InUse"] - seen["Pending"] < within)
    return {"within_seconds": within, "claims": claims,
            "per_claim": round(claims / len(phases), 2) if phases else None}
