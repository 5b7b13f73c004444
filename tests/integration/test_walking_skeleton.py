"""The operator's walking skeleton on the real control plane: EVC -> PVC -> garbage collection."""

from __future__ import annotations

import json
from typing import Any

from controlplane.cluster import ControlPlane
from tests.integration.conftest import OperatorFactory
from tests.integration.support import REPO, Kubectl, eventually


def evc(name: str, size: str = "1Gi", labels: dict[str, str] | None = None) -> str:
    return json.dumps({
        "apiVersion": "zalando.org/v1", "kind": "EphemeralVolumeClaim",
        "metadata": {"name": name, "labels": labels or {}}, "spec": {"size": size}})


def event_reasons(kubectl: Kubectl, name: str) -> list[str]:
    return [event["reason"] for event in kubectl.events(name)]


def assert_owned_pvc(kubectl: Kubectl, name: str) -> dict[str, Any]:
    pvc = eventually(lambda: kubectl.get("pvc", name), what=f"PVC {name}")
    assert pvc is not None
    owner = kubectl.get("evc", name)
    assert owner is not None
    assert pvc["metadata"]["ownerReferences"] == [{
        "apiVersion": "zalando.org/v1", "kind": "EphemeralVolumeClaim", "name": name,
        "uid": owner["metadata"]["uid"], "controller": True, "blockOwnerDeletion": True}]
    assert pvc["metadata"].get("labels", {}) == owner["metadata"].get("labels", {})
    return pvc


def test_seed_commands_word_for_word(control_plane: ControlPlane,
                                     operator: OperatorFactory) -> None:
    """`kubectl apply -f crd.yaml`, `kopf run --namespace=default ...`, `evc.yaml`, GC."""
    kubectl = Kubectl(control_plane, "default")
    kubectl.run("delete", "evc", "my-claim-1", "--ignore-not-found")
    applied = kubectl.run("apply", "-f", "crd.yaml")
    assert applied.returncode == 0, applied.stderr
    operator("default")
    applied = kubectl.run("apply", "-f", str(REPO / "evc.yaml"))
    assert applied.returncode == 0, applied.stderr

    pvc = assert_owned_pvc(kubectl, "my-claim-1")
    assert pvc["spec"]["resources"]["requests"]["storage"] == "1Gi"
    assert pvc["spec"]["accessModes"] == ["ReadWriteOnce"]
    eventually(lambda: "PvcCreated" in event_reasons(kubectl, "my-claim-1"),
               what="PvcCreated event")
    assert kubectl.run("get", "evc").stdout.startswith("NAME")
    assert "my-claim-1" in kubectl("get", "evcs", "-o", "name")

    kubectl("delete", "-f", str(REPO / "evc.yaml"))
    eventually(lambda: kubectl.get("pvc", "my-claim-1") is None,
               what="garbage collection of the PVC")


def test_pvc_copies_labels_and_size(kubectl: Kubectl, operator: OperatorFactory) -> None:
    operator(kubectl.namespace)
    kubectl("apply", "-f", "-", input=evc("scratch", "250Mi", {"team": "data", "job": "etl"}))
    pvc = assert_owned_pvc(kubectl, "scratch")
    assert pvc["metadata"]["labels"] == {"team": "data", "job": "etl"}
    assert pvc["spec"]["resources"]["requests"]["storage"] == "250Mi"
    evc_body = kubectl.get("evc", "scratch")
    assert evc_body is not None
    assert evc_body["metadata"].get("finalizers") is None  # deleting never waits for us


def test_deleting_the_evc_garbage_collects_the_pvc(kubectl: Kubectl,
                                                   operator: OperatorFactory) -> None:
    operator(kubectl.namespace)
    kubectl("apply", "-f", "-", input=evc("short-lived"))
    assert_owned_pvc(kubectl, "short-lived")
    kubectl("delete", "evc", "short-lived")
    eventually(lambda: kubectl.get("pvc", "short-lived") is None, what="GC of the PVC")


def test_evc_deletion_does_not_need_the_operator(kubectl: Kubectl,
                                                 operator: OperatorFactory) -> None:
    process = operator(kubectl.namespace)
    kubectl("apply", "-f", "-", input=evc("orphan-check"))
    assert_owned_pvc(kubectl, "orphan-check")
    process.stop()
    kubectl("delete", "evc", "orphan-check", "--timeout=30s")
    eventually(lambda: kubectl.get("pvc", "orphan-check") is None, what="GC of the PVC")


def test_existing_unowned_pvc_is_left_untouched(kubectl: Kubectl,
                                                operator: OperatorFactory) -> None:
    kubectl("apply", "-f", "-", input=json.dumps({
        "apiVersion": "v1", "kind": "PersistentVolumeClaim",
        "metadata": {"name": "precious", "labels": {"owner": "someone-else"}},
        "spec": {"accessModes": ["ReadWriteOnce"],
                 "resources": {"requests": {"storage": "5Gi"}}}}))
    before = kubectl.get("pvc", "precious")
    assert before is not None
    operator(kubectl.namespace)
    kubectl("apply", "-f", "-", input=evc("precious", "1Gi", {"team": "data"}))
    eventually(lambda: "PvcConflict" in event_reasons(kubectl, "precious"),
               what="PvcConflict warning")
    conflict = next(e for e in kubectl.events("precious") if e["reason"] == "PvcConflict")
    assert conflict["type"] == "Warning"
    assert "not owned" in conflict["message"]

    kubectl("delete", "evc", "precious")
    after = kubectl.get("pvc", "precious")
    assert after is not None
    assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]
    assert after["metadata"].get("deletionTimestamp") is None
