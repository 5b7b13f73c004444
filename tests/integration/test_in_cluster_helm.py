"""The operator as users install it: its image on the real node, `helm install ... --wait`.

Two replicas with leader election, as the chart's defaults say; the seed's evc.yaml and
pod.yaml served by them; then the leader's pod deleted while a claim falls due: the
standby takes over and deletes it, once. Start-up and failover times are printed (`-s`)
and recorded in docs/operations.md. One node per machine: run under the node lock.
"""

from __future__ import annotations

import datetime
import json
import time
from collections.abc import Iterator

import pytest

from controlplane.cluster import ControlPlane
from controlplane.node import Node
from tests.integration.incluster import (
    apply_seed,
    assert_kubernetes_endpoints_not_loopback,
    assert_runs_hardened,
    deletions,
    leader,
    load_image,
    logs,
    operator_pods,
    pulls,
    ready_pods,
    startup_seconds,
    wait_deleted,
)
from tests.integration.support import REPO, Kubectl, eventually
from tests.integration.test_controlplane import helm
from tests.integration.test_deploy import assert_no_permission_errors

NAMESPACE = "evc-operator"
GRACE = 6  # seconds: the chart's 30 s would only make the test longer
# The chart's defaults (2 replicas, leader election, expiry 30 s), a shorter grace, and a
# countdown line every 2 s so that a test of a few seconds sees several.
VALUES = ("--set", f"gracePeriod={GRACE}s,countdownInterval=2s")


@pytest.fixture(scope="module")
def release(cluster: ControlPlane, node: Node,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    """The chart installed as the README says, with the image loaded into the node."""
    home = tmp_path_factory.mktemp("helm")
    load_image(node)
    started = time.monotonic()
    installed = helm(cluster, home, "install", "evc-operator", str(REPO / "charts/evc-operator"),
                     "-n", NAMESPACE, "--create-namespace", "--wait", "--timeout", "4m",
                     *VALUES)
    assert installed.returncode == 0, installed.stdout + installed.stderr
    print(f"helm install --wait: {time.monotonic() - started:.1f} s")
    yield cluster
    removed = helm(cluster, home, "uninstall", "evc-operator", "-n", NAMESPACE, "--wait")
    assert removed.returncode == 0, removed.stderr
    eventually(lambda: not operator_pods(cluster, NAMESPACE), timeout=90,
               what="the operator's pods gone")


def test_helm_install_runs_two_hardened_replicas_one_leading(release: ControlPlane) -> None:
    pods = ready_pods(release, NAMESPACE, 2)
    for pod in pods:
        assert_runs_hardened(release, pod)
        print(f"pod {pod['metadata']['name']} created -> Ready: {startup_seconds(pod):.0f} s "
              f"(image pulled from the node's registry)")
    for message in pulls(release, NAMESPACE):
        print(message)
    assert_kubernetes_endpoints_not_loopback(release)
    names = {pod["metadata"]["name"] for pod in pods}
    holder = eventually(lambda: leader(release, NAMESPACE), what="a leader")
    assert holder in names
    [standby] = names - {holder}
    eventually(lambda: "Standing by" in logs(release, NAMESPACE, standby),
               what="the standby saying so")
    for name in names:
        assert_no_permission_errors(logs(release, NAMESPACE, name))


def test_seed_claim_and_pod_go_through_with_countdowns_in_the_log(
        release: ControlPlane, node_namespace: str) -> None:
    kubectl = Kubectl(release, node_namespace)
    apply_seed(kubectl)
    eventually(lambda: (kubectl.get("pod", "my-pod") or {}).get("status", {}).get("phase")
               == "Succeeded", timeout=90, what="the seed's pod Succeeded")
    wait_deleted(kubectl, "my-claim-1", timeout=GRACE + 30)
    holder = leader(release, NAMESPACE)
    text = logs(release, NAMESPACE, holder)
    claim = f"[{node_namespace}/my-claim-1]"
    countdowns = [line for line in text.splitlines()
                  if claim in line and "Grace countdown:" in line]
    assert len(countdowns) >= 2, text
    assert f"{claim} Deleted:" in text
    assert deletions(kubectl, "my-claim-1") == 1
    kubectl("delete", "pod", "my-pod", "--wait=false")


def test_leader_pod_deleted_while_a_claim_falls_due_the_standby_deletes_it_once(
        release: ControlPlane, node_namespace: str) -> None:
    kubectl = Kubectl(release, node_namespace)
    before = {pod["metadata"]["name"] for pod in ready_pods(release, NAMESPACE, 2)}
    first = leader(release, NAMESPACE)
    kubectl("apply", "-f", "-", input=json.dumps({
        "apiVersion": "zalando.org/v1", "kind": "EphemeralVolumeClaim",
        "metadata": {"name": "ha-claim"}, "spec": {"size": "10Mi", "expiryPeriod": "12s"}}))
    deletes_at = eventually(lambda: ((kubectl.get("evc", "ha-claim") or {}).get("status")
                                     or {}).get("deletesAt"), what="the claim's deadline")
    due = datetime.datetime.fromisoformat(str(deletes_at).replace("Z", "+00:00")).timestamp()
    time.sleep(max(0.0, due - 3 - time.time()))  # the leader goes 3 s before the deadline

    deleted_at = time.time()
    release.kubectl("delete", "pod", first, "-n", NAMESPACE, "--wait=false")
    second = eventually(lambda: _other_leader(release, first), timeout=40, interval=0.1,
                        what="a new leader")
    failover = time.time() - deleted_at
    eventually(lambda: kubectl.get("evc", "ha-claim") is None, timeout=30, interval=0.1,
               what="the claim deleted by the new leader")
    gone = time.time()
    print(f"failover (leader pod deleted -> Lease held by {second}): {failover:.1f} s; "
          f"claim deleted {gone - due:.1f} s after its deadline")
    assert gone >= due
    eventually(lambda: deletions(kubectl, "ha-claim") >= 1, timeout=20,
               what="the Deleted Event")
    time.sleep(3)  # a second deletion, if any, would say so by now
    assert deletions(kubectl, "ha-claim") == 1
    assert f"[{node_namespace}/ha-claim] Deleted:" in logs(release, NAMESPACE, second)

    [replacement] = [pod for pod in ready_pods(release, NAMESPACE, 2)
                     if pod["metadata"]["name"] not in before]
    print(f"replacement pod created -> Ready: {startup_seconds(replacement):.0f} s "
          f"(image present on the node)")


def _other_leader(plane: ControlPlane, first: str) -> str:
    holder = leader(plane, NAMESPACE)
    return holder if holder != first else ""
