"""config/namespaced overlaid with another namespace: every object moves, and the
Deployment watches the namespace it is in. Built with the project's kubectl (kustomize)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.overlays import Manifest, container_environment, effective_args, expand, overlay


def deployment(documents: list[Manifest]) -> Manifest:
    [found] = [doc for doc in documents if doc["kind"] == "Deployment"]
    return found


def test_kubernetes_expansion_of_args() -> None:
    variables = {"POD_NAMESPACE": "team-a", "A": "x"}
    assert expand("--namespace=$(POD_NAMESPACE)", variables) == "--namespace=team-a"
    assert expand("$(UNSET) $$(A) $$ $(A)$(A)", variables) == "$(UNSET) $(A) $ xx"


@pytest.mark.parametrize("namespace", ["team-a", "evc-operator"])
def test_the_namespaced_overlay_serves_the_namespace_it_is_put_in(
        tmp_path: Path, namespace: str) -> None:
    documents = overlay("namespaced", tmp_path / "overlay", namespace=namespace)
    operator = deployment(documents)
    assert operator["metadata"]["namespace"] == namespace
    args = effective_args(operator)
    assert [arg for arg in args if arg.startswith(("--namespace", "--all-namespaces"))] == [
        f"--namespace={namespace}"]
    for doc in documents:
        if doc["kind"] in ("ServiceAccount", "Role", "RoleBinding", "Deployment"):
            assert doc["metadata"]["namespace"] == namespace, doc["kind"]
        for subject in doc.get("subjects", []):
            assert subject["namespace"] == namespace, doc["metadata"]["name"]
    [namespace_object] = [doc for doc in documents if doc["kind"] == "Namespace"]
    assert namespace_object["metadata"]["name"] == namespace


def test_the_overlay_as_shipped_serves_its_own_namespace(tmp_path: Path) -> None:
    """No `namespace:` in the overlay: config/namespaced's own, evc-operator."""
    assert "--namespace=evc-operator" in effective_args(
        deployment(overlay("namespaced", tmp_path / "plain")))


def test_the_cluster_wide_overlay_still_serves_all_namespaces(tmp_path: Path) -> None:
    args = effective_args(deployment(overlay("default", tmp_path / "all", namespace="ops")))
    assert "--all-namespaces" in args
    assert not [arg for arg in args if arg.startswith("--namespace")]


def test_a_second_namespace_takes_a_name_prefix_for_its_cluster_wide_objects(
        tmp_path: Path) -> None:
    """Two overlays in two namespaces would share the ClusterRoleBinding of discovery (the
    second apply taking it from the first): docs/operations.md says to add namePrefix, which
    renames it and every reference to the ServiceAccount."""
    documents = overlay("namespaced", tmp_path / "b", namespace="team-b", namePrefix="team-b-")
    operator = deployment(documents)
    account = operator["spec"]["template"]["spec"]["serviceAccountName"]
    assert account == "team-b-evc-operator"
    [discovery] = [doc for doc in documents if doc["kind"] == "ClusterRoleBinding"]
    assert discovery["metadata"]["name"] == "team-b-evc-operator-discovery"
    for binding in (doc for doc in documents if doc["kind"].endswith("RoleBinding")):
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": account, "namespace": "team-b"}]
    assert "--namespace=team-b" in effective_args(operator)


@pytest.mark.parametrize("base", ["default", "namespaced"])
def test_a_name_prefix_renames_the_signing_key_the_operator_reads(
        tmp_path: Path, base: str) -> None:
    """SIGNING_KEY_SECRET is a plain env value: without config/manager/kustomizeconfig.yaml
    the prefix renamed the Secret and the Role's resourceNames but not the value, and the
    operator, forbidden to read the Secret it named, exited at start."""
    documents = overlay(base, tmp_path / base, namespace="team-b", namePrefix="team-b-")
    [secret] = [doc for doc in documents if doc["kind"] == "Secret"]
    assert secret["metadata"]["name"] == "team-b-evc-operator-signing-key"
    environment = container_environment(deployment(documents), "pod-0")
    assert environment["SIGNING_KEY_SECRET"] == secret["metadata"]["name"]
    [role] = [doc for doc in documents if doc["kind"] == "Role"
              and any("secrets" in rule["resources"] for rule in doc["rules"])]
    assert [rule["resourceNames"] for rule in role["rules"]] == [[secret["metadata"]["name"]]]


@pytest.mark.parametrize("base", ["default", "namespaced"])
def test_the_pod_serves_metrics_on_every_interface(tmp_path: Path, base: str) -> None:
    """The operator's own default is loopback (for `make run`); in a pod the kubelet's
    readiness probe and Prometheus come from outside, so the manifests say 0.0.0.0 (the
    image does too, but the manifests must not depend on which image runs)."""
    environment = container_environment(deployment(overlay(base, tmp_path / base)), "pod-0")
    assert environment["METRICS_ADDRESS"] == "0.0.0.0"
    assert environment["METRICS_PORT"] == "9090"
