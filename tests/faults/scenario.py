"""Randomized end-to-end scenarios with injected faults, judged by an independent observer.

A scenario drives a namespace with random claims and user pods (created, finished,
failed, deleted, replaced) while faults strike at random points: the operator killed
with SIGKILL and restarted, the API server stopped and restarted, etcd compacted so
watches resume into 410 Gone, and other clients writing to the same claims.

The observer is not the operator: it is the API server's own audit log (who did what,
to which object, when, as the server saw it) plus the driver's record of which pod
mounts which claim. From them `judge.Judge` rebuilds every claim's true deadline and checks:

- a claim is never deleted while a pod that uses it is active;
- never before its deadline;
- always by its deadline plus a small bound, extended by any outage that overlapped it;
- no PVC the operator did not create is ever written by it;
- no claim lives without its PVC (outside outages and the first seconds of its life).

Jobs whose attempts fail, pods that ended before their claim existed, status writes
refused for a while, the operator's clock off by 30 s, Deployments scaled to 0 and back
(their pods failed at times) or deleted, and CronJobs that exist for a while are driven
by `workloads.Extras` (a Deployment needs `workloads.CONTROLLER_ARGS` on a plane with no
node);
`realnode.RealNodeScenario` runs the same on a real node (real containers, kubelet and
containerd restarts).
"""

from __future__ import annotations

import datetime
import json
import random
import signal
import time
from pathlib import Path
from typing import Any, ClassVar

from controlplane.cluster import ControlPlane
from controlplane.processes import free_port
from tests.faults.judge import BOUND, RECOVERY, Claim, Judge, Pod, Report, now, parse
from tests.faults.workloads import Extras
from tests.integration.support import OperatorProcess

SETTLE = 6.0  # a claim younger than this, or just after an outage, may lack its PVC yet


class Scenario:
    # What a step does, and how often: pod, finish and delete are the users' lives.
    ACTIONS: ClassVar[dict[str, float]] = {
        "pod": 6, "finish": 4, "delete": 2, "claim": 2, "touch": 2, "sleep": 4, "kill": 1.2,
        "apiserver": 0.8, "compact": 0.6, "job": 1.5, "attempt": 2, "refuse": 0.6,
        "deployment": 4, "crash": 2, "cronjob": 0.8}
    KUBELET = False  # pods never run: the driver writes their status, as a kubelet would

    def __init__(self, plane: ControlPlane, seed: int, workdir: Path) -> None:
        self.plane = plane
        self.seed = seed
        self.random = random.Random(seed)
        self.namespace = f"faults-{seed}"
        self.workdir = workdir
        self.claims: list[Claim] = []
        self.pods: list[Pod] = []
        self.outages: list[tuple[datetime.datetime, datetime.datetime]] = []
        self.reported_ends: dict[str, datetime.datetime] = {}  # finishedAt as reported
        self.report = Report(seed=seed, namespace=self.namespace)
        self.operator: OperatorProcess | None = None
        self.scope: str | None = None  # e.g. --all-namespaces; its own namespace if None
        self.restarts = 0
        self.unsettled_until = now()
        self.extras = Extras(plane, self.namespace, self.random, self.kubectl, self.pod_spec)
        if self.extras.offset:
            self.report.faults[f"clock{self.extras.offset}"] = 1

    # --- driving ---------------------------------------------------------------------------

    def kubectl(self, *args: str, input: str | None = None) -> str:
        return self.plane.kubectl("--namespace", self.namespace, *args, input=input)

    def start_operator(self) -> None:
        env = {"EXPIRY_PERIOD": "3", "GRACE_PERIOD": "3", "COUNTDOWN_INTERVAL": "5",
               **self.extras.operator_env()}
        # Steps go on once its view is complete (/readyz), as a readiness probe would have
        # it: a pod created and deleted before then leaves no trace it could see
        # (docs/lifecycle.md), so the outage lasts until then.
        port = free_port()
        logfile = self.workdir / f"{self.namespace}-operator-{self.restarts}.log"
        self.operator = OperatorProcess(self.plane, self.namespace, logfile,
                                        {**env, "METRICS_PORT": str(port)}, self.scope)
        self.operator.wait_ready()
        self.operator.wait_view_complete(port)
        self.restarts += 1

    def run(self, steps: int = 18) -> Report:
        started = time.monotonic()
        audit_offset = self.plane.audit_log.stat().st_size
        self.plane.kubectl("create", "namespace", self.namespace)
        self._wait_for_service_account()
        began = now()
        self._plan_claims()
        self.start_operator()
        self._outage(began)  # no operator yet: claims made before it was up wait for it
        try:
            for _ in range(steps):
                self._step()
                self._check_pvcs()
            self._end_all()
            self._wait_for_deletions()
        finally:
            if self.operator is not None:
                self.operator.stop()
        self._judge(audit_offset)
        self.plane.kubectl("delete", "namespace", self.namespace, "--wait=false")
        self.report.seconds = time.monotonic() - started
        return self.report

    def _wait_for_service_account(self) -> None:
        for _ in range(600):  # after API server restarts, its controllers may lag a while
            result = self.plane.kubectl_result("get", "serviceaccount", "default",
                                               "--namespace", self.namespace)
            if result.returncode == 0:
                return
            time.sleep(0.1)
        raise RuntimeError(f"no default ServiceAccount in {self.namespace}")

    def _plan_claims(self) -> None:
        count = self.random.randint(3, 5)
        for index in range(count):
            claim = Claim(f"claim-{index}", expiry=self.random.randint(2, 6),
                          grace=self.random.randint(1, 5),
                          conflict=index == 0 and self.random.random() < 0.4)
            self.claims.append(claim)
            if claim.conflict:
                self.kubectl("apply", "-f", "-", input=json.dumps({
                    "apiVersion": "v1", "kind": "PersistentVolumeClaim",
                    "metadata": {"name": claim.name},
                    "spec": {"accessModes": ["ReadWriteOnce"],
                             "resources": {"requests": {"storage": "1Mi"}}}}))
        # Some claims exist before any pod, some are created later (pods may come first).
        for claim in self.claims[: self.random.randint(1, count)]:
            self._create_claim(claim)
        later = [c for c in self.claims if c.created is None]
        if later and self.random.random() < 0.5:  # a finished pod older than its claim
            pod = Pod(f"stale-{len(self.pods)}", later[0].name, ended=True)
            self.extras.stale_pod(pod.name, pod.claim, self._end)
            self.pods.append(pod)
            self.report.faults["stale-pod"] = 1

    def _create_claim(self, claim: Claim) -> None:
        created = json.loads(self.kubectl("create", "-o", "json", "-f", "-", input=json.dumps({
            "apiVersion": "zalando.org/v1", "kind": "EphemeralVolumeClaim",
            "metadata": {"name": claim.name},
            "spec": {"size": "1Gi", "expiryPeriod": claim.expiry,
                     "gracePeriod": claim.grace}})))
        claim.created = parse(created["metadata"]["creationTimestamp"])
        self.report.claims += 1

    def _active_pods(self) -> list[Pod]:
        return [p for p in self.pods if not p.ended and not p.deleted]

    def _step(self) -> None:
        self._act(self.random.choices(list(self.ACTIONS), weights=list(self.ACTIONS.values()))[0])

    def pod_spec(self, claim: str) -> dict[str, Any]:
        """A user pod's spec (no kubelet here: nothing runs it)."""
        return {"restartPolicy": "Never", "containers": [{"name": "main", "image": "busybox"}],
                "volumes": [{"name": "v", "persistentVolumeClaim": {"claimName": claim}}]}

    def _act(self, action: str) -> None:
        if action == "pod":
            claim = self.random.choice(self.claims)
            pod = Pod(f"user-{len(self.pods)}", claim.name)
            self.kubectl("apply", "-f", "-", input=json.dumps({
                "apiVersion": "v1", "kind": "Pod", "metadata": {"name": pod.name},
                "spec": self.pod_spec(claim.name)}))
            self.pods.append(pod)
            self.report.pods += 1
        elif action == "finish" and self._active_pods():
            self._finish(self.random.choice(self._active_pods()))
        elif action == "delete" and [p for p in self.pods if not p.deleted]:
            pod = self.random.choice([p for p in self.pods if not p.deleted])
            self.kubectl("delete", "pod", pod.name, "--wait=false")
            pod.deleted = True
        elif action == "claim" and [c for c in self.claims if c.created is None]:
            self._create_claim(next(c for c in self.claims if c.created is None))
        elif action == "touch":
            # Another client writes to a claim: its resourceVersion moves under the operator.
            claim = self.random.choice([c for c in self.claims if c.created is not None])
            self.plane.kubectl_result("--namespace", self.namespace, "label", "--overwrite",
                                      "evc", claim.name, f"touched={self.random.randint(0, 9)}")
        elif action == "job" and [c for c in self.claims if c.created is not None]:
            claim = self.random.choice([c for c in self.claims if c.created is not None])
            self.extras.create_job(claim.name)
            self.report.faults["job"] = self.report.faults.get("job", 0) + 1
        elif action == "attempt" and self.extras.fail_an_attempt(self._end):
            self.report.faults["job-attempt-failed"] = (
                self.report.faults.get("job-attempt-failed", 0) + 1)
        elif action == "deployment" and [c for c in self.claims if c.created is not None]:
            alive = [r for r in self.extras.replicas.values() if r is not None]
            if not alive or self.random.random() < 0.35:
                self.extras.create_deployment(self._existing_claim())
                self._count("deployment")
            else:
                self._count(self.extras.change_deployment() or "deployment")
        elif action == "crash" and self.extras.fail_a_deployment_pod(self._end):
            self._count("deployment-pod-failed")
        elif action == "cronjob" and [c for c in self.claims if c.created is not None]:
            self._count(self.extras.create_or_delete_cronjob(self._existing_claim()))
        elif action == "refuse":
            self._fault("status-refused", self.extras.refuse_writes)
        elif action == "kill":
            self._fault("operator-killed", self._kill_operator)
        elif action == "apiserver":
            self._fault("apiserver-restarted", self._restart_apiserver)
        elif action == "compact":
            self._fault("watch-expired", self._expire_watches)
        else:
            time.sleep(self.random.uniform(0.2, 2.0))

    def _existing_claim(self) -> str:
        """A claim that is there now, if any (a workload for a claim already deleted is a
        latecomer, which tests nothing), else one created before."""
        there = {name.rsplit("/", 1)[-1]
                 for name in self.kubectl("get", "evc", "-o", "name").split()}
        created = sorted(c.name for c in self.claims if c.created is not None)
        return self.random.choice(sorted(there & set(created)) or created)

    def _count(self, what: str) -> None:
        self.report.faults[what] = self.report.faults.get(what, 0) + 1

    def _end_all(self) -> None:
        self.extras.end_workloads()
        for pod in self._active_pods():
            self._finish(pod)
        self.extras.finish_jobs(self._end)

    def _finish(self, pod: Pod) -> None:
        self._end(pod.name, self.random.choice(["Succeeded", "Failed"]))
        pod.ended = True

    def _end(self, name: str, phase: str) -> None:
        """What a kubelet reports when the pod's only container ends."""
        finished = now().strftime("%Y-%m-%dT%H:%M:%SZ")
        self.reported_ends.setdefault(name, parse(finished))
        self.kubectl("patch", "pod", name, "--subresource=status", "--type=merge",
                     "-p", json.dumps({"status": {"phase": phase, "containerStatuses": [{
                         "name": "main", "image": "busybox", "imageID": "", "ready": False,
                         "restartCount": 0, "state": {"terminated": {
                             "exitCode": 0 if phase == "Succeeded" else 1,
                             "finishedAt": finished, "startedAt": finished}}}]}}))

    def _fault(self, kind: str, inject: Any) -> None:
        began = now()
        inject()
        self._outage(began)
        self.report.faults[kind] = self.report.faults.get(kind, 0) + 1

    def _outage(self, began: datetime.datetime) -> None:
        ended = now()
        self.outages.append((began, ended))
        self.unsettled_until = ended + datetime.timedelta(seconds=SETTLE)

    def _kill_operator(self) -> None:
        assert self.operator is not None
        self.operator.stop(signal.SIGKILL)
        time.sleep(self.random.uniform(0, 3))
        self.start_operator()

    def _restart_apiserver(self) -> None:
        self.plane.stop_apiserver()
        time.sleep(self.random.uniform(0, 3))
        self.plane.start_apiserver()

    def _expire_watches(self) -> None:
        self.plane.compact_etcd()
        self.plane.stop_apiserver()  # its watch cache goes: resumed watches get 410 Gone
        self.plane.start_apiserver()

    def _wait_for_deletions(self) -> None:
        """Every user has ended: every claim is due within its longest period."""
        longest = max(max(c.expiry, c.grace) for c in self.claims)
        give_up = now() + datetime.timedelta(seconds=longest + BOUND + RECOVERY + 5)
        while now() < give_up:
            names = self.kubectl("get", "evc", "-o", "name").split()
            if not names:
                return
            time.sleep(0.5)

    def _check_pvcs(self) -> None:
        """No claim lives without its PVC (once settled, outside outages)."""
        if now() < self.unsettled_until:
            return
        listing = json.loads(self.kubectl("get", "evc,pvc", "-o", "json"))["items"]
        pvcs = {o["metadata"]["name"] for o in listing if o["kind"] == "PersistentVolumeClaim"}
        for evc in (o for o in listing if o["kind"] == "EphemeralVolumeClaim"):
            age = (now() - parse(evc["metadata"]["creationTimestamp"])).total_seconds()
            if age > SETTLE and evc["metadata"]["name"] not in pvcs:
                self.report.violations.append(
                    f"{evc['metadata']['name']} lived {age:.1f} s without its PVC")

    def _judge(self, offset: int) -> None:
        jobs = self.extras.jobs
        pods = [*self.pods, *(Pod(f"Job/{job}", claim) for job, claim in jobs.items()),
                *(Pod(name, claim) for name, claim in self.extras.job_pod_claims().items()),
                *(Pod(name, claim)
                  for name, claim in self.extras.deployment_pod_claims().items())]
        ends = {f"Job/{name}": end for name, end in self.extras.job_ends().items()
                if end is not None}
        remaining = {name.rsplit("/", 1)[-1]
                     for name in self.kubectl("get", "evc", "-o", "name").split()}
        Judge(self.plane.audit_log, self.namespace, self.claims, pods, ends, self.outages,
              self.report, kubelet=self.KUBELET, reported_ends=self.reported_ends,
              remaining=remaining, deployments=self.extras.deployments,
              cronjobs=self.extras.cronjobs).run(offset)
