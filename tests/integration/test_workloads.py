"""Workloads as users, on the real control plane: a claim stays while a Job, CronJob or
replicated workload that names it may still create pods, and the grace counts from when
it stopped. The control plane runs the Job controller (no kubelet: pods' ends are
patched, as a kubelet would report them) but no Deployment controller: a Deployment's
replicas are what its spec says."""

from __future__ import annotations

import datetime
import json
import time
from typing import Any

import pytest

from tests.integration.conftest import OperatorFactory
from tests.integration.support import Kubectl, eventually
from tests.integration.test_lifecycle import evc, finish, now, parse, phase_is, status

GRACE = {"EXPIRY_PERIOD": "4", "GRACE_PERIOD": "4", "COUNTDOWN_INTERVAL": "1"}


def template(claim: str) -> dict[str, Any]:
    return {"metadata": {"labels": {"app": "worker"}}, "spec": {
        "restartPolicy": "Never",
        "volumes": [{"name": "v", "persistentVolumeClaim": {"claimName": claim}}],
        "containers": [{"name": "main", "image": "busybox"}]}}


def deployment(name: str, claim: str) -> str:
    """A Deployment of one replica whose template mounts `claim`."""
    return json.dumps({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "worker"}},
                 "template": {**template(claim), "spec": {**template(claim)["spec"],
                                                          "restartPolicy": "Always"}}}})


def deleted_when_gone(kubectl: Kubectl, name: str, timeout: float = 30) -> datetime.datetime:
    """Wait for the claim to go; return when it went (at most 0.1 s after)."""
    deadline = time.monotonic() + timeout
    while kubectl.get("evc", name) is not None:
        assert time.monotonic() < deadline, f"{name} was not deleted"
        time.sleep(0.1)
    return now()


def test_a_failed_job_pod_is_retried_and_the_claim_waits_for_the_job(
        kubectl: Kubectl, operator: OperatorFactory) -> None:
    # The grace (4 s) is shorter than the Job controller's first backoff (10 s): counted
    # from the failed pod, the claim would be gone before the retry.
    operator(kubectl.namespace, **GRACE)
    kubectl("apply", "-f", "-", input=evc("job-scratch"))
    kubectl("apply", "-f", "-", input=json.dumps({
        "apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "etl"},
        "spec": {"backoffLimit": 1, "template": template("job-scratch")}}))

    def job_pods() -> list[str]:
        listing = json.loads(kubectl("get", "pods", "-l", "job-name=etl", "-o", "json"))
        return sorted(item["metadata"]["name"] for item in listing["items"])

    first = eventually(job_pods, what="the Job's first pod")[0]
    eventually(lambda: phase_is(kubectl, "job-scratch", "InUse"), what="InUse")
    finish(kubectl, first, "Failed")
    eventually(lambda: status(kubectl, "job-scratch").get("userNames") == ["Job/etl"],
               what="the Job alone uses it")
    pods: list[str] = eventually(lambda: job_pods() if len(job_pods()) == 2 else [],
                                 timeout=40, what="the Job's retry")
    assert phase_is(kubectl, "job-scratch", "InUse")  # stayed between the attempts
    assert kubectl.get("pvc", "job-scratch") is not None
    finish(kubectl, next(name for name in pods if name != first), "Failed")

    def failed_at() -> str:
        conditions = ((kubectl.get("job", "etl") or {}).get("status") or {}).get(
            "conditions") or []
        return next((c["lastTransitionTime"] for c in conditions
                     if c["type"] == "Failed" and c["status"] == "True"), "")

    ended = parse(eventually(failed_at, what="the Job's Failed condition"))
    went = deleted_when_gone(kubectl, "job-scratch")
    assert went >= ended + datetime.timedelta(seconds=4), "deleted before the grace ran out"


def test_a_deployment_scaled_to_zero_and_back_keeps_its_claim(
        kubectl: Kubectl, operator: OperatorFactory) -> None:
    operator(kubectl.namespace, EXPIRY_PERIOD="4", GRACE_PERIOD="8", COUNTDOWN_INTERVAL="1")
    kubectl("apply", "-f", "-", input=evc("web-cache"))
    kubectl("apply", "-f", "-", input=deployment("web", "web-cache"))
    eventually(lambda: status(kubectl, "web-cache").get("userNames") == ["Deployment/web"],
               what="the Deployment uses it")
    header, row = kubectl("get", "evc", "web-cache").splitlines()
    # By the header's positions: a blank column (REASON, absent) splits to nothing.
    starts = [header.index(name) for name in header.split()]
    columns = {header[start:].split()[0]: row[start:end].strip()
               for start, end in zip(starts, [*starts[1:], None], strict=True)}
    assert (columns["PHASE"], columns["USERS"]) == ("InUse", "1")
    time.sleep(5)  # past the expiry period: in use
    kubectl("scale", "deployment", "web", "--replicas=0")
    eventually(lambda: phase_is(kubectl, "web-cache", "Idle"), what="Idle at zero replicas")
    kubectl("scale", "deployment", "web", "--replicas=2")
    eventually(lambda: phase_is(kubectl, "web-cache", "InUse"), what="InUse again")
    time.sleep(9)  # past the grace period counted from the first scale-down
    assert phase_is(kubectl, "web-cache", "InUse")
    scaled_down = now()
    kubectl("scale", "deployment", "web", "--replicas=0")
    went = deleted_when_gone(kubectl, "web-cache")
    assert went >= scaled_down + datetime.timedelta(seconds=8)


@pytest.mark.parametrize("scope", [None, "--all-namespaces"])
def test_a_deleted_workload_starts_the_grace_then(kubectl: Kubectl, operator: OperatorFactory,
                                                  scope: str | None) -> None:
    """Served alone, the namespace's workloads are its own watches; with every namespace
    served, each kind is watched once for the cluster (clusterwide.py): the CronJob, made
    before the claim, is in that watch's view of the namespace when the claim comes."""
    kubectl("apply", "-f", "-", input=json.dumps({
        "apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": "nightly"},
        "spec": {"schedule": "0 3 * * *", "jobTemplate": {
            "spec": {"template": template("nightly-scratch")}}}}))
    process = operator(kubectl.namespace, scope, **GRACE)
    kubectl("apply", "-f", "-", input=evc("nightly-scratch"))
    eventually(lambda: status(kubectl, "nightly-scratch").get("userNames")
               == ["CronJob/nightly"], what="the CronJob uses it")
    time.sleep(5)  # past the expiry period: the CronJob's next run needs the claim
    assert phase_is(kubectl, "nightly-scratch", "InUse")
    deleted = now()
    kubectl("delete", "cronjob", "nightly")
    eventually(lambda: phase_is(kubectl, "nightly-scratch", "Idle"), what="Idle")
    assert parse(status(kubectl, "nightly-scratch")["unusedSince"]) >= deleted.replace(
        microsecond=0)
    went = deleted_when_gone(kubectl, "nightly-scratch")
    assert went >= deleted + datetime.timedelta(seconds=4)
    shared = "Workloads are watched once for the cluster" in process.log_text()
    assert shared is (scope is not None)


def test_a_deployment_at_zero_before_its_claim_existed_leaves_it_on_expiry(
        kubectl: Kubectl, operator: OperatorFactory) -> None:
    """At zero replicas since before the claim: never a use of it. The claim keeps its
    expiry (8 s), not the shorter grace (2 s) from the moment the operator saw it."""
    operator(kubectl.namespace, EXPIRY_PERIOD="8", GRACE_PERIOD="2", COUNTDOWN_INTERVAL="1")
    kubectl("apply", "-f", "-", input=deployment("idle", "idle-cache"))
    kubectl("scale", "deployment", "idle", "--replicas=0")  # changed since: generation 2
    time.sleep(1.1)  # its last write in an earlier second than the claim's creation
    kubectl("apply", "-f", "-", input=evc("idle-cache"))
    created = parse((kubectl.get("evc", "idle-cache") or {})["metadata"]["creationTimestamp"])
    eventually(lambda: status(kubectl, "idle-cache").get("countdown") == "expiry",
               what="the expiry countdown")
    assert phase_is(kubectl, "idle-cache", "Pending")
    went = deleted_when_gone(kubectl, "idle-cache")
    assert went >= created + datetime.timedelta(seconds=8)
