"""`make run` on a cluster that is already configured: it says which cluster and context it
will act on and what it will change, asks from a terminal (YES=1 does not), and does nothing
when the answer is no. Run against the project's control plane, from a pseudo-terminal.
"""

from __future__ import annotations

import os
import pty
import signal
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from controlplane.cluster import ControlPlane
from tests.integration.support import REPO, Kubectl, eventually

RUNNING = "Running the operator (--namespace="
QUESTION = "Go ahead? [y/N]"


class MakeRun:
    """`make run NAMESPACE=... [more]` with stdin a terminal or not; output collected."""

    def __init__(self, plane: ControlPlane, home: Path, namespace: str, *make_args: str,
                 terminal: bool, answer: str = "") -> None:
        environ = plane.environ()  # KUBECONFIG: the control plane's, an existing config
        environ["HOME"] = str(home)  # no ~/.kube/config of this machine's
        environ["METRICS_PORT"] = "0"
        for name in ("MAKEFLAGS", "MAKELEVEL", "MFLAGS", "YES", "NAMESPACE"):
            environ.pop(name, None)
        self.master: int | None = None
        stdin: int = subprocess.DEVNULL
        if terminal:
            self.master, stdin = pty.openpty()
            os.write(self.master, answer.encode())
        self.process = subprocess.Popen(
            ["make", "--no-print-directory", "run", f"NAMESPACE={namespace}", *make_args],
            cwd=REPO, env=environ, stdin=stdin, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, start_new_session=True)
        if terminal:
            os.close(stdin)
        self.lines: list[str] = []
        threading.Thread(target=self._collect, daemon=True).start()

    def _collect(self) -> None:
        assert self.process.stdout is not None
        for line in iter(self.process.stdout.readline, b""):
            self.lines.append(line.decode(errors="replace"))

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        if self.master is not None:
            os.close(self.master)


@pytest.fixture
def make_run() -> Iterator[list[MakeRun]]:
    runs: list[MakeRun] = []
    yield runs
    for run in runs:
        run.stop()


def start(runs: list[MakeRun], plane: ControlPlane, kubectl: Kubectl, home: Path,
          *make_args: str, terminal: bool, answer: str = "") -> MakeRun:
    run = MakeRun(plane, home, kubectl.namespace, *make_args, terminal=terminal,
                  answer=answer)
    runs.append(run)
    return run


def assert_says_what_it_will_do(plane: ControlPlane, output: str, namespace: str) -> None:
    server = plane.kubectl("config", "view", "--minify", "-o",
                           "jsonpath={.clusters[0].cluster.server}")
    context = plane.kubectl("config", "current-context").strip()
    assert f"Cluster: {server}\n" in output
    assert f"Context: {context} (kubeconfig: {plane.kubeconfig})\n" in output
    assert "apply crd.yaml: create or update the CustomResourceDefinition" in output
    assert f"run the operator for the namespace {namespace} (--namespace={namespace})" in output
    assert "deletes claims" in output


def test_no_from_a_terminal_changes_nothing(control_plane: ControlPlane, kubectl: Kubectl,
                                            make_run: list[MakeRun], tmp_path: Path) -> None:
    run = start(make_run, control_plane, kubectl, tmp_path, terminal=True, answer="n\n")
    assert run.process.wait(300) != 0
    eventually(lambda: "Nothing done." in run.output, timeout=10, what="the refusal")
    assert_says_what_it_will_do(control_plane, run.output, kubectl.namespace)
    assert QUESTION in run.output
    assert "customresourcedefinition" not in run.output, "the CRD was applied"
    assert RUNNING not in run.output


@pytest.mark.parametrize(("make_args", "terminal", "answer", "asked"), [
    ((), True, "y\n", True),
    (("YES=1",), True, "", False),
    ((), False, "", False),  # not a terminal (CI, a pipe): it says what it does, asks nothing
], ids=["yes-from-a-terminal", "YES=1", "no-terminal"])
def test_it_runs_once_agreed_or_not_asked(control_plane: ControlPlane, kubectl: Kubectl,
                                          make_run: list[MakeRun], tmp_path: Path,
                                          make_args: tuple[str, ...], terminal: bool,
                                          answer: str, asked: bool) -> None:
    run = start(make_run, control_plane, kubectl, tmp_path, *make_args, terminal=terminal,
                answer=answer)
    eventually(lambda: RUNNING in run.output or run.process.poll() is not None,
               timeout=300, what="the operator started")
    assert run.process.poll() is None, run.output
    assert_says_what_it_will_do(control_plane, run.output, kubectl.namespace)
    assert (QUESTION in run.output) == asked
    assert "customresourcedefinition.apiextensions.k8s.io/ephemeralvolumeclaims" in run.output
