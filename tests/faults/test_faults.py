"""A bounded number of fault scenarios for every test run (`make faults` runs 200), one
with the operator serving every namespace as the chart runs it (`python -m tests.faults
--all-namespaces` runs more), and one on a real node (`--real-node`)."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from controlplane.cluster import ControlPlane
from controlplane.node import Node
from tests.faults.judge import Report
from tests.faults.realnode import RealNodeScenario
from tests.faults.scenario import Scenario
from tests.faults.workloads import CONTROLLER_ARGS
from tests.integration.support import cluster_with_node

REPO = Path(__file__).resolve().parents[2]
SEEDS = range(int(os.environ.get("EVC_FAULT_SEED", "1")),
              int(os.environ.get("EVC_FAULT_SEED", "1")) + int(os.environ.get("EVC_FAULTS", "3")))
# Seed 9: Jobs (one attempt failed), an expired watch, an API server restart, a clock off.
EVERY_NAMESPACE_SEED = int(os.environ.get("EVC_ALL_NAMESPACES_FAULT_SEED", "9"))
LOG_LINES = 40  # of each operator log, for each claim a violation names
REAL_SEEDS = range(int(os.environ.get("EVC_REAL_FAULT_SEED", "1")),
                   int(os.environ.get("EVC_REAL_FAULT_SEED", "1"))
                   + int(os.environ.get("EVC_REAL_FAULTS", "1")))


def _verdict(report: Report, workdir: Path) -> str:
    """The report, and what the operator logged of each claim judged: a timing violation
    in CI is explained by its log, which goes with the test's temporary directory."""
    lines = [report.line(), *report.violations]
    named = sorted({violation.split()[0] for violation in report.violations})
    for log in sorted(workdir.glob("*-operator-*.log"), key=lambda path: path.stat().st_mtime):
        for claim in named:
            said = [line for line in log.read_text(errors="replace").splitlines()
                    if re.search(rf"\b{re.escape(claim)}\b", line)]
            lines += [f"{log.name}, {claim}:", *said[-LOG_LINES:]] if said else []
    return "\n".join(lines)


@pytest.fixture(scope="module")
def audited_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    """A control plane of its own: these tests stop and restart its API server. Its
    Deployments make ReplicaSets and pods (`CONTROLLER_ARGS`)."""
    plane = ControlPlane.start(tmp_path_factory.mktemp("faults"), crds=[REPO / "crd.yaml"],
                               audit=True, controller_args=CONTROLLER_ARGS)
    yield plane
    plane.stop()


@pytest.fixture(scope="module")
def audited_node(tmp_path_factory: pytest.TempPathFactory
                 ) -> Iterator[tuple[ControlPlane, Node]]:
    """A cluster with a real node of its own, stopped at the end of this module (one node
    per machine: `pytest` collects tests/faults before tests/integration, whose node is
    started later). Never skipped: if the node cannot start, the test errors."""
    with cluster_with_node(tmp_path_factory.mktemp("faults-node"), audit=True) as started:
        yield started


@pytest.mark.parametrize("seed", SEEDS)
def test_invariants_hold_under_faults(audited_plane: ControlPlane, seed: int,
                                      tmp_path: Path) -> None:
    report = Scenario(audited_plane, seed, tmp_path).run()
    print(report.line())
    assert report.claims > 0
    assert not report.violations, _verdict(report, tmp_path)


def test_invariants_hold_under_faults_serving_every_namespace(
        audited_plane: ControlPlane, tmp_path: Path) -> None:
    """Workloads are then watched once for the cluster (clusterwide.py)."""
    scenario = Scenario(audited_plane, EVERY_NAMESPACE_SEED, tmp_path)
    scenario.scope = "--all-namespaces"
    report = scenario.run()
    print(report.line())
    assert report.claims > 0
    assert not report.violations, _verdict(report, tmp_path)
    logs = "".join(path.read_text() for path in tmp_path.glob("*-operator-*.log"))
    assert "Workloads are watched once for the cluster" in logs


@pytest.mark.timeout(600)  # the cluster and node start, and real pods end on their own
@pytest.mark.parametrize("seed", REAL_SEEDS)
def test_invariants_hold_under_faults_on_a_real_node(
        audited_node: tuple[ControlPlane, Node], seed: int, tmp_path: Path) -> None:
    plane, node = audited_node
    report = RealNodeScenario(plane, node, seed, tmp_path).run()
    print(report.line())
    assert report.claims > 0
    assert report.pods > 0  # real containers ran
    assert not report.violations, _verdict(report, tmp_path)
