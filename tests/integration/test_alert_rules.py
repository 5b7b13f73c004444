"""The chart's alerting rules, checked by Prometheus' own promtool (3.16.0, built from the
pinned Go module like the control plane's binaries): `promtool check rules` on the rules
the PrometheusRule renders, and `promtool test rules` on tests/integration/rules/, where
each alert fires on series that should fire it and stays silent on series that should not.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from controlplane.binaries import ensure_promtool
from controlplane.cluster import ControlPlane
from tests.integration.test_helm import one, template

UNIT_TESTS = Path(__file__).parent / "rules" / "evc-operator.test.yaml"
RULES = ("--set", "prometheusRule.enabled=true")
# Every threshold and duration far beyond what the unit tests' firing series reach.
LENIENT = ("--set", "prometheusRule.noLeaderFor=1h,prometheusRule.podViewIncompleteFor=1h,"
           "prometheusRule.deletionOverdueSeconds=100000,"
           "prometheusRule.deletionLatenessSeconds=1000,prometheusRule.apiErrorsPerSecond=10,"
           "prometheusRule.reconcileFailuresPerSecond=10,prometheusRule.claimsStuckFor=2h,"
           "prometheusRule.unwatchedControllerFor=2h")
Manifest = dict[str, Any]


def promtool(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(ensure_promtool()), *args], capture_output=True, text=True,
                          cwd=cwd, check=False)


def rule_groups(plane: ControlPlane, home: Path, *values: str) -> Manifest:
    """The rendered PrometheusRule's spec: a Prometheus rules file as it stands."""
    spec: Manifest = one(template(plane, home, *RULES, *values), "PrometheusRule")["spec"]
    return spec


def alerts(groups: Manifest) -> list[Manifest]:
    return [rule for group in groups["groups"] for rule in group["rules"]]


def summaries_only(groups: Manifest) -> Manifest:
    """The rules with each alert's summary as its only annotation: promtool compares all
    annotations, and the unit tests spell out the summaries, not the long descriptions."""
    trimmed: Manifest = yaml.safe_load(yaml.safe_dump(groups))
    for rule in alerts(trimmed):
        rule["annotations"] = {"summary": rule["annotations"]["summary"]}
    return trimmed


def unit_test(directory: Path, groups: Manifest) -> subprocess.CompletedProcess[str]:
    shutil.copy(UNIT_TESTS, directory / UNIT_TESTS.name)
    (directory / "rules.yaml").write_text(yaml.safe_dump(summaries_only(groups)))
    return promtool("test", "rules", UNIT_TESTS.name, cwd=directory)


@pytest.mark.parametrize("values", [(), LENIENT, ("--set", 'prometheusRule.selector=job="evc"')])
def test_promtool_accepts_the_rendered_rules(control_plane: ControlPlane, tmp_path: Path,
                                             values: tuple[str, ...]) -> None:
    groups = rule_groups(control_plane, tmp_path, *values)
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(groups))
    result = promtool("check", "rules", "--lint=all", "--lint-fatal", "rules.yaml",
                      cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(alerts(groups))} rules found" in result.stdout


def test_promtool_refuses_a_broken_rule(control_plane: ControlPlane, tmp_path: Path) -> None:
    """What the check above would say if a template rendered bad PromQL."""
    groups = rule_groups(control_plane, tmp_path)
    alerts(groups)[0]["expr"] += " and ("
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(groups))
    result = promtool("check", "rules", "rules.yaml", cwd=tmp_path)
    assert result.returncode != 0
    assert "FAILED" in result.stdout + result.stderr


def test_each_alert_has_a_case_that_fires_and_one_that_does_not(
        control_plane: ControlPlane, tmp_path: Path) -> None:
    names = {rule["alert"] for rule in alerts(rule_groups(control_plane, tmp_path))}
    cases = [case for group in yaml.safe_load(UNIT_TESTS.read_text())["tests"]
             for case in group["alert_rule_test"]]
    assert {case["alertname"] for case in cases if case["exp_alerts"]} == names
    assert {case["alertname"] for case in cases if not case["exp_alerts"]} == names


def test_promtool_unit_tests_of_the_alerts(control_plane: ControlPlane,
                                           tmp_path: Path) -> None:
    result = unit_test(tmp_path, rule_groups(control_plane, tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_the_unit_tests_see_the_thresholds(control_plane: ControlPlane,
                                           tmp_path: Path) -> None:
    """With every threshold out of reach, every alert's firing case fails: the cases test
    the rendered values, not only the expressions' shape."""
    groups = rule_groups(control_plane, tmp_path, *LENIENT)
    result = unit_test(tmp_path, groups)
    assert result.returncode != 0, result.stdout
    for name in {rule["alert"] for rule in alerts(groups)}:
        assert f"alertname: {name}," in result.stdout + result.stderr, name
