"""Every kind of credentials, on the real control plane, through the seed's command.

`kopf run --namespace=NS --verbose ephemeral.py` with an exec-plugin kubeconfig, with a
tokenFile kubeconfig whose token is rotated and the old one revoked, and in a "Pod" (the
ServiceAccount directory mounted where a Pod has it, the API server from
KUBERNETES_SERVICE_HOST/PORT): each serves a claim from start to deletion, on both of the
operator's connections (Kopf's and its own). A plugin that is missing or fails stops it
at start with one line.
"""

from __future__ import annotations

import base64
import json
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from controlplane.cluster import ControlPlane
from tests.integration.conftest import OperatorFactory
from tests.integration.support import KOPF, REPO, Kubectl, OperatorProcess, eventually

FAST = {"EXPIRY_PERIOD": "2", "GRACE_PERIOD": "2", "COUNTDOWN_INTERVAL": "1"}
ACCOUNT = "evc-operator"

# An exec credential plugin: the first call hands out a token the API server refuses,
# valid for an hour by its expirationTimestamp (only a refresh after the 401 replaces it);
# every later call the real token, valid for a few seconds. It records each call and what
# it was given.
PLUGIN = """#!{python}
import datetime, json, os, pathlib, sys
state = pathlib.Path({state!r})
calls = state / "calls"
calls.write_text(calls.read_text() + "x" if calls.exists() else "x")
(state / "exec-info").write_text(os.environ["KUBERNETES_EXEC_INFO"])
(state / "args").write_text(json.dumps([sys.argv[1:], os.environ.get("PLUGIN_ENV")]))
first = len(calls.read_text()) == 1
token = "wrong" if first else (state / "token").read_text().strip()
lifetime = 3600 if first else {lifetime}  # the wrong one is replaced only after its 401
expiry = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=lifetime)
print(json.dumps({{"apiVersion": "client.authentication.k8s.io/v1", "kind": "ExecCredential",
                  "status": {{"token": token,
                             "expirationTimestamp": expiry.strftime("%Y-%m-%dT%H:%M:%SZ")}}}}))
"""


def evc(name: str) -> str:
    return json.dumps({"apiVersion": "zalando.org/v1", "kind": "EphemeralVolumeClaim",
                       "metadata": {"name": name}, "spec": {"size": "1Gi"}})


def kubeconfig(plane: ControlPlane, path: Path, user: dict[str, Any]) -> Path:
    ca = base64.b64encode(plane.ca_file.read_bytes()).decode()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "laptop",
        "clusters": [{"name": "local", "cluster": {
            "server": plane.server, "certificate-authority-data": ca}}],
        "users": [{"name": "me", "user": user}],
        "contexts": [{"name": "laptop", "context": {"cluster": "local", "user": "me"}}]}))
    return path


@pytest.fixture
def account(control_plane: ControlPlane, kubectl: Kubectl) -> Iterator[str]:
    """A ServiceAccount with the operator's ClusterRole: its tokens are real ones."""
    binding = f"evc-credentials-{kubectl.namespace}"
    kubectl("create", "serviceaccount", ACCOUNT)
    control_plane.kubectl("create", "clusterrolebinding", binding,
                          "--clusterrole=evc-operator",
                          f"--serviceaccount={kubectl.namespace}:{ACCOUNT}")
    # Serving one namespace, Kopf lists namespaces: the namespaced install's discovery.
    control_plane.kubectl("create", "clusterrolebinding", f"{binding}-discovery",
                          "--clusterrole=evc-operator-discovery",
                          f"--serviceaccount={kubectl.namespace}:{ACCOUNT}")
    yield ACCOUNT
    control_plane.kubectl("delete", "clusterrolebinding", binding, f"{binding}-discovery",
                          "--ignore-not-found")


@pytest.fixture(autouse=True)
def operator_role(control_plane: ControlPlane) -> None:
    control_plane.kubectl("apply", "-f", str(REPO / "config/rbac/cluster_role.yaml"))
    # Its ClusterRole only: the file's binding is for the installed operator's account.
    [discovery] = [document for document in yaml.safe_load_all(
        (REPO / "config/rbac-namespaced/discovery_cluster_role.yaml").read_text())
        if document["kind"] == "ClusterRole"]
    control_plane.kubectl("apply", "-f", "-", input=json.dumps(discovery))


def token(kubectl: Kubectl, *, bound_to: str | None = None, duration: str = "1h") -> str:
    bound = ["--bound-object-kind=Secret", f"--bound-object-name={bound_to}"] if bound_to else []
    return kubectl("create", "token", ACCOUNT, f"--duration={duration}", *bound).strip()


def served_from_start_to_deletion(kubectl: Kubectl, process: OperatorProcess,
                                  name: str) -> None:
    """The claim gets its PVC, and once unused past its expiry the operator deletes it."""
    kubectl("apply", "-f", "-", input=evc(name))
    eventually(lambda: kubectl.get("pvc", name), timeout=30, what=f"PVC {name}")
    eventually(lambda: kubectl.get("evc", name) is None, timeout=60,
               what=f"{name} deleted by the operator once expired")
    log = process.log_text()
    assert f"[{kubectl.namespace}/{name}] Deleted:" in log, log
    assert process.process.poll() is None, log
    assert "Traceback" not in log, log
    assert "system:anonymous" not in log, log


def test_an_exec_plugin_is_called_again_on_401_and_on_expiry(
        control_plane: ControlPlane, kubectl: Kubectl, account: str,
        operator: OperatorFactory, tmp_path: Path) -> None:
    state = tmp_path / "plugin"
    state.mkdir()
    (state / "token").write_text(token(kubectl))
    plugin = tmp_path / "bin" / "evc-test-credentials"
    plugin.parent.mkdir()
    plugin.write_text(PLUGIN.format(python=sys.executable, state=str(state), lifetime=3))
    plugin.chmod(0o755)
    config = kubeconfig(control_plane, tmp_path / "kube" / "config", {"exec": {
        "apiVersion": "client.authentication.k8s.io/v1", "command": "../bin/" + plugin.name,
        "args": ["--cluster", "local"], "env": [{"name": "PLUGIN_ENV", "value": "given"}],
        "provideClusterInfo": True, "interactiveMode": "Never"}})

    process = operator(kubectl.namespace, KUBECONFIG=str(config), **FAST)
    served_from_start_to_deletion(kubectl, process, "via-exec")
    calls = len((state / "calls").read_text())
    assert calls >= 2, "the refused token, then the real one"
    # Each connection's session refreshed after the 401 and retried: Kopf never saw it.
    assert "Re-authentication" not in process.log_text()
    time.sleep(4)  # the real token's expirationTimestamp passes
    served_from_start_to_deletion(kubectl, process, "via-exec-later")
    later = len((state / "calls").read_text())
    assert later > calls, "the plugin is called again once its credential expired"
    info = json.loads((state / "exec-info").read_text())
    assert info["apiVersion"] == "client.authentication.k8s.io/v1"
    assert info["spec"]["interactive"] is False
    assert info["spec"]["cluster"]["server"] == control_plane.server
    assert base64.b64decode(info["spec"]["cluster"]["certificate-authority-data"]) == (
        control_plane.ca_file.read_bytes())
    assert json.loads((state / "args").read_text()) == [["--cluster", "local"], "given"]


def test_a_token_file_is_read_again_when_it_rotates(
        control_plane: ControlPlane, kubectl: Kubectl, account: str,
        operator: OperatorFactory, tmp_path: Path) -> None:
    """The first token is revoked once the file holds a new one: both connections get a
    401 and must read the file again."""
    for secret in ("first", "second"):
        kubectl("create", "secret", "generic", secret)
    token_file = tmp_path / "token"
    first = token(kubectl, bound_to="first")
    token_file.write_text(first)
    config = kubeconfig(control_plane, tmp_path / "config", {"tokenFile": str(token_file)})

    process = operator(kubectl.namespace, KUBECONFIG=str(config), **FAST)
    served_from_start_to_deletion(kubectl, process, "before-rotation")
    token_file.write_text(token(kubectl, bound_to="second"))
    kubectl("delete", "secret", "first")  # the first token is no longer valid

    def revoked() -> bool:
        result = control_plane.kubectl_result("--token", first, "get", "evc",
                                              "--namespace", kubectl.namespace)
        return result.returncode != 0 and "Unauthorized" in result.stderr

    eventually(revoked, timeout=30, what="the first token refused")
    served_from_start_to_deletion(kubectl, process, "after-rotation")


class InAPod(OperatorProcess):
    """The seed's command in a mount namespace of its own, where `secrets` is mounted at
    the ServiceAccount's path in a Pod."""

    def __init__(self, plane: ControlPlane, namespace: str, logfile: Path, secrets: Path,
                 env: dict[str, str]) -> None:
        self.namespace, self.logfile = namespace, logfile
        target = "/var/run/secrets/kubernetes.io/serviceaccount"
        script = (f"mount -t tmpfs tmpfs /var/run && mkdir -p {target} && "
                  f"cp {shlex.quote(str(secrets))}/* {target}/ && "
                  f"exec {shlex.quote(str(KOPF))} run --namespace={namespace} --verbose "
                  "ephemeral.py")
        unshare = ["unshare", "--mount"] if os.geteuid() == 0 else [
            "unshare", "--mount", "--map-root-user"]
        with logfile.open("ab") as log:
            self.process = subprocess.Popen(
                [*unshare, "sh", "-c", script], cwd=REPO, stdout=log,
                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env={**plane.environ(), "METRICS_PORT": "0", **env})


def test_in_a_pod_the_api_server_is_found_without_dns(
        control_plane: ControlPlane, kubectl: Kubectl, account: str, tmp_path: Path) -> None:
    """KUBERNETES_SERVICE_HOST/PORT and the ServiceAccount directory, mounted where a Pod
    has it (a mount namespace of its own); the kubeconfig it also sees is never read."""
    secrets = tmp_path / "serviceaccount"
    secrets.mkdir()
    (secrets / "token").write_text(token(kubectl))
    (secrets / "ca.crt").write_bytes(control_plane.ca_file.read_bytes())
    (secrets / "namespace").write_text(kubectl.namespace)
    decoy = kubeconfig(control_plane, tmp_path / "decoy", {"token": "not-this-one"})
    process = InAPod(control_plane, kubectl.namespace, tmp_path / "operator.log", secrets, {
        **FAST, "KUBECONFIG": str(decoy), "KUBERNETES_SERVICE_HOST": "127.0.0.1",
        "KUBERNETES_SERVICE_PORT": str(control_plane.api_port)})
    try:
        process.wait_ready()
        served_from_start_to_deletion(kubectl, process, "in-a-pod")
        assert "kubernetes.default.svc" not in process.log_text()
    finally:
        process.stop()


@pytest.mark.parametrize(("command", "expected"), [
    ("evc-no-such-plugin",
     "its exec plugin 'evc-no-such-plugin' was not found: Install it with: make plugin"),
    ("failing", "failed with exit code 3: your session expired; run login again"),
])
def test_a_plugin_that_is_missing_or_fails_stops_the_operator_with_one_line(
        control_plane: ControlPlane, kubectl: Kubectl, tmp_path: Path, command: str,
        expected: str) -> None:
    failing = tmp_path / "failing"
    failing.write_text("#!/bin/sh\necho 'your session expired; run login again' >&2\n"
                       "exit 3\n")
    failing.chmod(0o755)
    config = kubeconfig(control_plane, tmp_path / "config", {"exec": {
        "apiVersion": "client.authentication.k8s.io/v1beta1",
        "command": str(failing) if command == "failing" else command,
        "installHint": "Install it with:\n  make plugin"}})
    process = OperatorProcess(control_plane, kubectl.namespace, tmp_path / "operator.log",
                              {"KUBECONFIG": str(config)})
    try:
        returncode = process.process.wait(timeout=60)
    finally:
        process.stop()
    log = process.log_text()
    assert returncode != 0, log
    lines = [line for line in log.splitlines() if "Cannot use" in line]
    assert len(lines) == 1, log
    assert f"the kubeconfig {config}, context 'laptop', user 'me'" in lines[0], log
    assert expected in lines[0], log
    assert "Traceback" not in log, log
    assert "Forbidden" not in log, log
