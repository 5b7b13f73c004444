"""A bad environment: the operator says what is wrong, waits, and recovers by itself.

An API server that does not answer at start, a CRD that is not installed, a permission
missing from the RBAC: each must give a clear log line and retries, never a crash loop
with a traceback, and never a deletion made while the operator cannot see pods.
(Invalid environment variables stop it at once: tests/unit/test_settings.py.)

These start the operator as a process of their own, without waiting for it to be ready
(it cannot be), and hand it to the `operator` fixture, which stops it and reports its log.
"""

from __future__ import annotations

import contextlib
import json
import resource
import socket
import threading
import time
from pathlib import Path
from typing import Any

import yaml

from controlplane.cluster import ControlPlane, free_port
from evc_operator import openfiles
from tests.integration.conftest import OperatorFactory
from tests.integration.support import REPO, Kubectl, OperatorProcess, eventually

FAST = {"EXPIRY_PERIOD": "2", "GRACE_PERIOD": "2", "COUNTDOWN_INTERVAL": "1"}


def evc(name: str) -> str:
    return json.dumps({"apiVersion": "zalando.org/v1", "kind": "EphemeralVolumeClaim",
                       "metadata": {"name": name}, "spec": {"size": "1Gi"}})


def start(operator: OperatorFactory, plane: ControlPlane, namespace: str,
          **env: str) -> OperatorProcess:
    """`kopf run --namespace=NS --verbose ephemeral.py`, not waited for."""
    logfile = operator.tmp_path / f"operator-{len(operator.started)}.log"
    process = OperatorProcess(plane, namespace, logfile, {**FAST, **env})
    operator.started.append(process)
    return process


def assert_running_without_traceback(process: OperatorProcess) -> None:
    log = process.log_text()
    assert process.process.poll() is None, f"exited with {process.process.returncode}:\n{log}"
    assert "Traceback" not in log, log


def logged(process: OperatorProcess, text: str, timeout: float = 30) -> None:
    def check() -> bool:
        assert process.process.poll() is None, process.log_text()
        return text in process.log_text()

    eventually(check, timeout=timeout, what=f"{text!r} in the operator's log")


class TcpForwarder:
    """Forward a loopback port to another, byte for byte: TLS passes through untouched."""

    def __init__(self, port: int, target: int) -> None:
        self.target = target
        self.server = socket.create_server(("127.0.0.1", port))
        self.connections: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return  # closed
            upstream = socket.create_connection(("127.0.0.1", self.target))
            self.connections += [client, upstream]
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        for sock in (self.server, *self.connections):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()


def test_api_server_down_at_start_is_waited_for(control_plane: ControlPlane, kubectl: Kubectl,
                                                operator: OperatorFactory,
                                                tmp_path: Path) -> None:
    port = free_port()  # nothing listens here until the forwarder does
    config = json.loads(control_plane.kubeconfig.read_text())
    config["clusters"][0]["cluster"]["server"] = f"https://127.0.0.1:{port}"
    kubeconfig = tmp_path / "unreachable.kubeconfig"
    kubeconfig.write_text(json.dumps(config))
    kubectl("apply", "-f", "-", input=evc("waiting"))  # straight to the API server

    process = start(operator, control_plane, kubectl.namespace, KUBECONFIG=str(kubeconfig),
                    EXPIRY_PERIOD="1h")
    logged(process, f"Request attempt #4 failed; will retry: GET https://127.0.0.1:{port}/api")
    time.sleep(6)  # well into the retries: still there, still saying why
    assert_running_without_traceback(process)
    log = process.log_text()
    assert f"Connect call failed ('127.0.0.1', {port})" in log, log
    assert "/9 failed" not in log, "Kopf counts towards its default limit of 9 attempts"
    assert kubectl.get("pvc", "waiting") is None

    forwarder = TcpForwarder(port, control_plane.api_port)  # the API server comes back
    try:
        eventually(lambda: kubectl.get("pvc", "waiting"), timeout=30,
                   what="the claim served once the API server answers")
        assert_running_without_traceback(process)
    finally:
        process.stop()
        forwarder.close()


def test_missing_crd_is_reported_and_served_once_created(operator: OperatorFactory,
                                                         tmp_path: Path) -> None:
    plane = ControlPlane.start(tmp_path / "bare")  # no CRD
    try:
        process = start(operator, plane, "default", EXPIRY_PERIOD="1h")
        logged(process, "Unresolved resources cannot be served (try creating their CRDs): "
                        "Selector(group='zalando.org', version='v1', "
                        "any_name='ephemeralvolumeclaims')")
        time.sleep(3)
        assert_running_without_traceback(process)

        plane.kubectl("apply", "-f", str(REPO / "crd.yaml"))
        plane.established("-f", str(REPO / "crd.yaml"))
        kubectl = Kubectl(plane, "default")
        kubectl("apply", "-f", "-", input=evc("late"))
        eventually(lambda: kubectl.get("pvc", "late"), timeout=30,
                   what="the claim served once the CRD exists")
        assert_running_without_traceback(process)
        process.stop()
    finally:
        plane.stop()


def test_claims_served_after_the_operator_started_are_watched(
        operator: OperatorFactory, tmp_path: Path) -> None:
    """The CRD established while the operator runs, its `v1` not served: said, and
    waited for. Then served: the claims are watched, by Kopf's rescan at the CRD's change
    or, when discovery lagged that change, by the operator starting again (served.py)."""
    plane = ControlPlane.start(tmp_path / "bare")  # no CRD
    try:
        process = start(operator, plane, "default", EXPIRY_PERIOD="1h")
        logged(process, "Unresolved resources cannot be served")
        crd = yaml.safe_load((REPO / "crd.yaml").read_text())
        crd["spec"]["versions"][0]["served"] = False
        plane.kubectl("apply", "-f", "-", input=json.dumps(crd))
        logged(process, "the API server does not serve zalando.org/v1 EphemeralVolumeClaims: "
                        "they are served once it does.")
        assert "starts again" not in process.log_text()

        plane.kubectl("apply", "-f", str(REPO / "crd.yaml"))  # v1 served
        kubectl = Kubectl(plane, "default")
        kubectl("apply", "-f", "-", input=evc("late"))
        eventually(lambda: kubectl.get("pvc", "late"), timeout=45,
                   what="the claim served once its version is")
        assert process.log_text().count("Claims' status is sealed") <= 2  # one restart
        assert_running_without_traceback(process)
        process.stop()
    finally:
        plane.stop()


def cluster_role_binding(name: str, role: str, namespace: str, account: str) -> dict[str, Any]:
    return {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
            "metadata": {"name": name},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                        "name": role},
            "subjects": [{"kind": "ServiceAccount", "name": account, "namespace": namespace}]}


def test_missing_pods_permission_is_reported_deletes_nothing_and_recovers(
        control_plane: ControlPlane, kubectl: Kubectl, operator: OperatorFactory,
        tmp_path: Path) -> None:
    namespace = kubectl.namespace
    blind, sight = f"evc-no-pods-{namespace}", f"evc-pods-{namespace}"
    role = yaml.safe_load((REPO / "config/rbac/cluster_role.yaml").read_text())
    role["metadata"]["name"] = blind
    role["rules"] = [rule for rule in role["rules"] if "pods" not in rule["resources"]]
    # Serving one namespace, Kopf lists namespaces (config/rbac-namespaced grants it; the
    # role for all namespaces, which serves none by name, does not).
    role["rules"].append({"apiGroups": [""], "resources": ["namespaces"],
                          "verbs": ["list", "watch"]})
    pods_role = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
                 "metadata": {"name": sight},
                 "rules": [{"apiGroups": [""], "resources": ["pods"],
                            "verbs": ["list", "watch"]}]}
    try:
        kubectl("create", "serviceaccount", "evc-operator")
        control_plane.kubectl("apply", "-f", "-", input=json.dumps({
            "apiVersion": "v1", "kind": "List", "items": [
                role, cluster_role_binding(blind, blind, namespace, "evc-operator")]}))
        config = control_plane.service_account_kubeconfig(namespace, "evc-operator",
                                                          tmp_path / "sa.kubeconfig")
        kubectl("apply", "-f", "-", input=evc("unseen"))  # due 2 s after its creation

        process = start(operator, control_plane, namespace, KUBECONFIG=str(config))
        logged(process, f'pods is forbidden: User "system:serviceaccount:{namespace}:'
                        f'evc-operator" cannot list resource "pods" in API group "" in the '
                        f'namespace "{namespace}"')
        time.sleep(8)  # long past the claim's expiry period
        assert_running_without_traceback(process)
        assert "/9 failed" not in process.log_text()
        log = process.log_text()
        for verb in ("list", "watch"):  # one line each, naming what to apply
            assert log.count(f"Missing permission: {verb} pods in namespace {namespace}; "
                             f"apply the RBAC of config/rbac") == 1, log
        assert "Missing permission: create" not in log  # the rest is granted
        assert log.count("WARNING ] Watching pods in") == 1, log  # the retries: DEBUG
        unseen = kubectl.get("evc", "unseen")
        assert unseen is not None, "deleted while the operator could not see pods"
        assert "status" not in unseen  # nothing decided half-blind
        assert kubectl.get("pvc", "unseen") is None

        control_plane.kubectl("apply", "-f", "-", input=json.dumps({
            "apiVersion": "v1", "kind": "List", "items": [
                pods_role, cluster_role_binding(sight, sight, namespace, "evc-operator")]}))
        eventually(lambda: kubectl.get("evc", "unseen") is None, timeout=30,
                   what="the overdue claim deleted once pods are visible, without a restart")
        deleted = f"[{namespace}/unseen] Deleted: Deleting it (ExpiryPeriodElapsed)"
        assert deleted in process.log_text()
        assert_running_without_traceback(process)
    finally:
        for name in (blind, sight):
            control_plane.kubectl("delete", "clusterrolebinding,clusterrole", name,
                                  "--ignore-not-found")


def test_a_taken_metrics_port_is_one_line_and_exit_2(control_plane: ControlPlane,
                                                    operator: OperatorFactory) -> None:
    """A second operator on one machine: not a traceback per retry, forever."""
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        process = start(operator, control_plane, "default", METRICS_PORT=str(port))
        process.process.wait(timeout=60)
    log = process.log_text()
    assert process.process.returncode == 2, log
    assert "Traceback" not in log, log
    assert (f"cannot serve metrics on 127.0.0.1:{port}: Address already in use. Is another "
            f"operator running here? Set METRICS_PORT to a free port, or 0 for no metrics."
            ) in log


def test_the_crd_deleted_under_the_operator_stops_it_with_one_line(
        operator: OperatorFactory, tmp_path: Path) -> None:
    """Kopf's watch of the claims would end it with a 404 traceback: it stops first, and
    started again it waits for the CRD (test_missing_crd_is_reported_and_served_once_created)."""
    plane = ControlPlane.start(tmp_path / "plane")
    try:
        plane.kubectl("apply", "-f", str(REPO / "crd.yaml"))
        plane.established("-f", str(REPO / "crd.yaml"))
        kubectl = Kubectl(plane, "default")
        process = start(operator, plane, "default", EXPIRY_PERIOD="1h")
        kubectl("apply", "-f", "-", input=evc("before"))
        eventually(lambda: kubectl.get("pvc", "before"), timeout=30, what="served")

        plane.kubectl("delete", "-f", str(REPO / "crd.yaml"), "--wait=true")
        process.process.wait(timeout=30)
        log = process.log_text()
        assert process.process.returncode == 2, log
        assert "Traceback" not in log, log
        assert log.count("The CustomResourceDefinition ephemeralvolumeclaims.zalando.org is "
                         "being deleted, and every EphemeralVolumeClaim with it: stopping. "
                         "Apply crd.yaml again and start the operator") == 1, log
    finally:
        plane.stop()


def test_no_rbac_at_all_is_one_line_per_missing_permission(
        control_plane: ControlPlane, kubectl: Kubectl, operator: OperatorFactory,
        tmp_path: Path) -> None:
    namespace = kubectl.namespace
    kubectl("create", "serviceaccount", "evc-nobody")
    config = control_plane.service_account_kubeconfig(namespace, "evc-nobody",
                                                      tmp_path / "nobody.kubeconfig")
    process = start(operator, control_plane, namespace, KUBECONFIG=str(config))
    logged(process, "Missing permission: list customresourcedefinitions.apiextensions.k8s.io "
                    "cluster-wide; apply the RBAC of config/rbac")
    logged(process, "Forbidden: GET ")
    time.sleep(25)  # Kopf retries every 10 s at most: two rounds at least
    assert_running_without_traceback(process)
    log = process.log_text()
    told = [line for line in log.splitlines() if "] Forbidden: GET " in line]
    assert told
    assert len(told) == len({line.split("] ", 1)[1] for line in told}), told
    assert not [line for line in log.splitlines()
                if "APIForbiddenError" in line and "DEBUG" not in line], log


def _open_files(pid: int) -> tuple[str, str]:
    """A process's soft and hard limits of open files, as the kernel holds them."""
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            soft, hard = line.split()[3:5]
            return soft, hard
    raise AssertionError(f"no open-files limit for process {pid}")


def test_a_low_soft_limit_of_open_files_is_raised_to_the_hard_one(
        control_plane: ControlPlane, operator: OperatorFactory, namespace: str) -> None:
    """Nine watches a namespace, one connection each: under a soft limit of 1,024 (many
    shells' and services' default) every new one failed past about the 110th namespace.
    The operator raises its own soft limit to the hard one at start, as Go programs do."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    low = 1024 if hard == resource.RLIM_INFINITY else min(1024, hard // 2)
    resource.setrlimit(resource.RLIMIT_NOFILE, (low, hard))
    try:  # the operator inherits the low soft limit from this process
        process = start(operator, control_plane, namespace)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    wanted = "unlimited" if hard == resource.RLIM_INFINITY else str(hard)
    raised = str(openfiles.NR_OPEN) if hard == resource.RLIM_INFINITY else str(hard)
    process.wait_ready()  # raised in the start-up handler, before any watch
    assert _open_files(process.process.pid) == (raised, wanted)
    assert f"Open files: soft limit raised from {low} to {raised}" in process.log_text()
    assert_running_without_traceback(process)
