"""Fixtures for tests on the real control plane: one per session, a namespace per test.

`control_plane` has no node (tests set pod phases themselves: fast and deterministic);
`cluster` is a second control plane with a real node (kubelet, containerd), for tests
whose subject is what a kubelet does. Neither is ever skipped: if one cannot start,
every test that needs it errors, with the reason.
"""

from __future__ import annotations

import secrets
import subprocess
from collections.abc import Generator, Iterator
from pathlib import Path

import pytest

from controlplane.cluster import ControlPlane
from controlplane.node import Node
from tests.integration.support import (
    REPO,
    Kubectl,
    OperatorProcess,
    cluster_with_node,
    eventually,
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if Path(item.path).is_relative_to(Path(__file__).parent):
            item.add_marker(pytest.mark.integration)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """On failure, attach the control plane's and the operators' logs to the report."""
    report = yield
    if not report.failed:
        return report
    funcargs = getattr(item, "funcargs", {})
    for fixture in ("control_plane", "cluster"):
        plane = funcargs.get(fixture)
        if isinstance(plane, ControlPlane):
            report.sections.append((f"{fixture} logs", plane.log_tails()))
    operators = funcargs.get("operator") or funcargs.get("node_operator")
    if isinstance(operators, OperatorFactory):
        for process in operators.started:
            report.sections.append((f"operator log ({process.namespace})", process.log_text()))
    return report


@pytest.fixture(scope="session")
def control_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    plane = ControlPlane.start(tmp_path_factory.mktemp("controlplane"),
                               crds=[REPO / "crd.yaml"])
    yield plane
    plane.stop()


@pytest.fixture(scope="session")
def _cluster_and_node(
        tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ControlPlane, Node]]:
    with cluster_with_node(tmp_path_factory.mktemp("cluster")) as started:
        yield started


@pytest.fixture(scope="session")
def cluster(_cluster_and_node: tuple[ControlPlane, Node]) -> ControlPlane:
    """A control plane with a real node: pods really run (one node per machine)."""
    return _cluster_and_node[0]


@pytest.fixture(scope="session")
def node(_cluster_and_node: tuple[ControlPlane, Node]) -> Node:
    """The `cluster`'s node, for tests that stop and start its kubelet or containerd."""
    return _cluster_and_node[1]


@pytest.fixture
def namespace(control_plane: ControlPlane) -> Iterator[str]:
    yield from _namespace(control_plane)


@pytest.fixture
def node_namespace(cluster: ControlPlane) -> Iterator[str]:
    yield from _namespace(cluster)


def _namespace(plane: ControlPlane) -> Iterator[str]:
    name = f"test-{secrets.token_hex(4)}"
    plane.kubectl("create", "namespace", name)
    eventually(lambda: _service_account_exists(plane, name),
               timeout=30, what=f"default ServiceAccount in {name}")
    yield name
    plane.kubectl("delete", "namespace", name, "--wait=false")


def _service_account_exists(plane: ControlPlane, namespace: str) -> bool:
    result = subprocess.run([str(plane.kubectl_path), "get", "serviceaccount", "default",
                             "--namespace", namespace], capture_output=True,
                            env=plane.environ())
    return result.returncode == 0


@pytest.fixture
def kubectl(control_plane: ControlPlane, namespace: str) -> Kubectl:
    return Kubectl(control_plane, namespace)


class OperatorFactory:
    def __init__(self, plane: ControlPlane, tmp_path: Path) -> None:
        self.plane = plane
        self.tmp_path = tmp_path
        self.started: list[OperatorProcess] = []

    def __call__(self, namespace: str, scope: str | None = None,
                 **env: str) -> OperatorProcess:
        """Start the operator for `namespace` (or `scope`, e.g. --all-namespaces)."""
        logfile = self.tmp_path / f"operator-{len(self.started)}.log"
        process = OperatorProcess(self.plane, namespace, logfile, env, scope)
        self.started.append(process)
        process.wait_ready()
        return process


@pytest.fixture
def operator(control_plane: ControlPlane, tmp_path: Path) -> Iterator[OperatorFactory]:
    yield from _operators(control_plane, tmp_path)


@pytest.fixture
def node_operator(cluster: ControlPlane, tmp_path: Path) -> Iterator[OperatorFactory]:
    yield from _operators(cluster, tmp_path)


def _operators(plane: ControlPlane, tmp_path: Path) -> Iterator[OperatorFactory]:
    factory = OperatorFactory(plane, tmp_path)
    yield factory
    for process in factory.started:
        process.stop()
