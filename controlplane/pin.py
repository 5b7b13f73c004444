"""Regenerate a wrapper module's go.mod for a new pinned version.

The published go.mod of k8s.io/kubernetes requires its staging modules
(k8s.io/api, k8s.io/client-go, ...) at v0.0.0 and replaces them with local
folders; a consumer must replace each with the published v0.M.P instead. The
list is read from that version's own go.mod, so it follows the release.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

from controlplane.binaries import (
    CONTAINERD,
    ETCD,
    HELM,
    KUBERNETES,
    PROMETHEUS,
    Component,
    go_environment,
)

STAGING = re.compile(r"^\s*(k8s\.io/[\w.-]+)\s+=>\s+\./staging/src/", re.M)


def _published_gomod(module: str, version: str) -> str:
    result = subprocess.run(["go", "mod", "download", "-json", f"{module}@{version}"],
                            capture_output=True, text=True, env=go_environment(), check=True)
    return Path(json.loads(result.stdout)["GoMod"]).read_text()


def kubernetes_gomod(version: str) -> str:
    staging = STAGING.findall(_published_gomod(KUBERNETES.module, version))
    if not staging:
        raise RuntimeError(f"no staging replacements found in k8s.io/kubernetes@{version}")
    staging_version = "v0." + version.removeprefix("v1.")
    tools = "\n".join(f"\t{package}" for package in KUBERNETES.packages)
    replaces = "\n".join(f"\t{name} => {name} {staging_version}" for name in staging)
    return (
        "// Wrapper module: builds kube-apiserver, kube-controller-manager, kube-proxy,\n"
        "// kube-scheduler, kubelet and kubectl from k8s.io/kubernetes for the project's\n"
        "// local cluster.\n"
        f"// Regenerate with: python -m controlplane pin kubernetes {version}\n"
        "module evc-operator/controlplane/kubernetes\n\n"
        "go 1.26.0\n\n"
        "godebug default=go1.26\n\n"
        f"tool (\n{tools}\n)\n\n"
        f"require {KUBERNETES.module} {version}\n\n"
        f"replace (\n{replaces}\n)\n"
    )


def etcd_gomod(version: str) -> str:
    return (
        "// Wrapper module: builds etcd for the project's local control plane. It is kept\n"
        "// apart from the Kubernetes wrapper so etcd's dependency versions (grpc, otel)\n"
        "// never move the versions Kubernetes is built with.\n"
        f"// Regenerate with: python -m controlplane pin etcd {version}\n"
        "module evc-operator/controlplane/etcd\n\n"
        "go 1.26.0\n\n"
        f"tool {ETCD.packages[0]}\n\n"
        f"require {ETCD.module} {version}\n"
    )


def helm_gomod(version: str) -> str:
    major = version.split(".")[0]
    if not HELM.module.endswith(f"/{major}"):
        raise ValueError(f"{version} is not a version of {HELM.module}: change HELM in "
                         f"controlplane/binaries.py to the {major} module first")
    return (
        "// Wrapper module: builds helm. It is kept apart from the Kubernetes wrapper so\n"
        "// Helm's k8s.io/* library versions never move the versions Kubernetes is built\n"
        "// with, nor Kubernetes' move Helm's.\n"
        f"// Regenerate with: python -m controlplane pin helm {version}\n"
        "module evc-operator/controlplane/helm\n\n"
        "go 1.26.0\n\n"
        f"tool {HELM.packages[0]}\n\n"
        f"require {HELM.module} {version}\n"
    )


def containerd_gomod(version: str) -> str:
    tools = "\n".join(f"\t{package}" for package in CONTAINERD.packages)
    return (
        "// Wrapper module: builds containerd and its runc shim for the project's local node.\n"
        "// It is kept apart from the Kubernetes wrapper so containerd's dependency versions\n"
        "// never move the versions Kubernetes is built with.\n"
        f"// Regenerate with: python -m controlplane pin containerd {version}\n"
        "module evc-operator/controlplane/containerd\n\n"
        "go 1.26.0\n\n"
        f"tool (\n{tools}\n)\n\n"
        f"require {CONTAINERD.module} {version}\n"
    )


def prometheus_gomod(version: str) -> str:
    tools = "\n".join(f"\t{package}" for package in sorted(PROMETHEUS.packages))  # as tidy
    return (
        "// Wrapper module: builds promtool and prometheus, for the chart's alerting rules\n"
        "// and the dashboard's picture. Kept apart from the other wrappers so Prometheus'\n"
        "// dependency versions never move theirs. Module v0.316.0 is Prometheus 3.16.0.\n"
        f"// Regenerate with: python -m controlplane pin prometheus {version}\n"
        "module evc-operator/controlplane/prometheus\n\n"
        "go 1.26.7\n\n"
        f"tool (\n{tools}\n)\n\n"
        f"require {PROMETHEUS.module} {version}\n"
    )


GOMODS = {KUBERNETES.name: kubernetes_gomod, ETCD.name: etcd_gomod, HELM.name: helm_gomod,
          CONTAINERD.name: containerd_gomod, PROMETHEUS.name: prometheus_gomod}


def pin(component: Component, version: str) -> None:
    text = GOMODS[component.name](version)
    (component.wrapper / "go.mod").write_text(text)
    (component.wrapper / "go.sum").unlink(missing_ok=True)
    subprocess.run(["go", "mod", "tidy"], cwd=component.wrapper, env=go_environment(),
                   check=True)
