"""Custom resources as users (`USER_KINDS`), on the real control plane: a pipeline run that
names the claim holds it between two of its pods, and the grace counts from when it
finished. The kind is a CustomResourceDefinition of this test's own, shaped as Tekton's
PipelineRun is (`spec.workspaces[].persistentVolumeClaim.claimName`, a `Succeeded`
condition), in a group of its own so that it never stands for the real one."""

from __future__ import annotations

import datetime
import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from controlplane.cluster import ControlPlane
from evc_operator import unwatched
from tests.integration.conftest import OperatorFactory
from tests.integration.support import Kubectl, eventually
from tests.integration.test_bad_environment import start
from tests.integration.test_lifecycle import evc, finish, now, parse, phase_is, pod, status

GROUP = "pipelines.evc.example.com"
USER_KINDS = f"runs.v1.{GROUP}"
GRACE = {"EXPIRY_PERIOD": "4", "GRACE_PERIOD": "4", "COUNTDOWN_INTERVAL": "1",
         "USER_KINDS": USER_KINDS}
CRD = {
    "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
    "metadata": {"name": f"runs.{GROUP}"},
    "spec": {"group": GROUP, "scope": "Namespaced",
             "names": {"plural": "runs", "singular": "run", "kind": "Run", "listKind": "RunList"},
             "versions": [{"name": "v1", "served": True, "storage": True,
                           "subresources": {"status": {}},
                           "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                               "spec": {"type": "object",
                                        "x-kubernetes-preserve-unknown-fields": True},
                               "status": {"type": "object",
                                          "x-kubernetes-preserve-unknown-fields": True}}}}}]}}


@pytest.fixture(scope="module")
def runs_crd(control_plane: ControlPlane) -> Iterator[None]:
    control_plane.kubectl("apply", "-f", "-", input=json.dumps(CRD))
    control_plane.kubectl("wait", "--for=condition=Established", "--timeout=60s",
                          f"crd/runs.{GROUP}")
    yield
    # Waited for: its teardown (every Run removed, discovery and OpenAPI recomputed) is
    # this module's cost, not that of the timing-sensitive tests after it.
    control_plane.kubectl("delete", "crd", f"runs.{GROUP}", "--timeout=120s")


def run(name: str, claim: str) -> str:
    return json.dumps({"apiVersion": f"{GROUP}/v1", "kind": "Run", "metadata": {"name": name},
                       "spec": {"workspaces": [{"name": "source", "persistentVolumeClaim": {
                           "claimName": claim}}]}})


def succeeded(kubectl: Kubectl, name: str) -> datetime.datetime:
    """What the pipeline's controller writes when the run is done; returns its time."""
    done = now()
    kubectl("patch", f"runs.{GROUP}", name, "--subresource=status", "--type=merge", "-p",
            json.dumps({"status": {"conditions": [{
                "type": "Succeeded", "status": "True", "reason": "Succeeded",
                "lastTransitionTime": done.strftime("%Y-%m-%dT%H:%M:%SZ")}]}}))
    return done.replace(microsecond=0)


def users(kubectl: Kubectl, name: str) -> list[Any]:
    found: list[Any] = status(kubectl, name).get("userNames") or []
    return found


@pytest.mark.parametrize("scope", [None, "--all-namespaces"], ids=["namespace", "cluster"])
def test_a_run_holds_its_claim_between_its_pods_until_it_has_finished(
        kubectl: Kubectl, operator: OperatorFactory, runs_crd: None, scope: str | None) -> None:
    """Serving one namespace, the kind is watched there; serving every namespace, once for
    the cluster with the workloads (clusterwide.py)."""
    process = operator(kubectl.namespace, scope, **GRACE)
    if scope is not None:
        eventually(lambda: "Workloads are watched once for the cluster" in process.log_text(),
                   what="the cluster-wide watches")
    kubectl("apply", "-f", "-", input=evc("workspace"))
    kubectl("apply", "-f", "-", input=run("build", "workspace"))
    kubectl("apply", "-f", "-", input=pod("build-clone", "workspace"))
    eventually(lambda: phase_is(kubectl, "workspace", "InUse"), what="InUse")
    finish(kubectl, "build-clone")  # the first step is done; the next has not begun
    kubectl("delete", "pod", "build-clone", "--wait=false")
    eventually(lambda: users(kubectl, "workspace") == [f"runs.{GROUP}/build"],
               what="the run alone uses it")
    time.sleep(4 + 3)  # past the grace after the first step's end: the run still holds it
    assert phase_is(kubectl, "workspace", "InUse")
    assert kubectl.get("pvc", "workspace") is not None

    ended = succeeded(kubectl, "build")
    eventually(lambda: phase_is(kubectl, "workspace", "Idle"), what="Idle once it finished")
    assert parse(status(kubectl, "workspace")["deletesAt"]) >= ended + datetime.timedelta(
        seconds=4)
    while kubectl.get("evc", "workspace") is not None:
        assert now() < ended + datetime.timedelta(seconds=4 + 10), "deleted late"
        time.sleep(0.1)
    assert now() >= ended + datetime.timedelta(seconds=4), "deleted before its grace"


def test_without_the_setting_a_run_is_no_user(
        kubectl: Kubectl, operator: OperatorFactory, runs_crd: None) -> None:
    """What USER_KINDS is for: the same run, not listed, holds nothing."""
    operator(kubectl.namespace, **{k: v for k, v in GRACE.items() if k != "USER_KINDS"})
    kubectl("apply", "-f", "-", input=evc("unheld"))
    kubectl("apply", "-f", "-", input=run("build", "unheld"))
    eventually(lambda: kubectl.get("evc", "unheld") is None, timeout=20,
               what="expired: the run is not a user")


def test_a_user_kind_that_cannot_be_watched_stops_the_start_with_one_line(
        control_plane: ControlPlane, operator: OperatorFactory) -> None:
    process = start(operator, control_plane, "default", USER_KINDS="runs.pipelines")
    process.process.wait(timeout=60)
    log = process.log_text()
    assert process.process.returncode != 0, log
    assert "Traceback" not in log, log
    assert ("evc-operator: invalid configuration: USER_KINDS: 'runs.pipelines' is not a "
            "resource written as plural.version.group") in log


def test_a_user_kind_not_served_is_said_at_start(
        kubectl: Kubectl, operator: OperatorFactory) -> None:
    """A kind whose CRD is not installed: one line that says what follows, not an exit."""
    process = operator(kubectl.namespace, **{**GRACE, "USER_KINDS": "absents.v1.evc.example.com"})
    line = ("USER_KINDS names absents.v1.evc.example.com, which the API server does not "
            "serve (is its CustomResourceDefinition installed, in version v1?): the claims "
            "of namespaces with claims are not served (no PVC made, none deleted) until it "
            "is.")
    eventually(lambda: line in process.log_text(), what="the line")
    # Its namespaces' users cannot all be listed: nothing is decided there, the claim is
    # kept past its expiry (4 s) rather than deleted on a view that may lack its user
    # (a 404 may come from an API server that has not loaded a CRD that others serve).
    kubectl("apply", "-f", "-", input=evc("undecided"))
    time.sleep(4 + 5)
    undecided = kubectl.get("evc", "undecided")
    assert undecided is not None
    assert "status" not in undecided  # nor made a PVC: the log line above says why
    assert process.process.poll() is None


def test_a_run_that_names_its_claim_deeper_than_orjson_parses_holds_it(
        kubectl: Kubectl, operator: OperatorFactory, runs_crd: None) -> None:
    """The API server takes a custom object nested 2,000 levels deep (10,000: Go's JSON);
    orjson parses 1,024. Refused, the object stopped the kind's informer for good, and
    the claim it held expired (parsing.py)."""
    process = operator(kubectl.namespace, **GRACE)
    deep: dict[str, Any] = {"persistentVolumeClaim": {"claimName": "deep"}}
    text = json.dumps(deep)
    text = '{"next": ' * 2_000 + text + "}" * 2_000  # json.dumps would recurse as deep
    kubectl("apply", "-f", "-", input=evc("deep"))
    head = json.dumps({"apiVersion": f"{GROUP}/v1", "kind": "Run",
                       "metadata": {"name": "nested"}})
    kubectl("create", "-f", "-", input=head[:-1] + ', "spec": {"steps": ' + text + "}}")
    eventually(lambda: users(kubectl, "deep") == [f"runs.{GROUP}/nested"],
               what="the deep run uses it")
    time.sleep(4 + 3)  # past the expiry: the run holds it
    assert phase_is(kubectl, "deep", "InUse")
    assert "Traceback" not in process.log_text()


def _unwatched(kubectl: Kubectl, name: str) -> dict[str, Any] | None:
    return next((condition for condition in status(kubectl, name).get("conditions") or ()
                 if condition["type"] == "UnwatchedController"), None)


@pytest.mark.parametrize("listed", [False, True], ids=["unlisted", "listed"])
def test_a_claim_held_only_by_pods_of_an_unwatched_controller_is_said(
        kubectl: Kubectl, operator: OperatorFactory, runs_crd: None, listed: bool) -> None:
    """A pod whose controller is a Run that names the claim: unless USER_KINDS lists runs
    (then the Run holds the claim), a condition and one Warning say that between its pods
    nothing holds it (unwatched.py). (A Job's pod alike is not shown here: the Job
    controller takes its owner reference off a pod its selector does not match, and kills
    or replaces one it does; tests/unit/test_unwatched.py decides on one.)"""
    operator(kubectl.namespace, **(GRACE if listed else
                                   {k: v for k, v in GRACE.items() if k != "USER_KINDS"}))
    kubectl("apply", "-f", "-", input=evc("stepped"))
    kind, api_version, name = "Run", f"{GROUP}/v1", "build"
    kubectl("apply", "-f", "-", input=run(name, "stepped"))
    found = kubectl.get(f"runs.{GROUP}", name)
    qualified = f"Run.{GROUP}"
    assert found is not None
    if listed:  # seen before its pod: never decided on the pod alone
        eventually(lambda: users(kubectl, "stepped") == [f"runs.{GROUP}/build"],
                   what="the run uses it")
    step = json.loads(pod("build-step", "stepped"))
    step["metadata"]["ownerReferences"] = [{
        "apiVersion": api_version, "kind": kind, "name": name,
        "uid": found["metadata"]["uid"], "controller": True}]
    kubectl("apply", "-f", "-", input=json.dumps(step))
    eventually(lambda: phase_is(kubectl, "stepped", "InUse"), what="InUse")
    time.sleep(unwatched.SETTLED.total_seconds() + 1)  # its controller's view has come
    finish(kubectl, "build-step")  # decided again: ended, the grace (4 s) runs
    if listed:
        eventually(lambda: users(kubectl, "stepped") == [f"runs.{GROUP}/build"],
                   what="the run alone uses it")
        assert _unwatched(kubectl, "stepped") is None
        assert not [e for e in kubectl.events("stepped") if e["reason"] == "UnwatchedController"]
        return
    condition = eventually(lambda: _unwatched(kubectl, "stepped"), timeout=4,
                           what="the condition, within the grace")
    assert condition is not None
    assert condition["status"] == "True"
    assert condition["reason"] == "NotWatched"
    assert condition["message"].startswith(f"Pods run by {qualified} use this claim")
    warnings = eventually(lambda: [e for e in kubectl.events("stepped")
                                   if e["reason"] == "UnwatchedController"],
                          what="the Warning")
    assert [e["type"] for e in warnings] == ["Warning"]
    assert f"build-step (run by {qualified}/{name})" in warnings[0]["message"]
