"""The faults of issue 12 for the scenarios: Job users whose attempts fail, finished pods
that predate their claim, status writes refused for a while, the operator's clock off.

`Extras` drives them beside a `Scenario` and tells the judge what they mean: a Job is a
user from its creation until its `Failed`/`Complete` condition (its pods count on their
own), and a pod that ended in an earlier second than its claim was created is no user.
"""

from __future__ import annotations

import datetime
import json
import random
import time
from collections.abc import Callable
from typing import Any

from controlplane.cluster import ControlPlane
from tests.integration.support import allow_status_writes, faked, refuse_status_writes

UTC = datetime.UTC


def parse(stamp: str) -> datetime.datetime:
    return datetime.datetime.fromisoformat(stamp.replace("Z", "+00:00"))


class Extras:
    def __init__(self, plane: ControlPlane, namespace: str, rng: random.Random,
                 kubectl: Callable[..., str],
                 pod_spec: Callable[[str], dict[str, Any]]) -> None:
        self.plane = plane
        self.namespace = namespace
        self.random = rng
        self.kubectl = kubectl
        self.pod_spec = pod_spec  # a user pod's spec, for a claim
        self.jobs: dict[str, str] = {}  # Job name -> the claim its template mounts
        self.offset = rng.choice([None, None, "+30s", "-30s"])  # the operator's clock

    def operator_env(self) -> dict[str, str]:
        return faked(self.offset) if self.offset else {}

    # --- driving -------------------------------------------------------------------------

    def create_job(self, claim: str) -> None:
        name = f"job-{len(self.jobs)}"
        self.kubectl("apply", "-f", "-", input=json.dumps({
            "apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name},
            "spec": {"backoffLimit": 1, "template": {"spec": self.pod_spec(claim)}}}))
        self.jobs[name] = claim

    def job_pods(self) -> list[dict[str, Any]]:
        """The Jobs' pods that have not ended."""
        if not self.jobs:
            return []
        listing = json.loads(self.kubectl("get", "pods", "-l", "job-name", "-o", "json"))
        return [pod for pod in listing["items"]
                if (pod.get("status") or {}).get("phase") not in ("Succeeded", "Failed")]

    def fail_an_attempt(self, finish: Callable[[str, str], None]) -> bool:
        pods = self.job_pods()
        if pods:
            finish(self.random.choice(pods)["metadata"]["name"], "Failed")
        return bool(pods)

    def finish_jobs(self, finish: Callable[[str, str], None], give_up: float = 90) -> None:
        """Fail every attempt until every Job has failed (after its one retry). A Job
        still running after `give_up` is an active user: the judge says its claim stays."""
        deadline = time.monotonic() + give_up
        while self.jobs and not all(self.job_ends().get(name) for name in self.jobs):
            if time.monotonic() > deadline:
                return
            for pod in self.job_pods():
                finish(pod["metadata"]["name"], "Failed")
            time.sleep(0.5)

    def stale_pod(self, name: str, claim: str, finish: Callable[[str, str], None]) -> None:
        """A pod that mounts a claim not created yet, and ends before it is (by a second)."""
        self.kubectl("apply", "-f", "-", input=json.dumps({
            "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
            "spec": self.pod_spec(claim)}))
        finish(name, "Succeeded")
        time.sleep(1.1)  # its end is in an earlier second than the claim's creation

    def refuse_writes(self) -> None:
        """Refuse the claims' status writes for a while."""
        binding = refuse_status_writes(self.plane, self.namespace)
        try:
            time.sleep(self.random.uniform(2, 8))
        finally:
            allow_status_writes(self.plane, binding)

    # --- judging -------------------------------------------------------------------------

    def job_ends(self) -> dict[str, datetime.datetime | None]:
        """When each Job finished (its condition's time, cut to the second), None if not."""
        if not self.jobs:
            return {}
        listing = json.loads(self.kubectl("get", "jobs", "-o", "json"))
        ends: dict[str, datetime.datetime | None] = {}
        for job in listing["items"]:
            conditions = (job.get("status") or {}).get("conditions") or []
            ends[job["metadata"]["name"]] = next(
                (parse(c["lastTransitionTime"]) for c in conditions
                 if c["type"] in ("Failed", "Complete") and c["status"] == "True"), None)
        return ends

    def job_pod_claims(self) -> dict[str, str]:
        """Every pod a Job made (ended or not), with the claim it mounts."""
        if not self.jobs:
            return {}
        listing = json.loads(self.kubectl("get", "pods", "-l", "job-name", "-o", "json"))
        return {pod["metadata"]["name"]: self.jobs[pod["metadata"]["labels"]["job-name"]]
                for pod in listing["items"]
                if pod["metadata"]["labels"].get("job-name") in self.jobs}
