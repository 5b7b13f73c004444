"""Helpers for tests on the real control plane: kubectl, the operator process, polling."""

from __future__ import annotations

import contextlib
import glob
import json
import signal
import subprocess
import sys
import time
import urllib.request
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from controlplane.cluster import ControlPlane
from controlplane.node import NODE_NAME, Node

REPO = Path(__file__).resolve().parents[2]
KOPF = Path(sys.executable).parent / "kopf"
T = TypeVar("T")


@contextlib.contextmanager
def cluster_with_node(workdir: Path, *, audit: bool = False
                      ) -> Iterator[tuple[ControlPlane, Node]]:
    """A control plane and its real node (one per machine), both stopped at the end."""
    plane = ControlPlane.start(workdir, crds=[REPO / "crd.yaml"], audit=audit,
                               for_node=NODE_NAME)
    try:
        node = Node.start(plane)
    except BaseException:
        plane.stop()
        raise
    try:
        yield plane, node
    finally:
        node.stop()
        plane.stop()


class Kubectl:
    """kubectl as the admin, in one namespace by default."""

    def __init__(self, plane: ControlPlane, namespace: str) -> None:
        self.plane = plane
        self.namespace = namespace

    def __call__(self, *args: str, input: str | None = None, namespaced: bool = True) -> str:
        extra = ("--namespace", self.namespace) if namespaced else ()
        return self.plane.kubectl(*extra, *args, input=input)

    def run(self, *args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
        """Run without raising, for commands that are expected to fail."""
        assert self.plane.kubectl_path is not None
        return subprocess.run([str(self.plane.kubectl_path), "--namespace", self.namespace,
                               *args], input=input, text=True, capture_output=True,
                              env=self.plane.environ(), cwd=REPO)

    def get(self, kind: str, name: str) -> dict[str, Any] | None:
        result = self.run("get", kind, name, "-o", "json")
        if result.returncode != 0:
            if "NotFound" in result.stderr:
                return None
            raise AssertionError(result.stderr)
        found: dict[str, Any] = json.loads(result.stdout)
        return found

    def events(self, name: str) -> list[dict[str, Any]]:
        """Events about the object with this name, oldest first."""
        listing = json.loads(self("get", "events", "-o", "json",
                                  "--field-selector", f"involvedObject.name={name}"))
        events: list[dict[str, Any]] = listing["items"]
        return sorted(events, key=lambda e: e.get("lastTimestamp") or e.get("eventTime") or "")


class OperatorProcess:
    """The operator as users run it: `kopf run --namespace=NS --verbose ephemeral.py`."""

    def __init__(self, plane: ControlPlane, namespace: str, logfile: Path,
                 env: dict[str, str], scope: str | None = None) -> None:
        self.namespace = namespace
        self.logfile = logfile
        self.environ = plane.environ()
        self.environ["METRICS_PORT"] = "0"  # several operators in one session: no fixed port
        self.environ["PYTHONFAULTHANDLER"] = "1"  # SIGABRT: every thread's stack to the log
        self.environ.update(env)
        self.command = [str(KOPF), "run", scope or f"--namespace={namespace}", "--verbose",
                        "ephemeral.py"]
        self.process = self._spawn()

    def _spawn(self) -> subprocess.Popen[bytes]:
        with self.logfile.open("ab") as log:
            return subprocess.Popen(self.command, cwd=REPO, env=self.environ, stdout=log,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    def log_text(self) -> str:
        return self.logfile.read_text(errors="replace") if self.logfile.exists() else ""

    def wait_ready(self, timeout: float = 60) -> None:
        """Ready once Kopf has started watching; fail early if the process died.

        An operator that does not start in time is aborted with SIGABRT: Python's
        faulthandler then writes where each of its threads was to the log, which the
        failure shows. One that had not even reached Kopf's first line ("Starting Kopf")
        was stuck before any of the operator's own work (interpreter, imports, Kopf's
        host lookup): that is the machine, not the subject of any test here, so it is
        started once more, with a warning that carries the stacks."""
        try:
            self._wait_started(timeout)
        except _Stuck as stuck:
            if stuck.reached_kopf:
                raise AssertionError(str(stuck)) from None
            warnings.warn(f"operator start-up retried: {stuck}", stacklevel=2)
            self.process = self._spawn()
            try:
                self._wait_started(timeout)
            except _Stuck as again:
                raise AssertionError(str(again)) from None

    def _wait_started(self, timeout: float) -> None:
        def started() -> bool:
            if self.process.poll() is not None:
                raise AssertionError(f"operator exited with {self.process.returncode}:\n"
                                     + self.log_text())
            return "Starting the watch-stream for ephemeralvolumeclaims" in self.log_text()

        begun = len(self.log_text())
        try:
            eventually(started, timeout=timeout, what="operator start-up")
        except AssertionError as error:
            if self.process.poll() is not None:
                raise
            self.process.send_signal(signal.SIGABRT)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(10)
            text = self.log_text()[begun:]
            raise _Stuck(f"{error}\nthe operator, aborted (where it was is at the end):\n"
                         f"{text}", reached_kopf="Starting Kopf" in text) from None

    def wait_view_complete(self, port: int, timeout: float = 60) -> None:
        """Ready as a readiness probe sees it: /readyz on METRICS_PORT `port` answers 200
        once every claim is known and the pods of every namespace with claims are listed.
        Until then a pod created and deleted leaves nothing the operator could see."""
        def complete() -> bool:
            if self.process.poll() is not None:
                raise AssertionError(f"operator exited with {self.process.returncode}:\n"
                                     + self.log_text())
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz",
                                            timeout=2) as answer:
                    return bool(answer.status == 200)
            except OSError:  # not listening yet, or 503 (HTTPError is an OSError)
                return False

        eventually(complete, timeout=timeout, interval=0.1, what="the operator's /readyz")

    def stop(self, sig: signal.Signals = signal.SIGTERM, timeout: float = 30) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


class _Stuck(Exception):
    """The operator did not start in time (and was aborted to show where it was)."""

    def __init__(self, message: str, *, reached_kopf: bool) -> None:
        super().__init__(message)
        self.reached_kopf = reached_kopf


def eventually(check: Callable[[], T], *, timeout: float = 30, interval: float = 0.2,
                  what: str = "condition") -> T:
    """Poll until `check` returns something truthy; fail with the last value seen."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}; "
                                 f"last value: {value!r}")
        time.sleep(interval)


def refuse_status_writes(plane: ControlPlane, namespace: str) -> str:
    """Refuse every update of an EVC's status in `namespace`; returns the binding's name
    (deleting it lifts the refusal)."""
    name = f"refuse-evc-status-{namespace}"
    plane.kubectl("apply", "-f", "-", input=json.dumps({
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": name},
        "spec": {"failurePolicy": "Fail", "matchConstraints": {"resourceRules": [{
            "apiGroups": ["zalando.org"], "apiVersions": ["*"], "operations": ["UPDATE"],
            "resources": ["ephemeralvolumeclaims/status"]}]},
            "validations": [{"expression": "false", "message": "status writes refused"}]}}))
    plane.kubectl("apply", "-f", "-", input=json.dumps({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicyBinding", "metadata": {"name": name},
        "spec": {"policyName": name, "validationActions": ["Deny"], "matchResources": {
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}}}}}))
    return name


def allow_status_writes(plane: ControlPlane, name: str) -> None:
    """Lift what `refuse_status_writes` put in place."""
    plane.kubectl("delete", "validatingadmissionpolicybinding", name)
    plane.kubectl("delete", "validatingadmissionpolicy", name)


def faked(offset: str) -> dict[str, str]:
    """The environment that runs a process with its wall clock `offset` (e.g. "+30s").
    The monotonic clock is left alone: asyncio's timers keep their true pace."""
    found = sorted(glob.glob("/usr/lib/*/faketime/libfaketime.so.1"))
    assert found, "libfaketime is missing: `make faketime` installs it"
    return {"LD_PRELOAD": found[0], "FAKETIME": offset, "FAKETIME_DONT_FAKE_MONOTONIC": "1"}
