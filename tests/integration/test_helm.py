"""The Helm chart in charts/evc-operator with the project's helm, for real: it lints, renders
what its values say, grants exactly the RBAC of config/, installs onto the control plane and
uninstalls cleanly, and its RBAC runs the operator's whole lifecycle.
"""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from controlplane.cluster import ControlPlane, free_port
from tests.integration.support import REPO, Kubectl, eventually
from tests.integration.test_controlplane import helm
from tests.integration.test_deploy import (
    OPERATOR_NAMESPACE,
    assert_no_permission_errors,
    can_i,
    full_lifecycle,
    render,
)
from tests.integration.test_image_command import with_liveness_port

CHART = REPO / "charts" / "evc-operator"
CRD_NAME = "ephemeralvolumeclaims.zalando.org"
LIVENESS = "--liveness=http://0.0.0.0:8080/healthz"
Manifest = dict[str, Any]

DEFAULTS: tuple[str, ...] = ()
NAMESPACED = ("--set", "watchNamespaces={a,b}")
QUIET = ("--set", "dryRun=true,logFormat=json,metrics.enabled=false,replicas=1,"
                  "leaderElection=false")
IMAGE = ("--set", "image.tag=1.2.3-rc.1,image.repository=registry.example/team/evc,"
                  "image.pullPolicy=Always")
EVERYTHING = ("--set", "watchNamespaces={a},metrics.port=9100,metrics.service.enabled=true,"
                       "logFormat=plain,expiryPeriod=15m,gracePeriod=90,countdownInterval=2.5,"
                       "serviceAccount.name=custom,nodeSelector.disk=ssd,replicas=3,"
                       "lifecycleEvents=false",
              "--set-string", "podAnnotations.team=storage")
MONITORED = ("--set", "metrics.podMonitor.enabled=true,prometheusRule.enabled=true,"
                     "grafanaDashboard.enabled=true,podDisruptionBudget.enabled=true")
USER_KINDS = ("--set", "userKinds={workflows.v1alpha1.argoproj.io,pipelineruns.v1.tekton.dev}")
VALUE_SETS = {"defaults": DEFAULTS, "namespaced": NAMESPACED, "quiet": QUIET, "image": IMAGE,
              "everything": EVERYTHING, "monitored": MONITORED, "user-kinds": USER_KINDS}


def config_file(path: str) -> Manifest:
    """The first document of a file in config/."""
    document: Manifest = next(yaml.safe_load_all((REPO / "config" / path).read_text()))
    return document


def config_rules(path: str, lease: str) -> list[Manifest]:
    """The rules of a file in config/, as the chart grants them: the Lease is the release's."""
    rules: list[Manifest] = config_file(path)["rules"]
    return [rule | {"resourceNames": [lease]}
            if "resourceNames" in rule and "leases" in rule["resources"] else
            rule | {"resourceNames": [f"{lease}-signing-key"]}
            if "resourceNames" in rule and "secrets" in rule["resources"] else rule
            for rule in rules]


SIGNING_KEY = {("Secret", "evc-evc-operator-signing-key", "ops"),
               ("Role", "evc-evc-operator-signing-key", "ops"),
               ("RoleBinding", "evc-evc-operator-signing-key", "ops")}
SIGNING_KEY_ENV = {"MIN_PERIOD": "0s", "MAX_PERIOD": "36500d",
                   "SIGNING_KEY_SECRET": "evc-evc-operator-signing-key"}
FROM_NAMESPACE = {"fieldRef": {"fieldPath": "metadata.namespace"}}


def helm_ok(plane: ControlPlane, home: Path, *args: str) -> str:
    result = helm(plane, home, *args)
    assert result.returncode == 0, f"helm {' '.join(args)}:\n{result.stdout}{result.stderr}"
    return result.stdout


def template(plane: ControlPlane, home: Path, *values: str, release: str = "evc",
             namespace: str = "ops") -> list[Manifest]:
    """`helm template` of the chart: its documents, the CRD included."""
    text = helm_ok(plane, home, "template", release, str(CHART), "--namespace", namespace,
                   "--include-crds", *values)
    return [doc for doc in yaml.safe_load_all(text) if doc]


def one(documents: list[Manifest], kind: str, name: str | None = None) -> Manifest:
    found = [doc for doc in documents
             if doc["kind"] == kind and name in (None, doc["metadata"]["name"])]
    assert len(found) == 1, f"{len(found)} {kind} named {name}: {[keys(documents)]}"
    return found[0]


def keys(documents: list[Manifest]) -> set[tuple[str, str, str | None]]:
    return {(doc["kind"], doc["metadata"]["name"], doc["metadata"].get("namespace"))
            for doc in documents}


def container(documents: list[Manifest]) -> Manifest:
    operators: list[Manifest] = one(documents, "Deployment")["spec"]["template"]["spec"][
        "containers"]
    [operator] = operators
    return operator


def env(operator: Manifest) -> dict[str, Any]:
    return {item["name"]: item.get("value", item.get("valueFrom")) for item in operator["env"]}


# -- lint ----------------------------------------------------------------------------------


@pytest.mark.parametrize("values", VALUE_SETS.values(), ids=VALUE_SETS.keys())
@pytest.mark.parametrize("strict", [(), ("--strict",)], ids=["lint", "strict"])
def test_helm_lint_passes(control_plane: ControlPlane, tmp_path: Path,
                          values: tuple[str, ...], strict: tuple[str, ...]) -> None:
    output = helm_ok(control_plane, tmp_path, "lint", str(CHART), *strict, *values)
    assert "1 chart(s) linted, 0 chart(s) failed" in output


@pytest.mark.parametrize(("values", "error"), [
    (("--set", "leaderElection=false"), "at '/replicas': maximum: got 2, want 1"),
    (("--set", "logFormat=xml"), "logFormat"),
    (("--set", "watchNamespaces={a,a}"), "watchNamespaces"),
    (("--set", "watchNamespaces={Not_A_Namespace}"), "watchNamespaces"),
    (("--set", "watchNamespace={a}"), "watchNamespace"),  # a typo is refused, not ignored
    (("--set", "expiryPeriod=soon"), "expiryPeriod"),
    (("--set", "metrics.port=0"), "metrics"),
    (("--set", "dryRun=maybe"), "dryRun"),
    (("--set", "userKinds={workflows.argoproj.io}"), "userKinds"),  # no version
    (("--set", "userKinds={jobs.v1.batch}"), "userKinds"),  # a built-in group, no dot
    (("--set", "userKinds={Workflows.v1alpha1.argoproj.io}"), "userKinds"),
    (("--set", "userKinds=workflows.v1alpha1.argoproj.io"), "userKinds"),  # not a list
    (("--set", "userKinds={taskruns.v1.tekton.dev,taskruns.v1.tekton.dev}"), "userKinds"),
])
def test_wrong_values_are_refused(control_plane: ControlPlane, tmp_path: Path,
                                  values: tuple[str, ...], error: str) -> None:
    for command in ("lint", "template"):
        result = helm(control_plane, tmp_path, command, str(CHART), *values)
        assert result.returncode != 0, f"helm {command} accepted {values}"
        assert error in result.stdout + result.stderr


def test_replicas_without_leader_election_are_refused_by_the_template_too(
        control_plane: ControlPlane, tmp_path: Path) -> None:
    """The schema refuses them first; the template says why if the schema is skipped."""
    result = helm(control_plane, tmp_path, "template", str(CHART), "--skip-schema-validation",
                  "--set", "leaderElection=false")
    assert result.returncode != 0
    assert "replicas > 1 needs leaderElection=true" in result.stderr


@pytest.mark.parametrize(("values", "error"), [
    ("userKinds={jobs.v1.batch}",
     'userKinds: "jobs.v1.batch" is not a resource written as plural.version.group'),
    # The operator refuses a resource listed twice, in two versions: so does the template
    # (the schema's uniqueItems cannot tell).
    ("userKinds={workflows.v1alpha1.argoproj.io,workflows.v1.argoproj.io}",
     "workflows.argoproj.io is listed twice"),
], ids=["malformed", "twice"])
def test_wrong_user_kinds_are_refused_by_the_template_too(
        control_plane: ControlPlane, tmp_path: Path, values: str, error: str) -> None:
    for skip in ((), ("--skip-schema-validation",)):
        result = helm(control_plane, tmp_path, "template", str(CHART), *skip, "--set", values)
        assert result.returncode != 0, result.stdout
        if skip or "twice" in error:
            assert error in result.stderr


@pytest.mark.parametrize(("name", "error"), [
    ("EXPIRY_PERIOD", "extraEnv: EXPIRY_PERIOD is set by the chart; set it with expiryPeriod"),
    # There it would also have no list and watch granted.
    ("USER_KINDS", "extraEnv: USER_KINDS is set by the chart; set it with userKinds"),
    ("POD_NAMESPACE", "extraEnv: POD_NAMESPACE is set by the chart; set it with leaderElection"),
])
def test_extra_env_that_the_chart_sets_is_refused(control_plane: ControlPlane, tmp_path: Path,
                                                  name: str, error: str) -> None:
    """Two entries of one name in a container's env: the last one silently wins."""
    values = tmp_path / "values.yaml"
    values.write_text(json.dumps({"extraEnv": [{"name": name, "value": "x"}]}))
    result = helm(control_plane, tmp_path, "template", str(CHART), "-f", str(values))
    assert result.returncode != 0, result.stdout
    assert error in result.stderr


# -- what the values render ----------------------------------------------------------------


def test_defaults_render_the_operator_for_all_namespaces(control_plane: ControlPlane,
                                                         tmp_path: Path) -> None:
    documents = template(control_plane, tmp_path)
    assert keys(documents) == {
        ("CustomResourceDefinition", CRD_NAME, None),
        ("ServiceAccount", "evc-evc-operator", "ops"),
        ("ClusterRole", "evc-evc-operator", None),
        ("ClusterRoleBinding", "evc-evc-operator", None),
        ("Role", "evc-evc-operator-leader-election", "ops"),
        ("RoleBinding", "evc-evc-operator-leader-election", "ops"),
        ("Deployment", "evc-evc-operator", "ops"),
        ("ClusterRole", "evc-view", None),
        ("ClusterRole", "evc-edit", None),
        ("ValidatingAdmissionPolicy", "evc-label-size", None),
        ("ValidatingAdmissionPolicyBinding", "evc-label-size", None),
    } | SIGNING_KEY
    deployment = one(documents, "Deployment")
    assert deployment["spec"]["replicas"] == 2
    operator = container(documents)
    assert operator["image"] == "evc-operator:0.1.0"
    assert operator["imagePullPolicy"] == "IfNotPresent"
    assert operator["args"] == ["--all-namespaces", LIVENESS, "--log-format=full"]
    assert env(operator) == {
        "EXPIRY_PERIOD": "30s", "GRACE_PERIOD": "30s", "COUNTDOWN_INTERVAL": "10s",
        "DRY_RUN": "false", "LIFECYCLE_EVENTS": "true", "METRICS_PORT": "9090",
        "METRICS_ADDRESS": "0.0.0.0", "LEADER_ELECTION": "true", "LEASE_NAME": "evc-evc-operator",
        "POD_NAME": {"fieldRef": {"fieldPath": "metadata.name"}},
        "POD_NAMESPACE": FROM_NAMESPACE, "SIGNING_KEY_NAMESPACE": FROM_NAMESPACE,
        **SIGNING_KEY_ENV}
    assert operator["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    assert operator["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert {(p["name"], p["containerPort"]) for p in operator["ports"]} == {
        ("health", 8080), ("metrics", 9090)}
    for binding in (doc for doc in documents
                    if doc["kind"] in ("ClusterRoleBinding", "RoleBinding")):
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": "evc-evc-operator", "namespace": "ops"}]
    pod = deployment["spec"]["template"]
    assert pod["spec"]["serviceAccountName"] == "evc-evc-operator"
    assert deployment["spec"]["selector"]["matchLabels"].items() <= pod["metadata"][
        "labels"].items()


def test_watch_namespaces_render_a_role_per_namespace(control_plane: ControlPlane,
                                                      tmp_path: Path) -> None:
    documents = template(control_plane, tmp_path, *NAMESPACED)
    assert container(documents)["args"] == [
        "--namespace=a", "--namespace=b", LIVENESS, "--log-format=full"]
    roles = {(doc["kind"], doc["metadata"]["name"], doc["metadata"].get("namespace"))
             for doc in documents if doc["kind"] in ("Role", "RoleBinding", "ClusterRole",
                                                     "ClusterRoleBinding")}
    assert roles == {
        ("Role", "evc-evc-operator", "a"), ("RoleBinding", "evc-evc-operator", "a"),
        ("Role", "evc-evc-operator", "b"), ("RoleBinding", "evc-evc-operator", "b"),
        ("ClusterRole", "evc-evc-operator-discovery", None),
        ("ClusterRoleBinding", "evc-evc-operator-discovery", None),
        ("Role", "evc-evc-operator-leader-election", "ops"),
        ("RoleBinding", "evc-evc-operator-leader-election", "ops"),
        ("ClusterRole", "evc-view", None),
        ("ClusterRole", "evc-edit", None),
    } | {key for key in SIGNING_KEY if key[0] != "Secret"}
    for doc in documents:
        if doc["kind"] in ("RoleBinding", "ClusterRoleBinding"):
            assert doc["subjects"] == [
                {"kind": "ServiceAccount", "name": "evc-evc-operator", "namespace": "ops"}]
            assert doc["roleRef"]["name"] == doc["metadata"]["name"]


def test_quiet_values_render_a_single_dry_run_without_metrics(control_plane: ControlPlane,
                                                              tmp_path: Path) -> None:
    documents = template(control_plane, tmp_path, *QUIET)
    assert one(documents, "Deployment")["spec"]["replicas"] == 1
    operator = container(documents)
    assert operator["args"] == ["--all-namespaces", LIVENESS, "--log-format=json"]
    assert env(operator) == {
        "EXPIRY_PERIOD": "30s", "GRACE_PERIOD": "30s", "COUNTDOWN_INTERVAL": "10s",
        "DRY_RUN": "true", "LIFECYCLE_EVENTS": "true", "METRICS_PORT": "0",
        "METRICS_ADDRESS": "0.0.0.0", "LEADER_ELECTION": "false",
        "SIGNING_KEY_NAMESPACE": FROM_NAMESPACE,
        **SIGNING_KEY_ENV}
    assert "readinessProbe" not in operator
    assert "livenessProbe" in operator
    assert [port["name"] for port in operator["ports"]] == ["health"]
    assert "annotations" not in one(documents, "Deployment")["spec"]["template"]["metadata"]
    # No Lease without leader election: the signing key's Role only.
    assert {key for key in keys(documents) if key[0] in ("Role", "RoleBinding")} == {
        key for key in SIGNING_KEY if key[0] != "Secret"}
    assert not [doc for doc in documents if doc["kind"] == "Service"]


def test_image_values(control_plane: ControlPlane, tmp_path: Path) -> None:
    operator = container(template(control_plane, tmp_path, *IMAGE))
    assert operator["image"] == "registry.example/team/evc:1.2.3-rc.1"
    assert operator["imagePullPolicy"] == "Always"


def test_every_other_value(control_plane: ControlPlane, tmp_path: Path) -> None:
    documents = template(control_plane, tmp_path, *EVERYTHING)
    deployment = one(documents, "Deployment")
    pod = deployment["spec"]["template"]
    operator = container(documents)
    assert deployment["spec"]["replicas"] == 3
    assert operator["args"] == ["--namespace=a", LIVENESS, "--log-format=plain"]
    assert {name: value for name, value in env(operator).items() if isinstance(value, str)} == {
        "EXPIRY_PERIOD": "15m", "GRACE_PERIOD": "90", "COUNTDOWN_INTERVAL": "2.5",
        "DRY_RUN": "false", "LIFECYCLE_EVENTS": "false", "METRICS_PORT": "9100",
        "METRICS_ADDRESS": "0.0.0.0", "LEADER_ELECTION": "true", "LEASE_NAME": "evc-evc-operator",
        **SIGNING_KEY_ENV}
    assert {(p["name"], p["containerPort"]) for p in operator["ports"]} == {
        ("health", 8080), ("metrics", 9100)}
    assert pod["metadata"]["annotations"] == {
        "prometheus.io/scrape": "true", "prometheus.io/port": "9100", "team": "storage"}
    assert pod["spec"]["nodeSelector"] == {"disk": "ssd"}
    assert pod["spec"]["serviceAccountName"] == "custom"
    assert one(documents, "ServiceAccount")["metadata"]["name"] == "custom"
    service = one(documents, "Service", "evc-evc-operator-metrics")
    assert service["spec"]["ports"] == [
        {"name": "metrics", "port": 9100, "targetPort": "metrics", "protocol": "TCP"}]
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]


USER_KIND_RULES = [
    {"apiGroups": ["argoproj.io"], "resources": ["workflows"], "verbs": ["list", "watch"]},
    {"apiGroups": ["tekton.dev"], "resources": ["pipelineruns"], "verbs": ["list", "watch"]}]


@pytest.mark.parametrize("values", [(), NAMESPACED], ids=["cluster", "namespaced"])
def test_user_kinds_set_the_env_and_grant_list_and_watch(
        control_plane: ControlPlane, tmp_path: Path, values: tuple[str, ...]) -> None:
    """USER_KINDS is the list joined by commas; each kind gets list and watch (its group,
    its plural) after config/'s rules, in the ClusterRole or in each served namespace's
    Role, and nowhere else. Without userKinds there is no USER_KINDS: the operator's
    default, none."""
    documents = template(control_plane, tmp_path, *values, *USER_KINDS)
    assert env(container(documents))["USER_KINDS"] == (
        "workflows.v1alpha1.argoproj.io,pipelineruns.v1.tekton.dev")
    if values:
        served = [doc for doc in documents
                  if doc["kind"] == "Role" and doc["metadata"]["name"] == "evc-evc-operator"]
        assert {doc["metadata"]["namespace"] for doc in served} == {"a", "b"}
        config = [rule for rule in config_rules("rbac-namespaced/role.yaml", "evc-evc-operator")
                  if "leases" not in rule["resources"]]
    else:
        served = [one(documents, "ClusterRole", "evc-evc-operator")]
        config = config_file("rbac/cluster_role.yaml")["rules"]
    for role in served:
        assert role["rules"] == config + USER_KIND_RULES
    others = [doc for doc in documents
              if doc["kind"] in ("Role", "ClusterRole") and doc not in served]
    assert others
    for role in others:
        assert not [rule for rule in role["rules"] if rule in USER_KIND_RULES]
    assert "USER_KINDS" not in env(container(template(control_plane, tmp_path, *values)))


def test_an_existing_service_account(control_plane: ControlPlane, tmp_path: Path) -> None:
    documents = template(control_plane, tmp_path, "--set",
                         "serviceAccount.create=false,serviceAccount.name=robot")
    assert not [doc for doc in documents if doc["kind"] == "ServiceAccount"]
    for binding in (doc for doc in documents
                    if doc["kind"] in ("ClusterRoleBinding", "RoleBinding")):
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": "robot", "namespace": "ops"}]
    assert one(documents, "Deployment")["spec"]["template"]["spec"][
        "serviceAccountName"] == "robot"


@pytest.mark.parametrize("values", [DEFAULTS, NAMESPACED], ids=["cluster", "namespaced"])
def test_no_service_account_named_is_refused_not_bound_to_default(
        control_plane: ControlPlane, tmp_path: Path, values: tuple[str, ...]) -> None:
    """Binding the ClusterRole to "default" would give it to every pod that names no
    ServiceAccount: rendering fails instead, and says what to set."""
    for name in ((), ("--set", "serviceAccount.name=")):
        result = helm(control_plane, tmp_path, "template", "evc", str(CHART), *values,
                      "--set", "serviceAccount.create=false", *name)
        assert result.returncode != 0, result.stdout
        assert "serviceAccount.create=false needs serviceAccount.name" in result.stderr
        assert "name: default" not in result.stdout


def test_two_releases_share_no_object(control_plane: ControlPlane, tmp_path: Path) -> None:
    """But the user roles and the label-size policy, which concern the cluster-wide CRD: one
    release ships them."""
    for values in (DEFAULTS, NAMESPACED):
        first = template(control_plane, tmp_path, *values, release="one", namespace="ops")
        second = template(control_plane, tmp_path, *values, "--set", "userRoles.create=false",
                          "--set", "admissionPolicy.create=false", release="two",
                          namespace="ops")
        assert keys(first) & keys(second) == {("CustomResourceDefinition", CRD_NAME, None)}
        assert env(container(first))["LEASE_NAME"] != env(container(second))["LEASE_NAME"]


# -- the same operator as config/ ----------------------------------------------------------


def test_default_rbac_and_crd_are_those_of_config(control_plane: ControlPlane,
                                                  tmp_path: Path) -> None:
    documents = template(control_plane, tmp_path)
    assert one(documents, "ClusterRole", "evc-evc-operator")["rules"] == config_file(
        "rbac/cluster_role.yaml")["rules"]
    assert one(documents, "Role", "evc-evc-operator-leader-election")["rules"] == config_rules(
        "rbac/leader_election_role.yaml", "evc-evc-operator")
    assert one(documents, "Role", "evc-evc-operator-signing-key")["rules"] == config_rules(
        "signing-key/role.yaml", "evc-evc-operator") == [{
            "apiGroups": [""], "resources": ["secrets"],
            "resourceNames": ["evc-evc-operator-signing-key"], "verbs": ["get", "patch"]}]
    for role in ("view", "edit"):
        shipped = config_file(f"rbac/users/evc_{role}.yaml")
        rendered = one(documents, "ClusterRole", f"evc-{role}")
        assert rendered["rules"] == shipped["rules"]
        assert shipped["metadata"]["labels"].items() <= rendered["metadata"]["labels"].items()
    assert one(documents, "CustomResourceDefinition") == config_file(
        "crd/ephemeralvolumeclaims.yaml")


def test_namespaced_rbac_is_that_of_config(control_plane: ControlPlane,
                                           tmp_path: Path) -> None:
    """A served namespace's Role grants config/rbac-namespaced/role.yaml's rules but the
    Lease's: the Lease is in the release's namespace, with a Role of its own."""
    documents = template(control_plane, tmp_path, *NAMESPACED)
    role_rules = [rule for rule in config_rules("rbac-namespaced/role.yaml", "evc-evc-operator")
                  if "leases" not in rule["resources"]]
    for namespace in ("a", "b"):
        [role] = [doc for doc in documents
                  if doc["kind"] == "Role" and doc["metadata"]["namespace"] == namespace]
        assert role["rules"] == role_rules
    assert one(documents, "ClusterRole", "evc-evc-operator-discovery")["rules"] == config_file(
        "rbac-namespaced/discovery_cluster_role.yaml")["rules"]
    assert one(documents, "Role", "evc-evc-operator-leader-election")["rules"] == config_rules(
        "rbac/leader_election_role.yaml", "evc-evc-operator")


@pytest.mark.parametrize("values", [
    ("--set", "watchNamespaces={a,ops}"),
    ("--set", "watchNamespaces={a,ops},leaderElection=false,replicas=1"),
], ids=["leader-election", "no-leader-election"])
def test_a_served_namespaces_role_grants_no_lease(control_plane: ControlPlane,
                                                  tmp_path: Path, values: tuple[str, ...]
                                                  ) -> None:
    """Leases only in the release's namespace (ops), and only with leader election: a
    served namespace's Role, the release's own included, has no rule about them."""
    documents = template(control_plane, tmp_path, *values)
    served = [doc for doc in documents
              if doc["kind"] == "Role" and doc["metadata"]["name"] == "evc-evc-operator"]
    assert {doc["metadata"]["namespace"] for doc in served} == {"a", "ops"}
    for role in served:
        assert role["rules"]
        assert not [rule for rule in role["rules"] if "leases" in rule["resources"]]
    lease_roles = [doc for doc in documents if doc["kind"] == "Role" and any(
        "leases" in rule["resources"] for rule in doc["rules"])]
    if "leaderElection=false" in values[-1]:
        assert lease_roles == []
    else:
        assert [(doc["metadata"]["name"], doc["metadata"]["namespace"])
                for doc in lease_roles] == [("evc-evc-operator-leader-election", "ops")]


def config_keys(documents: list[Manifest]) -> set[tuple[str, str, str | None]]:
    return keys([doc for doc in documents if doc["kind"] != "Namespace"])


def test_release_evc_operator_makes_the_objects_of_config(control_plane: ControlPlane,
                                                          tmp_path: Path) -> None:
    """Named evc-operator in namespace evc-operator, the chart makes what kustomize makes
    (but the Namespace: `helm install --create-namespace` makes that)."""
    chart = template(control_plane, tmp_path, release="evc-operator",
                     namespace=OPERATOR_NAMESPACE)
    assert keys(chart) == config_keys(render(control_plane, "default"))

    chart = template(control_plane, tmp_path, "--set", f"watchNamespaces={{{OPERATOR_NAMESPACE}}}",
                     release="evc-operator", namespace=OPERATOR_NAMESPACE)
    lease = {("Role", "evc-operator-leader-election", OPERATOR_NAMESPACE),
             ("RoleBinding", "evc-operator-leader-election", OPERATOR_NAMESPACE)}
    # The chart grants the Lease with its own Role whenever leaderElection is on, so that
    # it works when the operator's namespace is not one it serves; config/namespaced's Role
    # grants it in the one namespace it serves.
    # The chart ships the label-size admission policy (admissionPolicy.create); the
    # namespaced overlay leaves it to config/admission, applied once per cluster.
    policy = {("ValidatingAdmissionPolicy", "evc-label-size", None),
              ("ValidatingAdmissionPolicyBinding", "evc-label-size", None)}
    assert keys(chart) == config_keys(render(control_plane, "namespaced")) | lease | policy


def test_the_deployment_is_that_of_config(control_plane: ControlPlane, tmp_path: Path) -> None:
    """Everything but the chart's additions: labels, imagePullPolicy, --log-format (Kopf's
    default, full) and LEASE_NAME (the release's name; evc-operator, the operator's default,
    for this release)."""
    chart = one(template(control_plane, tmp_path, release="evc-operator",
                         namespace=OPERATOR_NAMESPACE), "Deployment")
    config = config_file("manager/deployment.yaml")
    assert chart["spec"]["replicas"] == config["spec"]["replicas"]
    chart_pod, config_pod = chart["spec"]["template"], config["spec"]["template"]
    assert chart_pod["metadata"]["annotations"] == config_pod["metadata"]["annotations"]
    assert chart_pod["spec"] == config_pod["spec"] | {"containers": chart_pod["spec"][
        "containers"]}
    [chart_container] = chart_pod["spec"]["containers"]
    [config_container] = config_pod["spec"]["containers"]
    assert chart_container.pop("imagePullPolicy") == "IfNotPresent"
    assert chart_container["args"].pop() == "--log-format=full"
    assert chart_container["env"].pop(12) == {"name": "LEASE_NAME", "value": "evc-operator"}
    assert chart_container == config_container


# -- onto the control plane ----------------------------------------------------------------


# config/default, applied by tests/integration/test_deploy.py, owns evc-view, evc-edit and
# the label-size policy in this cluster: a release that made them too would be refused
# (they are one per cluster).
NO_USER_ROLES = ("--set", "userRoles.create=false", "--set", "admissionPolicy.create=false")


def release_name(namespace: str) -> str:
    return f"r-{namespace}"


@pytest.fixture
def helm_home(tmp_path: Path) -> Path:
    home = tmp_path / "helm"
    home.mkdir()
    return home


@pytest.fixture
def release(control_plane: ControlPlane, kubectl: Kubectl,
            helm_home: Path) -> Iterator[str]:
    """A release name for this test's namespace; uninstalled afterwards if still there."""
    name = release_name(kubectl.namespace)
    yield name
    helm(control_plane, helm_home, "uninstall", name, "--namespace", kubectl.namespace,
         "--ignore-not-found")


def cluster_get(plane: ControlPlane, kind: str, name: str) -> Manifest | None:
    result = plane.kubectl_result("get", kind, name, "-o", "json")
    if result.returncode != 0:
        assert "NotFound" in result.stderr, result.stderr
        return None
    found: Manifest = json.loads(result.stdout)
    return found


def installed_container(kubectl: Kubectl, name: str) -> Manifest:
    deployment = kubectl.get("deployment", name)
    assert deployment is not None
    operators: list[Manifest] = deployment["spec"]["template"]["spec"]["containers"]
    [operator] = operators
    return operator


def test_namespaced_install_and_uninstall(control_plane: ControlPlane, kubectl: Kubectl,
                                          helm_home: Path, release: str) -> None:
    namespace = kubectl.namespace
    output = helm_ok(control_plane, helm_home, "install", release, str(CHART),
                     "--namespace", namespace, "--set", f"watchNamespaces={{{namespace}}}",
                     *NO_USER_ROLES)
    assert f"It serves the namespaces: {namespace} (one Role each)." in output
    fullname = f"{release}-evc-operator"
    operator = installed_container(kubectl, fullname)
    assert operator["args"] == [f"--namespace={namespace}", LIVENESS, "--log-format=full"]
    assert env(operator)["LEASE_NAME"] == fullname
    assert env(operator)["POD_NAMESPACE"] == {
        "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}
    for kind, name in [("serviceaccount", fullname), ("role", fullname),
                       ("rolebinding", fullname), ("role", f"{fullname}-leader-election"),
                       ("rolebinding", f"{fullname}-leader-election")]:
        assert kubectl.get(kind, name), f"{kind} {name}"
    for kind, name in [("clusterrole", f"{fullname}-discovery"),
                       ("clusterrolebinding", f"{fullname}-discovery"),
                       ("crd", CRD_NAME)]:
        assert cluster_get(control_plane, kind, name), f"{kind} {name}"
    assert cluster_get(control_plane, "clusterrole", fullname) is None

    account = f"system:serviceaccount:{namespace}:{fullname}"
    assert can_i(control_plane, account, "list", "pods", namespace)
    assert can_i(control_plane, account, "delete", "ephemeralvolumeclaims.zalando.org",
                 namespace)
    assert can_i(control_plane, account, "update", f"leases.coordination.k8s.io/{fullname}",
                 namespace)
    assert not can_i(control_plane, account, "update", "leases.coordination.k8s.io/other",
                     namespace)
    assert can_i(control_plane, account, "list", "namespaces")
    assert not can_i(control_plane, account, "list", "pods", "default")
    assert not can_i(control_plane, account, "get", "secrets", namespace)

    releases = json.loads(helm_ok(control_plane, helm_home, "list", "--namespace", namespace,
                                  "-o", "json"))
    assert [(r["name"], r["status"]) for r in releases] == [(release, "deployed")]

    helm_ok(control_plane, helm_home, "uninstall", release, "--namespace", namespace,
            "--wait")
    for kind, name in [("deployment", fullname), ("serviceaccount", fullname),
                       ("role", fullname), ("rolebinding", fullname),
                       ("role", f"{fullname}-leader-election")]:
        assert kubectl.get(kind, name) is None, f"{kind} {name} is left"
    for kind in ("clusterrole", "clusterrolebinding"):
        assert cluster_get(control_plane, kind, f"{fullname}-discovery") is None
    # Helm never deletes what crds/ installed: the claims of every namespace outlive it.
    assert cluster_get(control_plane, "crd", CRD_NAME)


def test_cluster_wide_install_and_uninstall(control_plane: ControlPlane, kubectl: Kubectl,
                                            helm_home: Path, release: str) -> None:
    namespace = kubectl.namespace
    helm_ok(control_plane, helm_home, "install", release, str(CHART), "--namespace", namespace,
            *NO_USER_ROLES)
    fullname = f"{release}-evc-operator"
    operator = installed_container(kubectl, fullname)
    assert operator["args"] == ["--all-namespaces", LIVENESS, "--log-format=full"]
    assert operator["securityContext"]["readOnlyRootFilesystem"] is True
    role = cluster_get(control_plane, "clusterrole", fullname)
    assert role is not None
    assert role["rules"] == config_file("rbac/cluster_role.yaml")["rules"]
    binding = cluster_get(control_plane, "clusterrolebinding", fullname)
    assert binding is not None
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": fullname, "namespace": namespace}]
    lease_role = kubectl.get("role", f"{fullname}-leader-election")
    assert lease_role is not None
    assert lease_role["rules"] == config_rules("rbac/leader_election_role.yaml", fullname)
    account = f"system:serviceaccount:{namespace}:{fullname}"
    assert can_i(control_plane, account, "list", "pods")
    assert can_i(control_plane, account, "watch", "ephemeralvolumeclaims.zalando.org")
    assert not can_i(control_plane, account, "update", "leases.coordination.k8s.io", "default")
    # Its own Lease only: not another component's beside it.
    assert can_i(control_plane, account, "get", f"leases.coordination.k8s.io/{fullname}",
                 namespace)
    assert can_i(control_plane, account, "update", f"leases.coordination.k8s.io/{fullname}",
                 namespace)
    assert not can_i(control_plane, account, "update",
                     "leases.coordination.k8s.io/kube-scheduler", namespace)
    assert can_i(control_plane, account, "create", "leases.coordination.k8s.io", namespace)

    helm_ok(control_plane, helm_home, "uninstall", release, "--namespace", namespace, "--wait")
    for kind in ("clusterrole", "clusterrolebinding"):
        assert cluster_get(control_plane, kind, fullname) is None, f"{kind} is left"
    assert kubectl.get("deployment", fullname) is None
    assert kubectl.get("role", f"{fullname}-leader-election") is None
    assert cluster_get(control_plane, "crd", CRD_NAME)


# -- the chart's RBAC runs the operator ----------------------------------------------------


class DeploymentProcess:
    """The installed Deployment's container run as a process, as its pod would run it:
    `evc-operator` with the container's args and env (the downward API resolved), as the
    release's ServiceAccount. Only the ports are free ones, so nothing here clashes."""

    def __init__(self, plane: ControlPlane, deployment: Manifest, pod_name: str,
                 kubeconfig: Path, logfile: Path) -> None:
        [operator] = deployment["spec"]["template"]["spec"]["containers"]
        fields = {"metadata.name": pod_name,
                  "metadata.namespace": deployment["metadata"]["namespace"]}
        environ = plane.environ()
        environ["KUBECONFIG"] = str(kubeconfig)
        for item in operator["env"]:
            environ[item["name"]] = (item["value"] if "value" in item
                                     else fields[item["valueFrom"]["fieldRef"]["fieldPath"]])
        assert environ["METRICS_PORT"] != "0"
        self.metrics_port = free_port()
        environ["METRICS_PORT"] = str(self.metrics_port)
        self.logfile = logfile
        command = [str(Path(sys.executable).parent / "evc-operator"),
                   *with_liveness_port(operator["args"], free_port())]
        with logfile.open("ab") as log:
            self.process = subprocess.Popen(command, cwd=REPO, env=environ, stdout=log,
                                            stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL)

    def log_text(self) -> str:
        return self.logfile.read_text(errors="replace") if self.logfile.exists() else ""

    def ready(self) -> bool:
        """What the Deployment's readinessProbe asks: GET /readyz answers 200."""
        if self.process.poll() is not None:
            raise AssertionError(f"evc-operator exited with {self.process.returncode}:\n"
                                 + self.log_text())
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/readyz",
                                        timeout=5) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return False

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def test_the_charts_namespaced_rbac_runs_the_whole_lifecycle(
        control_plane: ControlPlane, kubectl: Kubectl, helm_home: Path, release: str,
        tmp_path: Path) -> None:
    namespace = kubectl.namespace
    helm_ok(control_plane, helm_home, "install", release, str(CHART), "--namespace", namespace,
            "--set", f"watchNamespaces={{{namespace}}}", *NO_USER_ROLES,
            "--set", "expiryPeriod=4,gracePeriod=3,countdownInterval=1")
    fullname = f"{release}-evc-operator"
    deployment = kubectl.get("deployment", fullname)
    assert deployment is not None
    config = control_plane.service_account_kubeconfig(namespace, fullname,
                                                      tmp_path / "sa.kubeconfig")
    process = DeploymentProcess(control_plane, deployment, f"{fullname}-0", config,
                                tmp_path / "operator.log")
    try:
        eventually(process.ready, timeout=60, what="/readyz")
        eventually(lambda: "Became the leader" in process.log_text(), timeout=30,
                   what="the Lease taken")
        lease = kubectl.get("lease", fullname)
        assert lease is not None
        assert lease["spec"]["holderIdentity"] == f"{fullname}-0"
        full_lifecycle(kubectl, "helm-rbac")
    except AssertionError as error:
        raise AssertionError(f"{error}\noperator log:\n{process.log_text()}") from error
    finally:
        process.stop()
    assert_no_permission_errors(process.log_text())
