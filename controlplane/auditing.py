"""The control plane's audit log, and what of a finished run's files is bulk.

Benchmarks and fault runs read the API server's audit log: which requests the operator
made, when each was answered (bench/audit.py, tests/faults/judge.py). `flags` gives
kube-apiserver its policy: metadata of the named users' requests (and, with a node, the
kubelet's pod status writes with their bodies; with no users named, the claims' status
writes with theirs), nothing of health probes and leases.

A finished run's files are mostly etcd's data (its write-ahead log alone preallocates
64 MB) and the audit log (100 MB a file at scale, rotated): a benchmark at 10,000 claims
leaves gigabytes. `discard_bulk` removes those two once the figures are taken from them,
and keeps the components' logs, which are small and what one reads after a run.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from pathlib import Path


def flags(pki: Path, log: Path, users: Sequence[str], node: str | None) -> list[str]:
    """kube-apiserver's audit flags, its policy written in `pki`, the log at `log`."""
    logged: dict[str, object] = {"level": "Metadata"}
    if users:
        logged = {"level": "Metadata", "users": list(users)}
    # With a node, pod status writes (the kubelet's) keep their bodies: when pods ended.
    kubelet = [{"level": "RequestResponse",
                "resources": [{"group": "", "resources": ["pods/status"]}]}] if node else []
    # The full record (no users named: the fault runs) keeps the bodies of the claims'
    # status writes too: who the operator counted as users (tests/faults/judge.py).
    claims = [] if users else [{"level": "RequestResponse", "resources": [
        {"group": "zalando.org", "resources": ["ephemeralvolumeclaims/status"]}]}]
    policy = pki / "audit-policy.json"
    policy.write_text(json.dumps({
        "apiVersion": "audit.k8s.io/v1", "kind": "Policy",
        "omitStages": ["RequestReceived"],
        "rules": [{"level": "None", "nonResourceURLs": ["/readyz*", "/livez*",
                                                         "/healthz*"]},
                  {"level": "None", "resources": [{"group": "coordination.k8s.io",
                                                    "resources": ["leases"]}]},
                  *kubelet, *claims, logged, {"level": "None"}]}))
    return [f"--audit-policy-file={policy}", f"--audit-log-path={log}",
            "--audit-log-mode=blocking"]


def discard_bulk(workdir: Path) -> int:
    """Remove etcd's data and the audit logs of a stopped control plane whose files are in
    `workdir`; the components' logs stay. Returns the bytes freed."""
    bulk = [workdir / "etcd", *sorted((workdir / "logs").glob("audit*.log"))]
    freed = sum(_size(path) for path in bulk)
    for path in bulk:
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    return freed


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(part.stat().st_size for part in path.rglob("*") if part.is_file())
