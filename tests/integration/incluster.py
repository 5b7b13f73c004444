"""Helpers for tests of the operator as a pod on the real node (its image, installed by Helm
or kustomize): its pods and what they run as, the Lease, claims run through with real pods.

The image comes from `controlplane.image.ensure_image` (built once per content) and is
served by the node's registry under the name the chart and manifests use.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
from typing import Any

from controlplane.cluster import SERVICE_IP, ControlPlane
from controlplane.host import NODE_IP
from controlplane.image import Image, ensure_image
from controlplane.node import Node
from tests.integration.support import REPO, Kubectl, eventually

SELECTOR = "app.kubernetes.io/name=evc-operator"
ACCOUNT = "evc-operator"
UID = 65532  # the Dockerfile's USER, and the manifests' runAsUser
Pod = dict[str, Any]


def load_image(node: Node) -> Image:
    """The operator's image, pullable by the node as `evc-operator:0.1.0`."""
    image = ensure_image()
    assert node.publish_image(image.name, image.layout, image.digest) == "library/evc-operator"
    return image


def operator_pods(plane: ControlPlane, namespace: str) -> list[Pod]:
    listing = json.loads(plane.kubectl("get", "pods", "-n", namespace, "-l", SELECTOR,
                                       "-o", "json"))
    pods: list[Pod] = listing["items"]
    return pods


def is_ready(pod: Pod) -> bool:
    return any(condition["type"] == "Ready" and condition["status"] == "True"
               for condition in pod.get("status", {}).get("conditions", []))


def ready_pods(plane: ControlPlane, namespace: str, count: int,
               timeout: float = 180) -> list[Pod]:
    """Wait until exactly `count` operator pods exist there, all Ready; return them."""
    def ready() -> list[Pod]:
        pods = operator_pods(plane, namespace)
        live = [pod for pod in pods if not pod["metadata"].get("deletionTimestamp")]
        return live if len(pods) == count and all(map(is_ready, live)) else []

    pods: list[Pod] = eventually(ready, timeout=timeout, interval=0.5,
                                 what=f"{count} Ready operator pods in {namespace}")
    return pods


def _stamp(text: str) -> datetime.datetime:
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))


def startup_seconds(pod: Pod) -> float:
    """Pod created -> Ready, by the API server's timestamps (whole seconds)."""
    [ready] = [c for c in pod["status"]["conditions"] if c["type"] == "Ready"]
    created = _stamp(pod["metadata"]["creationTimestamp"])
    return (_stamp(ready["lastTransitionTime"]) - created).total_seconds()


def in_pod(plane: ControlPlane, pod: Pod, code: str) -> str:
    """Run Python code in the operator's container (`kubectl exec`), as the image's user."""
    return plane.kubectl("exec", "-n", pod["metadata"]["namespace"], pod["metadata"]["name"],
                         "-c", "operator", "--", "python", "-c", code).strip()


def assert_runs_hardened(plane: ControlPlane, pod: Pod) -> None:
    """Non-root, read-only root file system, probes passing, its own ServiceAccount, the
    API server through the `kubernetes` Service: no host network, no kubeconfig."""
    spec = pod["spec"]
    assert not spec.get("hostNetwork")
    assert spec["serviceAccountName"] == ACCOUNT
    [container] = spec["containers"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    [status] = pod["status"]["containerStatuses"]
    assert status["ready"] is True
    assert status["restartCount"] == 0, status  # the liveness probe never failed
    ids = in_pod(plane, pod, "import os; print(os.getuid(), os.getgid())")
    assert ids == f"{UID} {UID}"
    refused = in_pod(plane, pod, "import os\ntry:\n open('/probe', 'w')\n"
                                 "except OSError as e:\n print(e.strerror)")
    assert refused == "Read-only file system"
    environment = json.loads(in_pod(plane, pod, "import json, os; print(json.dumps("
                                                "dict(os.environ)))"))
    assert environment["KUBERNETES_SERVICE_HOST"] == SERVICE_IP
    assert "KUBECONFIG" not in environment


def assert_kubernetes_endpoints_not_loopback(plane: ControlPlane) -> None:
    """The `kubernetes` Service leads to the node's address, which pods can reach."""
    slices = json.loads(plane.kubectl(
        "get", "endpointslices", "-n", "default", "-l",
        "kubernetes.io/service-name=kubernetes", "-o", "json"))["items"]
    addresses = {address for item in slices for endpoint in item["endpoints"]
                 for address in endpoint["addresses"]}
    assert addresses == {NODE_IP}
    assert not any(ipaddress.ip_address(address).is_loopback for address in addresses)


def pulls(plane: ControlPlane, namespace: str) -> list[str]:
    """The kubelet's words on each pull of an image there (time taken, size)."""
    listing = json.loads(plane.kubectl("get", "events", "-n", namespace,
                                       "--field-selector", "reason=Pulled", "-o", "json"))
    return [str(event["message"]) for event in listing["items"]]


def leader(plane: ControlPlane, namespace: str, lease: str = "evc-operator") -> str:
    body = json.loads(plane.kubectl("get", "lease", lease, "-n", namespace, "-o", "json"))
    return str(body["spec"].get("holderIdentity") or "")


def logs(plane: ControlPlane, namespace: str, pod: str) -> str:
    return plane.kubectl("logs", "-n", namespace, pod, "-c", "operator")


def apply_seed(kubectl: Kubectl) -> None:
    """The seed's evc.yaml and pod.yaml, as they are."""
    kubectl("apply", "-f", str(REPO / "evc.yaml"), "-f", str(REPO / "pod.yaml"))


def run_claim_through(kubectl: Kubectl, name: str, *, grace: str = "3s") -> None:
    """A claim used by a real pod that ends: PvcCreated, InUse, Idle, then deleted by the
    operator; the pod is removed afterwards (it holds the PVC while it exists)."""
    kubectl("apply", "-f", "-", input=json.dumps({
        "apiVersion": "zalando.org/v1", "kind": "EphemeralVolumeClaim",
        "metadata": {"name": name}, "spec": {"size": "10Mi", "gracePeriod": grace}}))
    kubectl("apply", "-f", "-", input=json.dumps({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": f"{name}-user"},
        "spec": {"restartPolicy": "Never", "terminationGracePeriodSeconds": 1,
                 # Fit for the `restricted` Pod Security level of the operator's own
                 # namespace (config/manager/namespace.yaml), where the namespaced
                 # overlay's claims live.
                 "securityContext": {"runAsNonRoot": True, "runAsUser": 1000,
                                     "seccompProfile": {"type": "RuntimeDefault"}},
                 "containers": [{"name": "main", "image": "busybox",
                                 "command": ["sh", "-c", "ls /vol; sleep 3"],
                                 "securityContext": {"allowPrivilegeEscalation": False,
                                                     "capabilities": {"drop": ["ALL"]}},
                                 "volumeMounts": [{"name": "v", "mountPath": "/vol"}]}],
                 "volumes": [{"name": "v", "persistentVolumeClaim": {"claimName": name}}]}}))
    wait_deleted(kubectl, name, timeout=90)
    kubectl("delete", "pod", f"{name}-user", "--wait=false")


def wait_deleted(kubectl: Kubectl, name: str, timeout: float) -> None:
    """Until the operator has deleted the claim and said so in each Event it writes."""
    eventually(lambda: kubectl.get("evc", name) is None, timeout=timeout,
               what=f"the claim {name} deleted")
    expected = {"PvcCreated", "InUse", "Idle", "Deleted"}
    eventually(lambda: expected <= {event["reason"] for event in kubectl.events(name)},
               timeout=20, what=f"the Events {sorted(expected)}")


def deletions(kubectl: Kubectl, name: str) -> int:
    """How many times an operator said it deleted the claim (Events, counted)."""
    return sum(int(event.get("count") or 1) for event in kubectl.events(name)
               if event["reason"] == "Deleted")
