"""Kustomize overlays of config/, built with the project's kubectl, and what a Deployment's
container runs once Kubernetes has resolved it (downward API, $(VAR) in args)."""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from controlplane.binaries import KUBERNETES, build

REPO = Path(__file__).resolve().parents[1]
Manifest = dict[str, Any]
VARIABLE = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")


def kubectl() -> Path:
    """The project's kubectl (built once, cached)."""
    return build(KUBERNETES) / "kubectl"


def overlay(base: str, directory: Path, **fields: object) -> list[Manifest]:
    """`kubectl kustomize` of a new overlay of config/<base> in `directory` with `fields`
    (e.g. namespace="team-a"), as a user would write it."""
    directory.mkdir(parents=True, exist_ok=True)
    kustomization = {"apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
                     "resources": [os.path.relpath(REPO / "config" / base, directory)],
                     **fields}
    (directory / "kustomization.yaml").write_text(yaml.safe_dump(kustomization))
    result = subprocess.run([str(kubectl()), "kustomize", str(directory)],
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def expand(text: str, variables: Mapping[str, str]) -> str:
    """Kubernetes' expansion of command and args: $(VAR) becomes the container's variable
    VAR when it is defined (else stays as written), $$ becomes $."""
    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        return variables.get(match.group(1), match.group(0))
    return VARIABLE.sub(replace, text)


def container_environment(deployment: Manifest, pod_name: str) -> dict[str, str]:
    """The operator container's environment as the kubelet sets it: values, and the
    downward API's metadata.name and metadata.namespace."""
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    fields = {"metadata.name": pod_name,
              "metadata.namespace": deployment["metadata"].get("namespace", "default")}
    environment: dict[str, str] = {}
    for item in container.get("env", []):
        if "value" in item:
            environment[item["name"]] = expand(item["value"], environment)
        else:
            environment[item["name"]] = fields[item["valueFrom"]["fieldRef"]["fieldPath"]]
    return environment


def effective_args(deployment: Manifest, pod_name: str = "pod-0") -> list[str]:
    """The operator container's args once Kubernetes has expanded them."""
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    environment = container_environment(deployment, pod_name)
    return [expand(arg, environment) for arg in container["args"]]
