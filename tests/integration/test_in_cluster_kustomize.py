"""The operator as users install it with kustomize, its image on the real node:
`kubectl apply -k config/default` (all namespaces), and config/namespaced overlaid into a
namespace of its own (it serves that namespace only). Each runs a claim through with a
real pod, with nothing but the shipped RBAC. One node per machine: run under the node lock.
"""

from __future__ import annotations

import json
import secrets
from pathlib import Path
from typing import Any

import yaml

from controlplane.cluster import ControlPlane
from controlplane.node import Node
from tests.integration.incluster import (
    assert_kubernetes_endpoints_not_loopback,
    assert_runs_hardened,
    leader,
    load_image,
    logs,
    operator_pods,
    ready_pods,
    run_claim_through,
    startup_seconds,
)
from tests.integration.support import REPO, Kubectl, eventually
from tests.integration.test_deploy import assert_no_permission_errors
from tests.overlays import overlay

Manifest = dict[str, Any]


def _without_crd(documents: list[Manifest]) -> str:
    """The documents but the CRD, as a List: other tests' claims live by the CRD, and
    deleting it would delete them all."""
    kept = [doc for doc in documents if doc["kind"] != "CustomResourceDefinition"]
    return json.dumps({"apiVersion": "v1", "kind": "List", "items": kept})


def _serve_and_remove(plane: ControlPlane, namespace: str, documents: list[Manifest],
                      claims_in: str) -> list[str]:
    """Two Ready, hardened replicas in `namespace`, one leading; a claim in `claims_in`
    run through; then everything but the CRD removed. Returns the replicas' logs."""
    try:
        pods = ready_pods(plane, namespace, 2)
        for pod in pods:
            assert_runs_hardened(plane, pod)
            print(f"pod {pod['metadata']['name']} created -> Ready: "
                  f"{startup_seconds(pod):.0f} s")
        names = {pod["metadata"]["name"] for pod in pods}
        # A Lease left by an earlier install in this namespace names a pod that is gone
        # until it expires: wait for one of these replicas to hold it.
        eventually(lambda: leader(plane, namespace) in names, what="a leader among them")
        run_claim_through(Kubectl(plane, claims_in), f"claim-{secrets.token_hex(3)}")
        texts = [logs(plane, namespace, name) for name in names]
    finally:
        plane.kubectl("delete", "-f", "-", "--ignore-not-found", "--timeout=120s",
                      input=_without_crd(documents))
    eventually(lambda: not operator_pods(plane, namespace), timeout=60,
               what="the operator's pods gone")
    return texts


def test_kubectl_apply_k_config_default_serves_claims_from_its_pods(
        cluster: ControlPlane, node: Node, node_namespace: str) -> None:
    load_image(node)
    cluster.kubectl("apply", "-k", str(REPO / "config" / "default"))
    documents = [doc for doc in yaml.safe_load_all(
        cluster.kubectl("kustomize", str(REPO / "config" / "default"))) if doc]
    assert_kubernetes_endpoints_not_loopback(cluster)
    for text in _serve_and_remove(cluster, "evc-operator", documents, node_namespace):
        assert_no_permission_errors(text)


def test_namespaced_overlay_in_a_namespace_of_its_own_serves_it_and_only_it(
        cluster: ControlPlane, node: Node, node_namespace: str, tmp_path: Path) -> None:
    """config/namespaced overlaid with `namespace:`, as docs/operations.md tells users."""
    load_image(node)
    team = f"team-{secrets.token_hex(3)}"
    documents = overlay("namespaced", tmp_path / "overlay", namespace=team)
    # A claim elsewhere, which this operator has no rights to and must leave alone.
    elsewhere = Kubectl(cluster, node_namespace)
    elsewhere("apply", "-f", "-", input=json.dumps({
        "apiVersion": "zalando.org/v1", "kind": "EphemeralVolumeClaim",
        "metadata": {"name": "not-ours"}, "spec": {"size": "10Mi", "expiryPeriod": "1s"}}))
    cluster.kubectl("apply", "-f", "-", input=_without_crd(documents))
    try:
        texts = _serve_and_remove(cluster, team, documents, team)
    finally:
        cluster.kubectl("delete", "namespace", team, "--ignore-not-found", "--wait=false")
    for text in texts:
        assert_no_permission_errors(text)
        assert "not-ours" not in text
    untouched = elsewhere.get("evc", "not-ours")
    assert untouched is not None
    assert not (untouched.get("status") or {}).get("deletesAt")
    assert elsewhere.get("pvc", "not-ours") is None
