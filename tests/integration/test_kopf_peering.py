"""Kopf's peering CRDs, installed by another Kopf-based operator, change nothing: the
operator (its own Lease elects the active replica) neither reads nor writes KopfPeering
objects, and its RBAC grants none. On the real control plane, the operator running with
config/namespaced's ServiceAccount and nothing else, as `kopf run` runs it (no
--standalone)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from controlplane.cluster import ControlPlane
from tests.integration.conftest import OperatorFactory
from tests.integration.support import Kubectl, eventually
from tests.overlays import effective_args, overlay

FAST = {"EXPIRY_PERIOD": "4", "GRACE_PERIOD": "3", "COUNTDOWN_INTERVAL": "1"}


def peering_crd(kind: str, scope: str) -> dict[str, Any]:
    """A CRD of Kopf's peering kinds, group kopf.dev, as Kopf's docs describe them: its
    peers are kept in the status, free-form."""
    plural = f"{kind.lower()}s"
    return {
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.kopf.dev"},
        "spec": {
            "group": "kopf.dev", "scope": scope,
            "names": {"kind": kind, "plural": plural, "singular": kind.lower()},
            "versions": [{
                "name": "v1", "served": True, "storage": True,
                "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                    "status": {"type": "object",
                               "x-kubernetes-preserve-unknown-fields": True}}}}}]}}


CRDS = [peering_crd("KopfPeering", "Namespaced"), peering_crd("ClusterKopfPeering", "Cluster")]


@pytest.fixture
def peering_crds(control_plane: ControlPlane) -> Iterator[None]:
    """Kopf's peering CRDs while the test runs; removed afterwards, as other tests expect
    a cluster without them."""
    control_plane.kubectl("apply", "-f", "-", input=json.dumps(
        {"apiVersion": "v1", "kind": "List", "items": CRDS}))
    for crd in CRDS:
        control_plane.kubectl("wait", "--for=condition=Established", "--timeout=30s",
                              f"crd/{crd['metadata']['name']}")
    try:
        yield
    finally:
        control_plane.kubectl("delete", "--ignore-not-found", "--wait=false", *(
            f"crd/{crd['metadata']['name']}" for crd in CRDS))


def test_the_operator_ignores_kopfs_peering_crds(
        control_plane: ControlPlane, kubectl: Kubectl, operator: OperatorFactory,
        tmp_path: Path, peering_crds: None) -> None:
    namespace = kubectl.namespace
    # The `default` peering objects another Kopf operator's users would have made.
    control_plane.kubectl("apply", "-f", "-", input=json.dumps({
        "apiVersion": "v1", "kind": "List", "items": [
            {"apiVersion": "kopf.dev/v1", "kind": "KopfPeering",
             "metadata": {"name": "default", "namespace": namespace}},
            {"apiVersion": "kopf.dev/v1", "kind": "ClusterKopfPeering",
             "metadata": {"name": "default"}}]}))
    rendered = overlay("namespaced", tmp_path / "overlay", namespace=namespace)
    [deployment] = [doc for doc in rendered if doc["kind"] == "Deployment"]
    [scope] = [arg for arg in effective_args(deployment) if arg.startswith("--namespace")]
    documents = [doc for doc in rendered
                 if doc["kind"] not in ("Namespace", "CustomResourceDefinition", "Deployment")]
    control_plane.kubectl("apply", "-f", "-", input=json.dumps(
        {"apiVersion": "v1", "kind": "List", "items": documents}))
    config = control_plane.service_account_kubeconfig(namespace, "evc-operator",
                                                      tmp_path / "sa.kubeconfig")
    process = operator(namespace, scope=scope, KUBECONFIG=str(config),
                       SIGNING_KEY_NAMESPACE=namespace, **FAST)

    kubectl("apply", "-f", "-", input=json.dumps({
        "apiVersion": "zalando.org/v1", "kind": "EphemeralVolumeClaim",
        "metadata": {"name": "peered"}, "spec": {"size": "1Gi"}}))
    eventually(lambda: kubectl.get("pvc", "peered"), what="PVC created by the operator")
    # Unused, it expires: the operator is not paused either.
    eventually(lambda: kubectl.get("evc", "peered") is None, timeout=20, what="expiry")

    log = process.log_text()
    assert "Forbidden" not in log, f"the operator hit a permission error:\n{log}"
    assert "peering" not in log.lower(), f"Kopf's peering is in use:\n{log}"
    peering = kubectl.get("kopfpeering", "default")
    assert peering is not None
    assert not peering.get("status")  # no keep-alive of ours
