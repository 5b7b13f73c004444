"""The fault scenarios on a real node: users are real containers, the kubelet reports them.

Each user pod runs busybox from the node's own registry, mounts its claim at `/vol`,
sleeps 1-8 s and exits 0 or 1 (a Job's attempts the same, so some Jobs are retried and
fail for real). Nobody writes a pod's status but the kubelet: a pod ends when the
kubelet reports it `Succeeded` or `Failed`, or when it is removed (a graceful delete only
marks it; the kubelet stops its container and removes it). The judge reads those ends
from the audit log, where the kubelet's status writes keep their bodies.

Beside the faults of `Scenario` (operator SIGKILL, API server restarts, expired watches,
refused status writes, the operator's clock off), the kubelet and containerd are killed
(SIGKILL) and started again after 0-3 s. Those do not count as the operator's outages:
its deletions must keep their bound through them. A component that exits on its own (a
kubelet whose start finds containerd killed) is started again by the node's supervisor,
as systemd would, and counted (`kubelet-exited`).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, ClassVar

from controlplane.cluster import ControlPlane
from controlplane.node import Node
from tests.faults.judge import Report
from tests.faults.scenario import Scenario

ENDED = ("Succeeded", "Failed")
SIMULATED_ENDS = ("finish", "attempt", "crash")  # the driver's status writes: not on a real node


class RealNodeScenario(Scenario):
    ACTIONS: ClassVar[dict[str, float]] = {
        **{action: weight for action, weight in Scenario.ACTIONS.items()
           if action not in SIMULATED_ENDS},
        "kubelet": 1.0, "containerd": 1.0}
    KUBELET = True

    def __init__(self, plane: ControlPlane, node: Node, seed: int, workdir: Path) -> None:
        super().__init__(plane, seed, workdir)
        self.node = node

    def pod_spec(self, claim: str) -> dict[str, Any]:
        """busybox mounting the claim: sleeps, then exits 0 or 1."""
        script = f"sleep {self.random.randint(1, 8)}; exit {self.random.choice([0, 1])}"
        return {"restartPolicy": "Never", "terminationGracePeriodSeconds": 2,
                "containers": [{"name": "main", "image": "busybox",
                                "command": ["sh", "-c", script],
                                "volumeMounts": [{"name": "v", "mountPath": "/vol"}]}],
                "volumes": [{"name": "v", "persistentVolumeClaim": {"claimName": claim}}]}

    def _plan_claims(self) -> None:
        super()._plan_claims()
        # Its container runs once the claim exists: a pod waiting for its claim.
        if self.report.faults.pop("stale-pod", None):
            self.report.faults["pod-before-claim"] = 1

    def _act(self, action: str) -> None:
        if action in ("kubelet", "containerd"):
            self.node.stop_component(action)
            time.sleep(self.random.uniform(0, 3))
            self.node.start_component(action)
            self.report.faults[f"{action}-restarted"] = (
                self.report.faults.get(f"{action}-restarted", 0) + 1)
        else:
            super()._act(action)

    def run(self, steps: int = 18) -> Report:
        """The scenario; its report also counts the components that exited on their own
        and that the node's supervisor started again (a kubelet whose start found no
        containerd answering exits)."""
        before = dict(self.node.supervisor.restarts) if self.node.supervisor else {}
        try:
            return super().run(steps)
        finally:
            after = self.node.supervisor.restarts if self.node.supervisor else {}
            for name, count in after.items():
                if count > before.get(name, 0):
                    self.report.faults[f"{name}-exited"] = count - before.get(name, 0)

    def _end(self, name: str, phase: str) -> None:
        """Nothing: the pod's container ends on its own, and the kubelet says so."""

    def _end_all(self, limit: float = 180) -> None:
        """Wait until every pod and Job has ended. A pod that has not started and whose
        claim (and so PVC) is missing or being deleted never starts (unscheduled, or on
        the node with no volume to mount): it, or the Job that made it, is deleted."""
        self.extras.end_workloads()  # their ReplicaSets remove the Deployments' pods
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            listing = json.loads(self.kubectl("get", "pods,jobs,pvc", "-o", "json"))["items"]
            pvcs = {o["metadata"]["name"] for o in listing if o["kind"] == "PersistentVolumeClaim"
                    and not o["metadata"].get("deletionTimestamp")}
            waiting = [o for o in listing if o["kind"] == "Pod"
                       and (o.get("status") or {}).get("phase") not in ENDED]
            jobs = [o for o in listing if o["kind"] == "Job"
                    and not o["metadata"].get("deletionTimestamp") and not any(
                c["type"] in ("Complete", "Failed") and c["status"] == "True"
                for c in (o.get("status") or {}).get("conditions") or [])]
            if not waiting and not jobs:
                return
            for pod in waiting:
                claims = [v["persistentVolumeClaim"]["claimName"] for v in pod["spec"]["volumes"]
                          if "persistentVolumeClaim" in v]
                started = (pod.get("status") or {}).get("phase") == "Running"
                if started or all(c in pvcs for c in claims):
                    continue
                job = pod["metadata"].get("labels", {}).get("job-name")
                what = f"job/{job}" if job else f"pod/{pod['metadata']['name']}"
                self.plane.kubectl_result("--namespace", self.namespace, "delete", what,
                                          "--wait=false")
            time.sleep(1)
