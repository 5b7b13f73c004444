"""The objects a benchmark creates. Pure: dicts, no API calls.

In the simulated run pods are never scheduled (its control plane has no scheduler or
kubelet): the harness plays the kubelet by patching pod status, which is all the
operator reads. Unrelated pods look like a cluster's ordinary workloads. With
`--jobs`, each claim's user is a Job whose controller creates the pod. With
`--real-node`, `real_user_pod` really runs on the node.
"""

from __future__ import annotations

import datetime
import zlib
from typing import Any

ROLE = "bench.evc.zalando.org/role"
IMAGE = "registry.invalid/bench:1"  # never pulled: nothing runs pods here


def namespace(name: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}


def evc(name: str, size: str = "1Gi") -> dict[str, Any]:
    return {"apiVersion": "zalando.org/v1", "kind": "EphemeralVolumeClaim",
            "metadata": {"name": name, "labels": {ROLE: "claim"}}, "spec": {"size": size}}


def _pod(name: str, role: str, volumes: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": {
            ROLE: role, "app": f"app-{zlib.crc32(name.encode()) % 50}"}},
        "spec": {
            "restartPolicy": "Never",
            "automountServiceAccountToken": False,
            "containers": [{"name": "main", "image": IMAGE, "command": ["sleep", "3600"],
                            "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}},
                            "volumeMounts": [{"name": v["name"], "mountPath": f"/{v['name']}"}
                                             for v in volumes]}],
            "volumes": volumes,
        },
    }


def user_pod(name: str, claim: str) -> dict[str, Any]:
    """A batch pod that mounts the EVC `claim` by name, as the seed's pod.yaml does."""
    return _pod(name, "user", [{"name": "scratch",
                                "persistentVolumeClaim": {"claimName": claim}}])


def user_job(name: str, claim: str) -> dict[str, Any]:
    """A batch Job of one pod, not retried, whose pod template mounts the EVC `claim`.

    The Job controller creates its pod (named `name-<random>`); the harness then plays
    the kubelet for that pod as for a bare one."""
    pod = user_pod(name, claim)
    return {"apiVersion": "batch/v1", "kind": "Job",
            "metadata": {"name": name, "labels": {ROLE: "user"}},
            "spec": {"completions": 1, "parallelism": 1, "backoffLimit": 0,
                     "template": {"metadata": {"labels": pod["metadata"]["labels"]},
                                  "spec": pod["spec"]}}}


def real_user_pod(name: str, claim: str, seconds: float) -> dict[str, Any]:
    """A real batch container (busybox from the node's registry) that mounts the claim,
    sleeps `seconds` and exits 0."""
    return {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": {ROLE: "user"}},
        "spec": {
            "restartPolicy": "Never", "automountServiceAccountToken": False,
            "terminationGracePeriodSeconds": 1,
            "containers": [{"name": "main", "image": "busybox", "imagePullPolicy": "IfNotPresent",
                            "command": ["sleep", f"{seconds:g}"],
                            "volumeMounts": [{"name": "scratch", "mountPath": "/vol"}]}],
            "volumes": [{"name": "scratch", "persistentVolumeClaim": {"claimName": claim}}],
        },
    }


def bare_pvc(name: str) -> dict[str, Any]:
    """A PVC as the operator makes one for a claim, made by the harness itself."""
    return {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
            "metadata": {"name": name, "labels": {ROLE: "bare"}},
            "spec": {"accessModes": ["ReadWriteOnce"],
                     "resources": {"requests": {"storage": "1Gi"}}}}


def unrelated_pod(name: str) -> dict[str, Any]:
    """A pod that has nothing to do with any EVC (most pods of a real cluster)."""
    return _pod(name, "unrelated", [{"name": "cache", "emptyDir": {}}])


def _stamp(moment: datetime.datetime) -> str:
    return moment.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def running(started: datetime.datetime) -> dict[str, Any]:
    return {"status": {"phase": "Running", "startTime": _stamp(started), "containerStatuses": [
        {"name": "main", "image": IMAGE, "imageID": "", "ready": True, "restartCount": 0,
         "started": True, "state": {"running": {"startedAt": _stamp(started)}}}]}}


def succeeded(started: datetime.datetime, finished: datetime.datetime) -> dict[str, Any]:
    return {"status": {"phase": "Succeeded", "containerStatuses": [
        {"name": "main", "image": IMAGE, "imageID": "", "ready": False, "restartCount": 0,
         "started": False, "state": {"terminated": {
             "exitCode": 0, "reason": "Completed", "startedAt": _stamp(started),
             "finishedAt": _stamp(finished)}}}]}}
