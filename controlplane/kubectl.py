"""Clients of a local cluster: kubeconfigs, kubectl's failures that carry what kubectl
said, and waiting for CustomResourceDefinitions to be served.

`kubectl wait --for=condition=Established` is one list and one watch: a watch the API
server closes early, or one refused connection, ends it with exit status 1 and nothing in
a test's report but the command line. Waiting here polls the condition until a deadline,
so a transient failure is retried, and the error, when there is one, says what kubectl
answered last.
"""

from __future__ import annotations

import base64
import json
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

Run = Callable[..., subprocess.CompletedProcess[str]]


class KubectlError(subprocess.CalledProcessError):
    """kubectl failed; unlike its base class, the message includes kubectl's stderr."""

    def __str__(self) -> str:
        said = (self.stderr or "").strip()
        return super().__str__() + (f"\nkubectl said: {said}" if said else "")


class NotEstablished(TimeoutError):
    """CustomResourceDefinitions not Established by the deadline."""


def checked(result: subprocess.CompletedProcess[str]) -> str:
    """kubectl's stdout when it succeeded; KubectlError with its stderr otherwise."""
    if result.returncode != 0:
        raise KubectlError(result.returncode, result.args, result.stdout, result.stderr)
    return result.stdout


def not_established(answer: dict[str, Any]) -> list[str]:
    """Names of the CRDs in a `kubectl get -o json` answer (one object or a List) whose
    Established condition is not True."""
    items = answer.get("items", []) if answer.get("kind") == "List" else [answer]
    waiting = []
    for crd in items:
        conditions = (crd.get("status") or {}).get("conditions") or []
        if not any(c.get("type") == "Established" and c.get("status") == "True"
                   for c in conditions):
            waiting.append(str(crd.get("metadata", {}).get("name", "?")))
    return waiting


def wait_established(run: Run, what: Sequence[str], timeout: float,
                     interval: float = 0.5) -> None:
    """Poll `kubectl get WHAT -o json` (CRD names, or `-f FILE`) until every CRD in the
    answer is Established; raise NotEstablished with kubectl's last answer at `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        result = run("get", *what, "-o", "json")
        if result.returncode == 0:
            waiting = not_established(json.loads(result.stdout))
            if not waiting:
                return
            last = f"not yet Established: {', '.join(waiting)}"
        else:
            last = f"kubectl get failed: {result.stderr.strip()}"
        if time.monotonic() >= deadline:
            raise NotEstablished(
                f"{' '.join(what)}: not Established within {timeout:.0f} s ({last})")
        time.sleep(interval)


def write_kubeconfig(path: Path, server: str, ca_file: Path, user: str, token: str) -> None:
    """A kubeconfig at `path` (mode 0600) for `server`, trusting `ca_file`, as `user`
    by bearer `token`."""
    ca = base64.b64encode(ca_file.read_bytes()).decode()
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "local", "cluster": {
            "server": server, "certificate-authority-data": ca}}],
        "users": [{"name": user, "user": {"token": token}}],
        "contexts": [{"name": "local", "context": {"cluster": "local", "user": user}}],
        "current-context": "local",
    }
    path.write_text(json.dumps(config, indent=2))  # JSON is valid YAML
    path.chmod(0o600)
