"""The faults of issue 12 for the scenarios: Job users whose attempts fail, finished pods
that predate their claim, status writes refused for a while, the operator's clock off;
and replicated workloads: Deployments scaled to 0 and back and deleted, CronJobs that
exist for a while.

`Extras` drives them beside a `Scenario` and tells the judge what they mean: a Job is a
user from its creation until its `Failed`/`Complete` condition (its pods count on their
own), and a pod that ended in an earlier second than its claim was created is no user.
A Deployment (and each of its ReplicaSets) is a user while its replicas are above 0, a
CronJob while it exists (judge.Spans reads when from the audit log); their pods count on
their own. Deployments need the deployment and ReplicaSet controllers, which a control
plane with no node does not run: `CONTROLLER_ARGS` adds them. Their pods, never
scheduled, stay Pending until the driver fails one (the ReplicaSet makes another) or
their ReplicaSet removes them.
"""

from __future__ import annotations

import datetime
import json
import random
import time
from collections.abc import Callable
from typing import Any

from controlplane.cluster import ControlPlane
from tests.faults.judge import Deployment
from tests.integration.support import allow_status_writes, faked, refuse_status_writes

UTC = datetime.UTC
# kube-controller-manager's `--controllers` adds to those named before it (a string slice).
CONTROLLER_ARGS = ("--controllers=deployment-controller,replicaset-controller",)


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
        self.deployments: dict[str, Deployment] = {}  # by name: its claim, its scales
        self.replicas: dict[str, int | None] = {}  # by Deployment: now (None: deleted)
        self.cronjobs: dict[str, str] = {}  # CronJob name -> the claim its template mounts
        self.cronjobs_alive: set[str] = set()
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

    def job_pods(self, selector: str = "job-name") -> list[dict[str, Any]]:
        """The Jobs' pods (or those `selector` finds) that have not ended."""
        if not self.jobs and selector == "job-name":
            return []
        listing = json.loads(self.kubectl("get", "pods", "-l", selector, "-o", "json"))
        return [pod for pod in listing["items"]
                if (pod.get("status") or {}).get("phase") not in ("Succeeded", "Failed")]

    def fail_an_attempt(self, finish: Callable[[str, str], None]) -> bool:
        pods = self.job_pods()
        if pods:
            finish(self.random.choice(pods)["metadata"]["name"], "Failed")
        return bool(pods)

    def create_deployment(self, claim: str) -> None:
        """A Deployment of one replica whose pods mount the claim."""
        name = f"deploy-{len(self.deployments)}"
        labels = {"evc-faults-deployment": name}
        self.kubectl("apply", "-f", "-", input=json.dumps({
            "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
            "spec": {"replicas": 1, "selector": {"matchLabels": labels},
                     "template": {"metadata": {"labels": labels},
                                  "spec": {**self.pod_spec(claim), "restartPolicy": "Always"}}}}))
        self.deployments[name] = Deployment(claim)
        self.replicas[name] = 1

    def change_deployment(self) -> str | None:
        """Scale a Deployment to 0 or back to 1, or delete it: what was done (None: none
        there). A scale always changes its replicas (the judge reads each as a change)."""
        alive = [name for name, replicas in self.replicas.items() if replicas is not None]
        if not alive:
            return None
        name = self.random.choice(alive)
        if self.random.random() < 0.25:
            self.kubectl("delete", "deployment", name, "--wait=false")
            self.replicas[name] = None
            return "deployment-deleted"
        replicas = 0 if self.replicas[name] else 1
        self.scale(name, replicas)
        return f"deployment-scaled-to-{replicas}"

    def scale(self, name: str, replicas: int) -> None:
        self.kubectl("scale", f"deployment/{name}", f"--replicas={replicas}")
        self.deployments[name].scales.append(replicas)
        self.replicas[name] = replicas

    def fail_a_deployment_pod(self, finish: Callable[[str, str], None]) -> bool:
        """A Deployment's pod fails (its ReplicaSet makes another): the Deployment stays a
        user between the two."""
        pods = self.job_pods("evc-faults-deployment") if self.deployments else []
        if pods:
            finish(self.random.choice(pods)["metadata"]["name"], "Failed")
        return bool(pods)

    def create_or_delete_cronjob(self, claim: str) -> str:
        """A CronJob whose Jobs would mount the claim (its schedule never comes within a
        scenario: no Job of it), or one deleted."""
        if self.cronjobs_alive and self.random.random() < 0.6:
            name = self.random.choice(sorted(self.cronjobs_alive))
            self.kubectl("delete", "cronjob", name, "--wait=false")
            self.cronjobs_alive.discard(name)
            return "cronjob-deleted"
        name = f"cron-{len(self.cronjobs)}"
        self.kubectl("apply", "-f", "-", input=json.dumps({
            "apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": name},
            "spec": {"schedule": "0 0 1 1 *", "jobTemplate": {"spec": {
                "backoffLimit": 1, "template": {"spec": self.pod_spec(claim)}}}}}))
        self.cronjobs[name] = claim
        self.cronjobs_alive.add(name)
        return "cronjob"

    def end_workloads(self) -> None:
        """Every Deployment still above 0 scaled to 0 (its ReplicaSet removes its pods),
        every CronJob deleted: their use ends."""
        for name, replicas in self.replicas.items():
            if replicas:
                self.scale(name, 0)
        for name in sorted(self.cronjobs_alive):
            self.kubectl("delete", "cronjob", name, "--wait=false")
        self.cronjobs_alive.clear()

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

    def deployment_pod_claims(self) -> dict[str, str]:
        """The Deployments' pods there now (ended or not), with the claim each mounts: one
        never written nor removed is not named in the audit log."""
        if not self.deployments:
            return {}
        listing = json.loads(self.kubectl("get", "pods", "-l", "evc-faults-deployment",
                                          "-o", "json"))
        return {pod["metadata"]["name"]: self.deployments[
            pod["metadata"]["labels"]["evc-faults-deployment"]].claim
            for pod in listing["items"]
            if pod["metadata"]["labels"].get("evc-faults-deployment") in self.deployments}

    def job_pod_claims(self) -> dict[str, str]:
        """Every pod a Job made (ended or not), with the claim it mounts."""
        if not self.jobs:
            return {}
        listing = json.loads(self.kubectl("get", "pods", "-l", "job-name", "-o", "json"))
        return {pod["metadata"]["name"]: self.jobs[pod["metadata"]["labels"]["job-name"]]
                for pod in listing["items"]
                if pod["metadata"]["labels"].get("job-name") in self.jobs}
