"""The local control plane is real Kubernetes: versions, TLS, RBAC, controllers."""

from __future__ import annotations

import dataclasses
import json
import os
import ssl
import stat
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from controlplane.binaries import HELM, KUBERNETES, ensure_binaries
from controlplane.cluster import ControlPlane, ControlPlaneError
from controlplane.pin import STAGING, _published_gomod
from tests.integration.support import REPO, Kubectl, eventually


def test_server_and_kubectl_report_the_pinned_version(control_plane: ControlPlane) -> None:
    versions = json.loads(control_plane.kubectl("version", "-o", "json"))
    assert versions["serverVersion"]["gitVersion"] == KUBERNETES.version()
    assert versions["clientVersion"]["gitVersion"] == KUBERNETES.version()


def helm(plane: ControlPlane, home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The built helm as the admin of `plane`, its config and cache kept under `home`."""
    env = {key: value for key, value in os.environ.items()
           if key != "KUBECONFIG" and not key.startswith("HELM_")}
    env.update(HELM_CACHE_HOME=str(home / "cache"), HELM_CONFIG_HOME=str(home / "config"),
               HELM_DATA_HOME=str(home / "data"))
    return subprocess.run([str(ensure_binaries().helm), "--kubeconfig", str(plane.kubeconfig),
                           *args], capture_output=True, text=True, env=env, cwd=home)


def test_helm_reports_the_pinned_version_and_reaches_the_control_plane(
        control_plane: ControlPlane, tmp_path: Path) -> None:
    version = helm(control_plane, tmp_path, "version", "--template", "{{.Version}}")
    assert version.returncode == 0, version.stderr
    assert version.stdout == HELM.version()
    listing = helm(control_plane, tmp_path, "list", "--all-namespaces")
    assert listing.returncode == 0, listing.stderr


def test_helm_installs_and_uninstalls_a_chart(control_plane: ControlPlane, kubectl: Kubectl,
                                              tmp_path: Path) -> None:
    chart = tmp_path / "chart"
    (chart / "templates").mkdir(parents=True)
    (chart / "Chart.yaml").write_text("apiVersion: v2\nname: probe\nversion: 0.1.0\n")
    (chart / "values.yaml").write_text("greeting: hello\n")
    (chart / "templates" / "configmap.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}\n"
        "data:\n  greeting: {{ .Values.greeting | quote }}\n")
    lint = helm(control_plane, tmp_path, "lint", str(chart))
    assert lint.returncode == 0, lint.stdout + lint.stderr
    namespace = ("--namespace", kubectl.namespace)
    install = helm(control_plane, tmp_path, "install", "probe", str(chart), *namespace,
                   "--set", "greeting=hi")
    assert install.returncode == 0, install.stderr
    configmap = kubectl.get("configmap", "probe")
    assert configmap is not None
    assert configmap["data"] == {"greeting": "hi"}
    releases = json.loads(helm(control_plane, tmp_path, "list", *namespace, "-o", "json").stdout)
    assert [(r["name"], r["status"]) for r in releases] == [("probe", "deployed")]
    uninstall = helm(control_plane, tmp_path, "uninstall", "probe", *namespace)
    assert uninstall.returncode == 0, uninstall.stderr
    assert kubectl.get("configmap", "probe") is None


def test_wrapper_replaces_every_staging_module_of_the_pinned_release() -> None:
    gomod = (KUBERNETES.wrapper / "go.mod").read_text()
    staging_version = "v0." + KUBERNETES.version().removeprefix("v1.")
    published = STAGING.findall(_published_gomod(KUBERNETES.module, KUBERNETES.version()))
    assert len(published) > 25
    for module in published:
        assert f"{module} => {module} {staging_version}" in gomod


def test_tls_is_verified_with_the_kubeconfig_ca(control_plane: ControlPlane) -> None:
    context = ssl.create_default_context(cafile=str(control_plane.ca_file))
    with urllib.request.urlopen(f"{control_plane.server}/readyz", context=context) as response:
        assert response.read() == b"ok"


def test_rbac_denies_anonymous_requests(control_plane: ControlPlane) -> None:
    context = ssl.create_default_context(cafile=str(control_plane.ca_file))
    with pytest.raises(urllib.error.HTTPError) as error:
        urllib.request.urlopen(f"{control_plane.server}/api/v1/secrets", context=context)
    assert error.value.code == 403


def test_pods_are_admitted_and_stay_pending_without_a_kubelet(kubectl: Kubectl) -> None:
    kubectl("run", "sleeper", "--image=busybox", "--restart=Never", "--", "sleep", "1")
    pod = kubectl.get("pod", "sleeper")
    assert pod is not None
    assert pod["status"]["phase"] == "Pending"
    assert pod["spec"]["serviceAccountName"] == "default"


def test_pvc_protection_keeps_a_claim_while_a_pod_references_it(kubectl: Kubectl) -> None:
    kubectl("apply", "-f", "-", input=json.dumps({
        "apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "data"},
        "spec": {"accessModes": ["ReadWriteOnce"],
                 "resources": {"requests": {"storage": "1Mi"}}}}))
    kubectl("apply", "-f", "-", input=json.dumps({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "user"},
        # Unscheduled pods do not hold a claim; with no scheduler, bind the pod by hand.
        "spec": {"nodeName": "node-1", "containers": [{"name": "c", "image": "busybox"}],
                 "volumes": [{"name": "v", "persistentVolumeClaim": {"claimName": "data"}}]}}))
    kubectl("delete", "pvc", "data", "--wait=false")
    pvc = kubectl.get("pvc", "data")
    assert pvc is not None
    assert "kubernetes.io/pvc-protection" in pvc["metadata"]["finalizers"]
    assert pvc["metadata"].get("deletionTimestamp")
    kubectl("delete", "pod", "user", "--grace-period=0", "--force")
    eventually(lambda: kubectl.get("pvc", "data") is None, what="PVC removed after its pod")


def test_namespace_controller_finalizes_deleted_namespaces(control_plane: ControlPlane) -> None:
    control_plane.kubectl("create", "namespace", "doomed")
    control_plane.kubectl("create", "configmap", "x", "--namespace", "doomed")
    control_plane.kubectl("delete", "namespace", "doomed", "--wait=false")
    eventually(lambda: "doomed" not in control_plane.kubectl("get", "namespaces", "-o", "name"),
               what="namespace deletion")


def test_a_second_control_plane_runs_beside_the_first(control_plane: ControlPlane,
                                                     tmp_path: Path) -> None:
    second = ControlPlane.start(tmp_path / "second")
    try:
        assert second.api_port != control_plane.api_port
        assert "default" in second.kubectl("get", "serviceaccounts", "-o", "name")
    finally:
        second.stop()
    assert not second.is_running()


def test_start_fails_loudly_when_the_apiserver_cannot_start(tmp_path: Path) -> None:
    broken = tmp_path / "kube-apiserver"
    broken.write_text("#!/bin/sh\necho 'simulated failure: cannot bind' >&2\nexit 1\n")
    broken.chmod(broken.stat().st_mode | stat.S_IXUSR)
    binaries = dataclasses.replace(ensure_binaries(), kube_apiserver=broken)
    with pytest.raises(ControlPlaneError, match="kube-apiserver exited") as error:
        ControlPlane.start(tmp_path / "plane", binaries=binaries, timeout=30)
    assert "simulated failure: cannot bind" in str(error.value)
    # Nothing is left running: etcd was stopped with the failed start.
    leftovers = subprocess.run(["pgrep", "-f", str(tmp_path / "plane" / "etcd")],
                               capture_output=True)
    assert leftovers.returncode == 1


def test_cluster_commands_start_in_background_and_clean_up(tmp_path: Path) -> None:
    """What `make cluster NODE=0` / `make cluster-down` run. (With a node, `make cluster`
    cannot run beside the test session's node: one per machine.)"""
    state, link = tmp_path / "cluster", tmp_path / "bin" / "kubectl"
    up = subprocess.run([sys.executable, "-m", "controlplane", "up", "--dir", str(state),
                         "--kubectl-link", str(link), "--no-node"],
                        capture_output=True, text=True, cwd=REPO)
    assert up.returncode == 0, up.stderr
    assert up.stdout.strip() == f"export KUBECONFIG={state / 'kubeconfig'}"
    plane = ControlPlane.load(state)
    assert plane is not None
    assert plane.is_running()  # it outlived the command that started it
    nodes = subprocess.run([str(link), "--kubeconfig", str(state / "kubeconfig"),
                            "get", "serviceaccount", "default"], capture_output=True, text=True)
    assert nodes.returncode == 0, nodes.stderr

    down = subprocess.run([sys.executable, "-m", "controlplane", "down", "--dir", str(state)],
                          capture_output=True, text=True, cwd=REPO)
    assert down.returncode == 0, down.stderr
    assert not plane.is_running()
    assert not state.exists()
