"""A Job, like a pod, is in use from its creation on: its creation is the API server's
stamp, its reported end (its Complete or Failed condition's `lastTransitionTime`) the
clock of kube-controller-manager or of the controller named in `spec.managedBy`, which
may run behind. A Job created after a moment was in use after it, whatever its end says
(lifecycle.PodUse.from_creation, set by users.PodView.use)."""

from __future__ import annotations

import datetime
from typing import Any

from evc_operator import users
from evc_operator.lifecycle import Action, Claim, Phase, decide
from evc_operator.users import pod_view
from evc_operator.workloads import KINDS, workload_view

T0 = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)


def at(seconds: float) -> datetime.datetime:
    return T0 + datetime.timedelta(seconds=seconds)


def stamp(seconds: float) -> str:
    return at(seconds).strftime("%Y-%m-%dT%H:%M:%SZ")


def completed_job(created: float, completed: float) -> dict[str, Any]:
    """A Job whose pods are gone, Complete at `completed` by its controller's clock."""
    return {"metadata": {"name": "load", "namespace": "jobs",
                         "creationTimestamp": stamp(created)},
            "spec": {"template": {"spec": {"volumes": [
                {"name": "v", "persistentVolumeClaim": {"claimName": "scratch"}}]}}},
            "status": {"conditions": [{"type": "Complete", "status": "True",
                                       "lastTransitionTime": stamp(completed)}]}}


def test_pods_and_jobs_are_in_use_from_their_creation_other_workloads_not() -> None:
    pod = pod_view({"metadata": {"name": "p", "namespace": "jobs",
                                 "creationTimestamp": stamp(0)}, "spec": {}})
    assert pod.use().from_creation
    assert workload_view("Job", completed_job(0, 5)).use().from_creation
    for kind in ("Deployment", "CronJob", "DaemonSet"):
        body = {"metadata": {"name": "w", "namespace": "jobs", "generation": 1,
                             "creationTimestamp": stamp(0)},
                "spec": {"replicas": 0, "template": {"spec": {}}}}
        assert not workload_view(kind, body).use().from_creation, kind


def test_a_job_created_after_a_never_used_claim_did_not_end_before_it() -> None:
    """The claim created at 100; a Job created at 110, whose controller's clock runs 25 s
    behind, reads Complete at 95; its pods are gone and the operator never saw it run.
    It used the claim: grace from when the operator sees it, not expiry from creation
    (which would delete at 131)."""
    claim = Claim(created=at(100), expiry_period=30, grace_period=60)
    job = workload_view("Job", completed_job(created=110, completed=95)).use()
    assert job.ended == at(95)
    decision = decide(claim, [job], at(140))
    assert (decision.phase, decision.unused_since) == (Phase.IDLE, at(140))
    assert decision.deletes_at == at(200)
    assert decision.action is Action.NONE


def test_a_job_created_after_the_recorded_end_was_used_after_it() -> None:
    """Recorded Idle since 100; a Job the operator never saw, created at 110, reads
    Complete at 95 (its controller's clock behind): a use after the record, so the grace
    counts from now, not from 100."""
    claim = Claim(created=at(0), expiry_period=30, grace_period=60,
                  recorded_phase=Phase.IDLE, recorded_unused_since=at(100))
    job = workload_view("Job", completed_job(created=110, completed=95)).use()
    decision = decide(claim, [job], at(150))
    assert (decision.phase, decision.unused_since) == (Phase.IDLE, at(150))
    assert decision.deletes_at == at(210)
    assert decision.action is Action.NONE


def test_the_kinds_not_in_use_from_creation_are_the_built_in_workloads_but_jobs() -> None:
    """users.py names them by prefix (it cannot import workloads.py, which imports it): a
    built-in kind added to workloads.KINDS must be placed on one side or the other."""
    assert {prefix.rstrip("/") for prefix in users._NOT_FROM_CREATION} == set(KINDS) - {"Job"}
