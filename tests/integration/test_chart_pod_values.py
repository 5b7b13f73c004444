"""The chart's values for where and how its pods run: PodDisruptionBudget, topology spread,
priority, extra labels and environment, image pull secrets. Rendered by the project's helm,
and accepted by the API server (server-side dry run)."""

from __future__ import annotations

from pathlib import Path

from controlplane.cluster import ControlPlane
from tests.integration.support import Kubectl
from tests.integration.test_helm import NO_USER_ROLES, container, env, one, template
from tests.integration.test_monitoring import dry_run

POD_VALUES = (
    "--set", "podDisruptionBudget.enabled=true,podDisruptionBudget.maxUnavailable=50%",
    "--set", "priorityClassName=system-cluster-critical",
    "--set", "podLabels.team=storage",
    "--set", "extraEnv[0].name=HTTPS_PROXY,extraEnv[0].value=http://proxy:3128",
    "--set", "imagePullSecrets[0].name=regcred",
    "--set", "topologySpreadConstraints[0].maxSkew=1,"
             "topologySpreadConstraints[0].topologyKey=kubernetes.io/hostname,"
             "topologySpreadConstraints[0].whenUnsatisfiable=ScheduleAnyway,"
             "topologySpreadConstraints[0].labelSelector.matchLabels.app\\.kubernetes\\.io/"
             "instance=evc",
)


def test_pod_values_render(control_plane: ControlPlane, tmp_path: Path) -> None:
    documents = template(control_plane, tmp_path, *POD_VALUES)
    deployment = one(documents, "Deployment")
    pod = deployment["spec"]["template"]
    assert pod["metadata"]["labels"]["team"] == "storage"
    assert "team" not in deployment["spec"]["selector"]["matchLabels"]
    assert pod["spec"]["priorityClassName"] == "system-cluster-critical"
    assert pod["spec"]["imagePullSecrets"] == [{"name": "regcred"}]
    assert pod["spec"]["topologySpreadConstraints"] == [{
        "maxSkew": 1, "topologyKey": "kubernetes.io/hostname",
        "whenUnsatisfiable": "ScheduleAnyway",
        "labelSelector": {"matchLabels": {"app.kubernetes.io/instance": "evc"}}}]
    operator = container(documents)
    assert operator["env"][-1] == {"name": "HTTPS_PROXY", "value": "http://proxy:3128"}
    assert env(operator)["LEASE_NAME"] == "evc-evc-operator", "the chart's own env stays"
    budget = one(documents, "PodDisruptionBudget")
    assert budget["spec"] == {"selector": deployment["spec"]["selector"],
                              "maxUnavailable": "50%"}

    default_budget = one(template(control_plane, tmp_path, "--set",
                                  "podDisruptionBudget.enabled=true"), "PodDisruptionBudget")
    assert default_budget["spec"]["minAvailable"] == 1


def test_pod_values_are_accepted_by_the_api_server(control_plane: ControlPlane,
                                                   kubectl: Kubectl, tmp_path: Path) -> None:
    documents = [doc for doc in template(control_plane, tmp_path, *POD_VALUES, *NO_USER_ROLES,
                                         namespace=kubectl.namespace)
                 if doc["kind"] != "CustomResourceDefinition"]
    accepted = dry_run(control_plane, documents)
    assert "poddisruptionbudget.policy/evc-evc-operator" in accepted
    assert "deployment.apps/evc-evc-operator" in accepted
