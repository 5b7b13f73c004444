"""The operator with a real kubelet: pods really run, restart, fail to pull, terminate.

Every pod phase here comes from the kubelet (containerd, runc, busybox from the
machine's own registry), and volumes are really provisioned on the host: what the
simulated-node tests cannot show. One node per machine: these tests share it.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from controlplane.cluster import ControlPlane
from controlplane.node import Node
from tests.integration.conftest import OperatorFactory
from tests.integration.support import REPO, Kubectl, eventually

GRACE = 6  # seconds: longer than a pod start on the node, short enough for a test
FAST = {"EXPIRY_PERIOD": "60", "GRACE_PERIOD": str(GRACE), "COUNTDOWN_INTERVAL": "1"}


def evc(name: str) -> str:
    return json.dumps({"apiVersion": "zalando.org/v1", "kind": "EphemeralVolumeClaim",
                       "metadata": {"name": name}, "spec": {"size": "10Mi"}})


def pod_spec(claim: str, script: str, *, restart: str = "Never", image: str = "busybox",
             termination_grace: int = 2) -> dict[str, Any]:
    return {
        "restartPolicy": restart,
        "terminationGracePeriodSeconds": termination_grace,
        "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": claim}}],
        "containers": [{"name": "main", "image": image, "command": ["sh", "-c", script],
                        "volumeMounts": [{"name": "data", "mountPath": "/vol"}]}],
    }


def pod(name: str, claim: str, script: str, **options: Any) -> str:
    return json.dumps({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
                       "spec": pod_spec(claim, script, **options)})


def pod_phase(kubectl: Kubectl, name: str) -> str | None:
    body = kubectl.get("pod", name)
    return None if body is None else str(body["status"].get("phase"))


def evc_phase(kubectl: Kubectl, name: str) -> str | None:
    body = kubectl.get("evc", name)
    return None if body is None else (body.get("status") or {}).get("phase")


def bound_volume(kubectl: Kubectl, claim: str) -> tuple[str, Path]:
    """The PV bound to the claim's PVC, and where its data lives on the host."""
    def bound() -> str:
        pvc = kubectl.get("pvc", claim)
        bound = pvc is not None and pvc["status"].get("phase") == "Bound"
        return str(pvc["spec"]["volumeName"]) if pvc and bound else ""

    name: str = eventually(bound, timeout=60, what=f"PVC {claim} Bound")
    pv = kubectl("get", "pv", name, "-o", "json", namespaced=False)
    return name, Path(json.loads(pv)["spec"]["hostPath"]["path"])


def new_claim(plane: ControlPlane, namespace: str, operators: OperatorFactory,
              name: str) -> tuple[Kubectl, str, Path]:
    """The operator (short grace) and a bound claim `name`: kubectl, its PV, its data."""
    kubectl = Kubectl(plane, namespace)
    operators(namespace, **FAST)
    kubectl("apply", "-f", "-", input=evc(name))
    return kubectl, *bound_volume(kubectl, name)


def pv_exists(kubectl: Kubectl, name: str) -> bool:
    return kubectl.run("get", "pv", name).returncode == 0


def assert_everything_goes(kubectl: Kubectl, claim: str, pv: str, data: Path,
                           timeout: float = GRACE + 60) -> None:
    eventually(lambda: kubectl.get("evc", claim) is None, timeout=timeout, what="EVC deleted")
    eventually(lambda: kubectl.get("pvc", claim) is None, timeout=60, what="PVC deleted")
    eventually(lambda: not pv_exists(kubectl, pv), timeout=60, what="PV deleted")
    eventually(lambda: not data.exists(), timeout=30, what=f"{data} removed from disk")


def holds_for(kubectl: Kubectl, claim: str, seconds: float) -> None:
    """The claim stays InUse for `seconds` (several grace periods)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert evc_phase(kubectl, claim) == "InUse", kubectl.get("evc", claim)
        assert kubectl.get("pvc", claim) is not None
        time.sleep(0.5)


def restarts(kubectl: Kubectl, name: str) -> int:
    body = kubectl.get("pod", name) or {}
    return sum(status.get("restartCount", 0)
               for status in body.get("status", {}).get("containerStatuses") or [])


def waiting_reason(kubectl: Kubectl, name: str) -> str | None:
    body = kubectl.get("pod", name) or {}
    for status in body.get("status", {}).get("containerStatuses") or []:
        waiting = status.get("state", {}).get("waiting")
        if waiting:
            return str(waiting.get("reason"))
    return None


def test_seed_files_on_a_real_node(cluster: ControlPlane,
                                   node_operator: OperatorFactory) -> None:
    """The seed, word for word: evc.yaml, pod.yaml, `kopf run --namespace=default`."""
    kubectl = Kubectl(cluster, "default")
    kubectl.run("delete", "pod", "my-pod", "--ignore-not-found", "--grace-period=0")
    kubectl.run("delete", "evc", "my-claim-1", "--ignore-not-found")
    node_operator("default")
    assert kubectl.run("apply", "-f", str(REPO / "evc.yaml")).returncode == 0
    assert kubectl.run("apply", "-f", str(REPO / "pod.yaml")).returncode == 0
    pv, data = bound_volume(kubectl, "my-claim-1")
    eventually(lambda: pod_phase(kubectl, "my-pod") == "Running", timeout=60, what="Running")
    logs = eventually(lambda: kubectl.run("logs", "my-pod").stdout, what="logs")
    assert " on /vol " in logs, logs  # `mount | grep /vol`, as the seed's pod prints it
    eventually(lambda: pod_phase(kubectl, "my-pod") == "Succeeded", timeout=60,
               what="Succeeded")
    finished = time.monotonic()
    assert evc_phase(kubectl, "my-claim-1") in ("InUse", "Idle")
    eventually(lambda: kubectl.get("evc", "my-claim-1") is None, timeout=90,
               what="the claim deleted about one grace period (30 s) later")
    assert time.monotonic() - finished > 25  # not before its grace period
    # pvc-protection holds the PVC while the Completed pod exists; the seed leaves it.
    kubectl("delete", "pod", "my-pod")
    assert_everything_goes(kubectl, "my-claim-1", pv, data)


def test_data_survives_between_pipeline_steps(cluster: ControlPlane, node_namespace: str,
                                              node_operator: OperatorFactory) -> None:
    kubectl, pv, data = new_claim(cluster, node_namespace, node_operator, "pipeline")
    kubectl("apply", "-f", "-", input=pod("step-a", "pipeline", "echo from-a > /vol/result"))
    eventually(lambda: pod_phase(kubectl, "step-a") == "Succeeded", timeout=60, what="A done")
    # The claim is idle from here, its grace runs: step B comes within it.
    kubectl("apply", "-f", "-", input=pod("step-b", "pipeline", "cat /vol/result"))
    kubectl("delete", "pod", "step-a")
    eventually(lambda: pod_phase(kubectl, "step-b") == "Succeeded", timeout=60, what="B done")
    assert kubectl("logs", "step-b").strip() == "from-a"
    assert (data / "result").read_text() == "from-a\n"  # on the host's disk
    kubectl("delete", "pod", "step-b")
    assert_everything_goes(kubectl, "pipeline", pv, data)


def test_running_pod_that_ignores_term_holds_its_claim_until_gone(
        cluster: ControlPlane, node_namespace: str, node_operator: OperatorFactory) -> None:
    kubectl, pv, data = new_claim(cluster, node_namespace, node_operator, "stubborn")
    script = "trap '' TERM; while :; do sleep 1; done"
    kubectl("apply", "-f", "-", input=pod("stubborn", "stubborn", script,
                                          termination_grace=3 * GRACE))
    eventually(lambda: pod_phase(kubectl, "stubborn") == "Running", timeout=60, what="Running")
    eventually(lambda: evc_phase(kubectl, "stubborn") == "InUse", what="InUse")
    kubectl("delete", "pod", "stubborn", "--wait=false")
    deleted = last_running = time.monotonic()
    terminating = kubectl.get("pod", "stubborn")
    assert terminating is not None
    assert terminating["metadata"].get("deletionTimestamp")
    # The kubelet sends TERM, waits 3 grace periods, kills: the pod stays Running all
    # along, and so the claim InUse. Then the kubelet reports Failed (exit 137) and removes
    # the object about a second later: a finished pod is no longer an active user (the
    # operator's rule), but its claim is never deleted while the object exists.
    # The claim is read before the pod: a pod's phase never goes back to Running, so a pod
    # Running after its claim was read Idle was Running when it was read (read the other
    # way round, the kubelet may finish the pod between the two reads).
    while True:
        claim_phase = evc_phase(kubectl, "stubborn")
        if (body := kubectl.get("pod", "stubborn")) is None:
            break
        if body["status"].get("phase") == "Running":
            assert claim_phase == "InUse"
            last_running = time.monotonic()
        assert kubectl.get("evc", "stubborn") is not None
        time.sleep(0.5)
    assert last_running - deleted > 3 * GRACE - 3  # it really ignored TERM
    assert_everything_goes(kubectl, "stubborn", pv, data)


@pytest.mark.parametrize("restart", ["OnFailure", "Always"])
def test_crash_looping_container_keeps_its_claim(cluster: ControlPlane, node_namespace: str,
                                                 node_operator: OperatorFactory,
                                                 restart: str) -> None:
    kubectl, pv, data = new_claim(cluster, node_namespace, node_operator, "crashing")
    kubectl("apply", "-f", "-", input=pod("crashing", "crashing", "exit 3", restart=restart))
    # Between restarts (back-off 10 s, 20 s, ...) the pod stays Running while its only
    # container is mostly `terminated` (kubelet 1.37 seldom shows CrashLoopBackOff).
    eventually(lambda: restarts(kubectl, "crashing") >= 1, timeout=60, what="a restart")
    holds_for(kubectl, "crashing", 3 * GRACE)
    assert restarts(kubectl, "crashing") >= 2
    assert pod_phase(kubectl, "crashing") == "Running"
    kubectl("delete", "pod", "crashing", "--grace-period=0")
    assert_everything_goes(kubectl, "crashing", pv, data)


def test_pod_stuck_on_an_unpullable_image_keeps_its_claim(
        cluster: ControlPlane, node_namespace: str, node_operator: OperatorFactory) -> None:
    kubectl, pv, data = new_claim(cluster, node_namespace, node_operator, "waiting")
    kubectl("apply", "-f", "-", input=pod("waiting", "waiting", "true",
                                          image="no-such-image:1"))
    eventually(lambda: waiting_reason(kubectl, "waiting") in ("ErrImagePull",
                                                              "ImagePullBackOff"),
               timeout=60, what="an image pull error")
    holds_for(kubectl, "waiting", 3 * GRACE)
    assert pod_phase(kubectl, "waiting") == "Pending"
    kubectl("delete", "pod", "waiting", "--grace-period=0")
    assert_everything_goes(kubectl, "waiting", pv, data)


def test_completed_pod_that_still_exists(cluster: ControlPlane, node_namespace: str,
                                         node_operator: OperatorFactory) -> None:
    """The grace runs and the claim goes; pvc-protection keeps the PVC until the pod goes."""
    kubectl, pv, data = new_claim(cluster, node_namespace, node_operator, "finished")
    kubectl("apply", "-f", "-", input=pod("finished", "finished", "echo done > /vol/out"))
    eventually(lambda: pod_phase(kubectl, "finished") == "Succeeded", timeout=60, what="done")
    eventually(lambda: kubectl.get("evc", "finished") is None, timeout=GRACE + 30,
               what="the claim deleted after its grace")
    pvc = kubectl.get("pvc", "finished")
    assert pvc is not None
    assert pvc["metadata"].get("deletionTimestamp"), pvc
    assert "kubernetes.io/pvc-protection" in pvc["metadata"]["finalizers"]
    assert (data / "out").exists()
    time.sleep(3)
    assert kubectl.get("pvc", "finished") is not None  # still held by the Completed pod
    kubectl("delete", "pod", "finished")
    assert_everything_goes(kubectl, "finished", pv, data)



@pytest.mark.parametrize("component", ["kubelet", "containerd"])
def test_claim_survives_a_node_component_crash(cluster: ControlPlane, node: Node,
                                               node_namespace: str,
                                               node_operator: OperatorFactory,
                                               component: str) -> None:
    """While the kubelet (or containerd) is down for longer than the grace period, the
    running pod's claim stays InUse; once it is back and the pod ends, the claim goes.
    While containerd is down, the kubelet crashes too and is started again: it exits at
    once (no container runtime answers), and the node's supervisor starts it again until
    it stays, as systemd would; the node must come back whole once containerd does."""
    kubectl, pv, data = new_claim(cluster, node_namespace, node_operator, "steady")
    kubectl("apply", "-f", "-", input=pod("steady", "steady",
                                          "sleep 12; echo done > /vol/out"))
    eventually(lambda: pod_phase(kubectl, "steady") == "Running", timeout=60, what="Running")
    eventually(lambda: evc_phase(kubectl, "steady") == "InUse", what="InUse")
    assert node.supervisor is not None
    restarts = node.supervisor.restarts.get("kubelet", 0)
    node.stop_component(component)
    try:
        if component == "containerd":
            node.stop_component("kubelet")
            node.start_component("kubelet")
        holds_for(kubectl, "steady", 2 * GRACE)
    finally:
        node.start_component(component)
    if component == "containerd":
        assert node.supervisor.restarts.get("kubelet", 0) > restarts
    # The container ended while its component was down; after a containerd restart the
    # kubelet may no longer learn its exit code and report the pod Failed instead.
    eventually(lambda: pod_phase(kubectl, "steady") in ("Succeeded", "Failed"), timeout=90,
               what="the pod finished")
    assert (data / "out").read_text() == "done\n"  # it did run to its end
    kubectl("delete", "pod", "steady")
    assert_everything_goes(kubectl, "steady", pv, data)


def job_finished(kubectl: Kubectl, name: str) -> bool:
    body = kubectl.get("job", name) or {}
    return any(c["type"] in ("Failed", "Complete") and c["status"] == "True"
               for c in body.get("status", {}).get("conditions") or [])


def test_failing_job_keeps_its_claim_until_it_has_finished(
        cluster: ControlPlane, node_namespace: str, node_operator: OperatorFactory) -> None:
    """The Job controller retries a really failing container, with back-off pauses in
    which no pod runs; the claim stays until the Job has finished, then the grace runs."""
    kubectl, pv, data = new_claim(cluster, node_namespace, node_operator, "retried")
    kubectl("apply", "-f", "-", input=json.dumps({
        "apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "flaky"},
        "spec": {"backoffLimit": 2, "template": {"spec": pod_spec(
            "retried", "echo attempt >> /vol/attempts; exit 1")}}}))
    deadline = time.monotonic() + 120
    while not job_finished(kubectl, "flaky"):
        assert kubectl.get("evc", "retried") is not None, "claim deleted while its Job runs"
        assert time.monotonic() < deadline, "the Job did not finish"
        time.sleep(0.5)
    assert (data / "attempts").read_text().count("attempt") == 3
    kubectl("delete", "job", "flaky", "--cascade=foreground")
    assert_everything_goes(kubectl, "retried", pv, data)
