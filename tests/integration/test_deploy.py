"""The deploy manifests in config/, applied to the real control plane, and least privilege:
the operator runs its whole lifecycle with nothing but the shipped RBAC.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from controlplane.cluster import ControlPlane
from tests.integration.conftest import OperatorFactory
from tests.integration.support import REPO, Kubectl, eventually
from tests.overlays import effective_args, overlay

FAST = {"EXPIRY_PERIOD": "4", "GRACE_PERIOD": "3", "COUNTDOWN_INTERVAL": "1"}
OPERATOR_NAMESPACE = "evc-operator"


def render(plane: ControlPlane, overlay: str) -> list[dict[str, Any]]:
    documents = yaml.safe_load_all(plane.kubectl("kustomize", str(REPO / "config" / overlay)))
    return [doc for doc in documents if doc]


def can_i(plane: ControlPlane, account: str, verb: str, resource: str,
          namespace: str | None = None, *extra: str) -> bool:
    scope = ["--namespace", namespace] if namespace else ["--all-namespaces"]
    result = plane.kubectl_result("auth", "can-i", verb, resource, f"--as={account}", *scope,
                                  *extra)
    return result.stdout.strip() == "yes"


def full_lifecycle(kubectl: Kubectl, name: str) -> None:
    """EVC -> PVC -> used -> finished -> Idle -> deleted, every write by the operator."""
    kubectl("apply", "-f", "-", input=json.dumps({
        "apiVersion": "zalando.org/v1", "kind": "EphemeralVolumeClaim",
        "metadata": {"name": name}, "spec": {"size": "1Gi"}}))
    eventually(lambda: kubectl.get("pvc", name), what="PVC created by the operator")
    kubectl("apply", "-f", "-", input=json.dumps({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": f"{name}-user"},
        "spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "busybox"}],
                 "volumes": [{"name": "v", "persistentVolumeClaim": {"claimName": name}}]}}))
    eventually(lambda: (kubectl.get("evc", name) or {}).get("status", {}).get("phase")
               == "InUse", what="InUse")
    kubectl("patch", "pod", f"{name}-user", "--subresource=status", "--type=merge",
            "-p", '{"status": {"phase": "Succeeded"}}')
    eventually(lambda: kubectl.get("evc", name) is None, timeout=20, what="deletion")
    # The Deleted Event follows the delete's answer: it may land just after.
    expected = {"PvcCreated", "InUse", "Idle", "Deleted"}
    eventually(lambda: expected <= {event["reason"] for event in kubectl.events(name)},
               timeout=20, what=f"the Events {sorted(expected)}")


def assert_no_permission_errors(log: str) -> None:
    # A refusal reads "403 Forbidden" or APIForbiddenError; a bare "403" may be a timestamp.
    assert "Forbidden" not in log, f"the operator hit a permission error:\n{log}"
    assert "Missing permission" not in log, f"the access check found one missing:\n{log}"
    assert "Not enough permissions" not in log, f"Kopf fell back for want of one:\n{log}"


def test_kustomize_default_applies_everything(control_plane: ControlPlane) -> None:
    control_plane.kubectl("apply", "-k", str(REPO / "config" / "default"))
    for kind, name in [("namespace", OPERATOR_NAMESPACE), ("clusterrole", "evc-operator"),
                       ("clusterrolebinding", "evc-operator"),
                       ("crd", "ephemeralvolumeclaims.zalando.org")]:
        control_plane.kubectl("get", kind, name)
    deployment = json.loads(control_plane.kubectl(
        "get", "deployment", "evc-operator", "-n", OPERATOR_NAMESPACE, "-o", "json"))
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
    pod_security = deployment["spec"]["template"]["spec"]["securityContext"]
    assert pod_security["runAsNonRoot"] is True
    assert pod_security["seccompProfile"]["type"] == "RuntimeDefault"


def test_the_crd_in_config_is_the_one_at_the_root(control_plane: ControlPlane) -> None:
    [crd] = [doc for doc in render(control_plane, "default")
             if doc["kind"] == "CustomResourceDefinition"]
    assert crd == yaml.safe_load((REPO / "crd.yaml").read_text())


def test_cluster_role_runs_the_whole_lifecycle(control_plane: ControlPlane, kubectl: Kubectl,
                                               operator: OperatorFactory,
                                               tmp_path: Path) -> None:
    control_plane.kubectl("apply", "-k", str(REPO / "config" / "default"))
    config = control_plane.service_account_kubeconfig(OPERATOR_NAMESPACE, "evc-operator",
                                                      tmp_path / "sa.kubeconfig")
    process = operator(kubectl.namespace, scope="--all-namespaces", KUBECONFIG=str(config),
                       SIGNING_KEY_NAMESPACE=OPERATOR_NAMESPACE, **FAST)
    full_lifecycle(kubectl, "rbac-cluster")
    assert_no_permission_errors(process.log_text())
    assert (f"sealed with the key in the Secret {OPERATOR_NAMESPACE}/evc-operator-signing-key"
            in process.log_text())


def test_namespaced_role_runs_the_whole_lifecycle_in_its_namespace_only(
        control_plane: ControlPlane, kubectl: Kubectl, operator: OperatorFactory,
        tmp_path: Path) -> None:
    """config/namespaced overlaid with `namespace:` the test's namespace, as its comment
    tells users to: its RBAC there, and its Deployment's own --namespace."""
    namespace = kubectl.namespace
    rendered = overlay("namespaced", tmp_path / "overlay", namespace=namespace)
    [deployment] = [doc for doc in rendered if doc["kind"] == "Deployment"]
    [scope] = [arg for arg in effective_args(deployment) if arg.startswith("--namespace")]
    assert scope == f"--namespace={namespace}"
    # The test namespace exists, the CRD too, and no kubelet runs Deployments here.
    documents = [doc for doc in rendered
                 if doc["kind"] not in ("Namespace", "CustomResourceDefinition", "Deployment")]
    control_plane.kubectl("apply", "-f", "-",
                          input=json.dumps({"apiVersion": "v1", "kind": "List",
                                            "items": documents}))
    account = f"system:serviceaccount:{namespace}:evc-operator"
    assert can_i(control_plane, account, "list", "pods", namespace)
    assert not can_i(control_plane, account, "list", "pods", "default")
    assert not can_i(control_plane, account, "list", "ephemeralvolumeclaims.zalando.org",
                     "default")

    config = control_plane.service_account_kubeconfig(namespace, "evc-operator",
                                                      tmp_path / "sa.kubeconfig")
    process = operator(namespace, scope=scope, KUBECONFIG=str(config),
                       SIGNING_KEY_NAMESPACE=namespace, **FAST)
    full_lifecycle(kubectl, "rbac-namespaced")
    assert_no_permission_errors(process.log_text())
    secret = kubectl.get("secret", "evc-operator-signing-key")
    assert secret is not None
    assert secret["data"]["key"]  # filled by the operator, which may touch no other Secret
    assert not can_i(control_plane, account, "get", "secrets/other", namespace)
    assert not can_i(control_plane, account, "list", "secrets", namespace)


@pytest.mark.parametrize(("verb", "resource"), [
    ("get", "secrets"), ("list", "secrets"), ("delete", "pods"), ("create", "pods"),
    ("patch", "pods"), ("delete", "persistentvolumeclaims"), ("update", "ephemeralvolumeclaims"),
    ("create", "ephemeralvolumeclaims"), ("patch", "ephemeralvolumeclaims"),
    ("delete", "namespaces"), ("create", "clusterrolebindings"), ("*", "*"),
    ("list", "namespaces"), ("watch", "namespaces"),  # serving every namespace: not needed
])
def test_the_operator_cannot(control_plane: ControlPlane, verb: str, resource: str) -> None:
    control_plane.kubectl("apply", "-k", str(REPO / "config" / "default"))
    account = f"system:serviceaccount:{OPERATOR_NAMESPACE}:evc-operator"
    assert not can_i(control_plane, account, verb, resource)


def test_shipped_rules_are_least_privilege() -> None:
    """No wildcards, no secrets, nothing that writes pods; namespaced rules agree."""
    cluster_role = yaml.safe_load((REPO / "config/rbac/cluster_role.yaml").read_text())
    role = yaml.safe_load((REPO / "config/rbac-namespaced/role.yaml").read_text())
    for rule in cluster_role["rules"] + role["rules"]:
        assert "*" not in rule["verbs"] + rule["resources"] + rule["apiGroups"]
        assert "secrets" not in rule["resources"]
        if "pods" in rule["resources"]:
            assert set(rule["verbs"]) <= {"get", "list", "watch"}
    lease_role = next(yaml.safe_load_all(
        (REPO / "config/rbac/leader_election_role.yaml").read_text()))
    cluster_scoped = {"customresourcedefinitions", "namespaces"}
    namespaced_rules = [rule for rule in cluster_role["rules"]
                        if not cluster_scoped & set(rule["resources"])]
    assert role["rules"] == namespaced_rules + lease_role["rules"]


def test_both_overlays_render(control_plane: ControlPlane) -> None:
    for base in ("default", "namespaced"):
        kinds = {doc["kind"] for doc in render(control_plane, base)}
        assert {"CustomResourceDefinition", "ServiceAccount", "Deployment"} <= kinds


def test_the_lease_role_names_its_lease(control_plane: ControlPlane) -> None:
    """Installed beside other components, it cannot take over their Leases; it can create
    its own (`create` cannot be limited by name)."""
    control_plane.kubectl("apply", "-k", str(REPO / "config" / "default"))
    account = f"system:serviceaccount:{OPERATOR_NAMESPACE}:evc-operator"
    leases = "leases.coordination.k8s.io"
    for verb in ("get", "update"):
        assert can_i(control_plane, account, verb, f"{leases}/evc-operator", OPERATOR_NAMESPACE)
        assert not can_i(control_plane, account, verb, f"{leases}/kube-scheduler",
                         OPERATOR_NAMESPACE)
    assert can_i(control_plane, account, "create", leases, OPERATOR_NAMESPACE)
    assert not can_i(control_plane, account, "delete", f"{leases}/evc-operator",
                     OPERATOR_NAMESPACE)


# What each built-in role may do with claims once evc-view and evc-edit aggregate into it:
# (verb, subresource) -> allowed. Nobody but the operator writes the status.
USER_RIGHTS = {
    "view": {("list", ""): True, ("watch", ""): True, ("get", ""): True, ("create", ""): False,
             ("patch", ""): False, ("delete", ""): False, ("patch", "status"): False},
    "edit": {("list", ""): True, ("create", ""): True, ("update", ""): True,
             ("patch", ""): True, ("delete", ""): True, ("deletecollection", ""): True,
             ("patch", "status"): False, ("update", "status"): False},
    "admin": {("list", ""): True, ("create", ""): True, ("delete", ""): True,
              ("patch", "status"): False, ("update", "status"): False},
}


@pytest.mark.parametrize("role", USER_RIGHTS)
def test_people_get_claims_through_the_built_in_roles(control_plane: ControlPlane,
                                                      namespace: str, role: str) -> None:
    control_plane.kubectl("apply", "-k", str(REPO / "config" / "default"))
    person = f"{role}-person"
    control_plane.kubectl("create", "rolebinding", person, f"--clusterrole={role}",
                          f"--user={person}", "--namespace", namespace)

    def rights() -> dict[tuple[str, str], bool]:
        return {(verb, sub): can_i(control_plane, person, verb,
                                   "ephemeralvolumeclaims.zalando.org", namespace,
                                   *([f"--subresource={sub}"] if sub else []))
                for verb, sub in USER_RIGHTS[role]}

    # The controller-manager aggregates the rules into the built-in roles, soon after.
    eventually(lambda: rights() == USER_RIGHTS[role], timeout=30,
               what=f"{role} aggregating evc-view and evc-edit")
    assert not can_i(control_plane, person, "list", "ephemeralvolumeclaims.zalando.org",
                     "default")
