"""The chart's monitoring, for real: its ServiceMonitor, PodMonitor, PrometheusRule and
dashboard ConfigMap are accepted by the API server with the Prometheus Operator's published
CRDs installed (tests/integration/crds/prometheus-operator/, v0.85.0), and every metric
their queries name is one a running operator exports, read with the Prometheus client's
own parser.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from controlplane.cluster import ControlPlane, free_port
from tests.integration.conftest import OperatorFactory
from tests.integration.support import REPO, Kubectl, eventually
from tests.integration.test_controlplane import helm
from tests.integration.test_helm import NO_USER_ROLES, one, template
from tests.integration.test_observability import fetch

CRDS = REPO / "tests" / "integration" / "crds" / "prometheus-operator"
MONITORING = ("--set", "prometheusRule.enabled=true,grafanaDashboard.enabled=true")
MONITORS = {"serviceMonitor": ("ServiceMonitor", "Service"), "podMonitor": ("PodMonitor", None)}
Manifest = dict[str, Any]


@pytest.fixture(scope="module")
def prometheus_operator_crds(control_plane: ControlPlane) -> None:
    control_plane.kubectl("apply", "--server-side", "-f", str(CRDS))
    control_plane.established(*(f"crd/{kind}.monitoring.coreos.com"
                                for kind in ("servicemonitors", "podmonitors", "prometheusrules")))


def dry_run(plane: ControlPlane, documents: list[Manifest]) -> list[str]:
    """Server-side apply with --dry-run=server: the API server validates every object
    against its schema (the CRDs' openAPIV3Schema too) and stores nothing."""
    result = plane.kubectl_result(
        "apply", "--server-side", "--dry-run=server", "--field-manager=evc-test",
        "-o", "name", "-f", "-",
        input=json.dumps({"apiVersion": "v1", "kind": "List", "items": documents}))
    assert result.returncode == 0, result.stderr
    return sorted(result.stdout.split())


@pytest.mark.parametrize("monitor", MONITORS)
def test_monitoring_objects_are_accepted_by_the_api_server(
        control_plane: ControlPlane, prometheus_operator_crds: None, kubectl: Kubectl,
        tmp_path: Path, monitor: str) -> None:
    namespace = kubectl.namespace
    documents = template(control_plane, tmp_path, *MONITORING, *NO_USER_ROLES,
                         "--set", f"metrics.{monitor}.enabled=true",
                         "--set", f"metrics.{monitor}.interval=15s",
                         "--set", f"metrics.{monitor}.labels.release=prometheus",
                         "--set", "prometheusRule.labels.release=prometheus",
                         "--set", "podDisruptionBudget.enabled=true",
                         release="mon", namespace=namespace)
    documents = [doc for doc in documents if doc["kind"] != "CustomResourceDefinition"]
    kind, service = MONITORS[monitor]
    accepted = dry_run(control_plane, documents)
    for expected in (f"{kind.lower()}.monitoring.coreos.com/mon-evc-operator",
                     "prometheusrule.monitoring.coreos.com/mon-evc-operator",
                     "configmap/mon-evc-operator-dashboard",
                     "poddisruptionbudget.policy/mon-evc-operator",
                     "deployment.apps/mon-evc-operator"):
        assert expected in accepted, accepted

    scraper = one(documents, kind)
    assert scraper["metadata"]["labels"]["release"] == "prometheus"
    pods = one(documents, "Deployment")["spec"]["template"]
    target = one(documents, service) if service else pods
    assert scraper["spec"]["selector"]["matchLabels"].items() <= target["metadata"][
        "labels"].items()
    assert scraper["spec"]["namespaceSelector"] == {"matchNames": [namespace]}
    [endpoint] = scraper["spec"]["endpoints" if service else "podMetricsEndpoints"]
    assert endpoint == {"port": "metrics", "path": "/metrics", "interval": "15s"}
    ports = (one(documents, "Service")["spec"]["ports"] if service
             else pods["spec"]["containers"][0]["ports"])
    assert "metrics" in {port["name"] for port in ports}
    assert one(documents, "PrometheusRule")["metadata"]["labels"]["release"] == "prometheus"


def test_nothing_of_the_prometheus_operator_by_default(control_plane: ControlPlane,
                                                       tmp_path: Path) -> None:
    """A cluster without the Prometheus Operator installs the defaults."""
    kinds = {doc["kind"] for doc in template(control_plane, tmp_path)}
    assert not kinds & {"ServiceMonitor", "PodMonitor", "PrometheusRule", "ConfigMap",
                        "PodDisruptionBudget", "Service"}


def rules(documents: list[Manifest]) -> dict[str, Manifest]:
    [group] = one(documents, "PrometheusRule")["spec"]["groups"]
    return {rule["alert"]: rule for rule in group["rules"]}


def test_the_alerts(control_plane: ControlPlane, tmp_path: Path) -> None:
    documents = template(control_plane, tmp_path, *MONITORING, "--set",
                         "prometheusRule.deletionOverdueSeconds=600,prometheusRule.noLeaderFor=2m")
    alerts = rules(documents)
    assert set(alerts) == {"EvcOperatorNoLeader", "EvcOperatorSeveralLeaders",
                           "EvcPodViewIncomplete", "EvcDeletionOverdue", "EvcDeletionsLate",
                           "EvcApiErrors", "EvcReconcileFailures", "EvcClaimsStuck",
                           "EvcClaimsUnwatchedController"}
    selector = 'namespace="ops", pod=~"evc-evc-operator-[a-z0-9]+-[a-z0-9]+"'
    for name, alert in alerts.items():
        matchers = re.findall(r"\bevc_[a-z_]+\{([^}]*)\}", alert["expr"])
        assert matchers, name
        assert all(found.startswith(selector) for found in matchers), name
        assert alert["labels"]["severity"] in ("critical", "warning"), name
        assert alert["annotations"]["summary"], name
        assert alert["annotations"]["description"], name
        assert alert["expr"].count("(") == alert["expr"].count(")"), name
    no_leader = alerts["EvcOperatorNoLeader"]
    assert (no_leader["for"], no_leader["labels"]["severity"]) == ("2m", "critical")
    assert "or vector(0)" in no_leader["expr"], "no series at all is no leader too"
    assert "> 600" in alerts["EvcDeletionOverdue"]["expr"]
    assert "evc_leader" in alerts["EvcDeletionOverdue"]["expr"], "the leader's view only"
    # Prometheus' own template syntax reaches Prometheus untouched by Helm.
    assert "{{ $labels.pod }}" in alerts["EvcPodViewIncomplete"]["annotations"]["summary"]
    stuck = alerts["EvcClaimsStuck"]
    # Every reason but those that pause deletion on purpose (a reason added later too).
    assert 'reason!~"Kept|DryRun"' in stuck["expr"]
    assert (stuck["for"], stuck["labels"]["severity"]) == ("30m", "warning")
    unwatched = alerts["EvcClaimsUnwatchedController"]
    assert (unwatched["for"], unwatched["labels"]["severity"]) == ("10m", "warning")

    custom = rules(template(control_plane, tmp_path, *MONITORING, "--set",
                            'prometheusRule.selector=job="evc"'))
    assert all(re.search(r'\{job="evc"[,}]', alert["expr"]) for alert in custom.values())


def queries(documents: list[Manifest]) -> dict[str, str]:
    """Every PromQL expression the chart ships: alerts and dashboard panels."""
    found = {name: alert["expr"] for name, alert in rules(documents).items()}
    dashboard = json.loads(one(documents, "ConfigMap")["data"]["evc-operator.json"])
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            found[f"{panel['title']} {target['refId']}"] = target["expr"]
    return found


def exported_series(text: str) -> set[str]:
    """The series names a scrape holds or announces, by the Prometheus client's parser:
    a labelled counter that has not counted yet is announced (TYPE) without samples."""
    names: set[str] = set()
    for family in text_string_to_metric_families(text):
        suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_count", "_sum"],
                    "summary": ["_count", "_sum", ""]}.get(family.type, [""])
        names |= {family.name + suffix for suffix in suffixes}
        names |= {sample.name for sample in family.samples}
    return names


def test_alerts_and_dashboard_query_only_metrics_the_operator_exports(
        control_plane: ControlPlane, kubectl: Kubectl, operator: OperatorFactory,
        tmp_path: Path) -> None:
    port = free_port()
    operator(kubectl.namespace, METRICS_PORT=str(port))
    text = eventually(lambda: (lambda answer: answer[1] if answer[0] == 200 else "")(
        fetch(f"http://127.0.0.1:{port}/metrics")), what="a scrape")
    exported = exported_series(text)
    assert {"evc_leader", "evc_api_errors_total", "evc_deletion_lateness_seconds_bucket"} <= \
        exported
    found = queries(template(control_plane, tmp_path, *MONITORING))
    assert len(found) >= 15
    for where, expr in found.items():
        named = set(re.findall(r"\b(evc_[a-z_]+)\b", expr))
        assert named, f"{where} queries no operator metric: {expr}"
        assert named <= exported, f"{where}: {named - exported} not exported"


def test_dashboard_configmap(control_plane: ControlPlane, tmp_path: Path) -> None:
    documents = template(control_plane, tmp_path, *MONITORING, "--set",
                         "grafanaDashboard.namespace=monitoring,"
                         "grafanaDashboard.annotations.grafana_folder=Storage")
    config_map = one(documents, "ConfigMap")
    assert config_map["metadata"]["namespace"] == "monitoring"
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert config_map["metadata"]["annotations"] == {"grafana_folder": "Storage"}
    shipped = (REPO / "charts" / "evc-operator" / "dashboards" / "evc-operator.json")
    assert json.loads(config_map["data"]["evc-operator.json"]) == json.loads(
        shipped.read_text())


@pytest.mark.parametrize(("values", "error"), [
    (("--set", "metrics.serviceMonitor.enabled=true,metrics.podMonitor.enabled=true"),
     "scraped twice"),
    (("--set", "metrics.podMonitor.enabled=true,metrics.enabled=false"), "nothing to scrape"),
    (("--set", "podDisruptionBudget.enabled=true,replicas=1"), "needs replicas > 1"),
    (("--set", "prometheusRule.noLeaderFor=soon"), "noLeaderFor"),
    (("--set", "metrics.podMonitor.interval=often"), "interval"),
])
def test_monitoring_values_that_cannot_work_are_refused(
        control_plane: ControlPlane, tmp_path: Path, values: tuple[str, ...],
        error: str) -> None:
    result = helm(control_plane, tmp_path, "template", "evc",
                  str(REPO / "charts" / "evc-operator"), *values)
    assert result.returncode != 0, result.stdout
    assert error in result.stderr
