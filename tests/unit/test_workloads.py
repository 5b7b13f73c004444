"""Workloads as users: which may still create pods that use a claim, and since when not."""

from __future__ import annotations

import datetime
from typing import Any

import pytest

from evc_operator.lifecycle import Phase, decide
from evc_operator.users import users_of
from evc_operator.workloads import KINDS, may_create_pods, workload_view
from tests.unit.test_lifecycle import at, claim

CREATED = "2026-01-01T00:00:00Z"


def template(claim_name: str | None = "scratch", **labels: str) -> dict[str, Any]:
    volumes = ([{"name": "v", "persistentVolumeClaim": {"claimName": claim_name}}]
               if claim_name else [])
    return {"metadata": {"labels": labels},
            "spec": {"volumes": volumes, "containers": [{"name": "c", "image": "busybox"}]}}


def workload(kind: str, *, spec: dict[str, Any] | None = None,
             status: dict[str, Any] | None = None, claim_name: str | None = "scratch",
             **labels: str) -> dict[str, Any]:
    body_spec: dict[str, Any] = dict(spec or {})
    if kind == "CronJob":
        body_spec["jobTemplate"] = {"spec": {"template": template(claim_name, **labels)}}
    else:
        body_spec["template"] = template(claim_name, **labels)
    return {"metadata": {"name": "w", "namespace": "ns", "creationTimestamp": CREATED},
            "spec": body_spec, "status": status or {}}


def condition(kind: str, status: str = "True",
              at_time: str = "2026-01-01T00:05:00Z") -> dict[str, Any]:
    return {"conditions": [{"type": kind, "status": status, "lastTransitionTime": at_time}]}


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_every_kind_names_the_claims_and_labels_of_its_template(kind: str) -> None:
    view = workload_view(kind, workload(kind, app="etl"))
    assert view.name == f"{kind}/w"
    assert view.claims == frozenset({"scratch"})
    assert dict(view.labels) == {"app": "etl"}
    assert view.active  # by default each may create pods


@pytest.mark.parametrize("finish", ["Complete", "Failed"])
def test_a_finished_job_stops_being_a_user_when_its_controller_said_so(finish: str) -> None:
    view = workload_view("Job", workload("Job", status=condition(finish)))
    assert not view.active
    assert view.ended == datetime.datetime(2026, 1, 1, 0, 5, tzinfo=datetime.UTC)


@pytest.mark.parametrize("status", [
    {},  # running
    {"failed": 3, "active": 0},  # between retries: the backoff
    condition("Suspended"),  # suspended: it resumes
    condition("Complete", status="False"),
    condition("FailureTarget"),  # still terminating its pods
])
def test_an_unfinished_job_may_still_create_pods(status: dict[str, Any]) -> None:
    assert may_create_pods("Job", workload("Job", status=status)) == (True, None)


@pytest.mark.parametrize("kind", ["Deployment", "ReplicaSet", "StatefulSet",
                                  "ReplicationController"])
@pytest.mark.parametrize(("replicas", "active"), [(None, True), (1, True), (3, True),
                                                  (0, False)])
def test_replicated_workloads_are_users_above_zero_replicas(kind: str, replicas: int | None,
                                                            active: bool) -> None:
    spec = {} if replicas is None else {"replicas": replicas}
    active_now, stopped = may_create_pods(kind, workload(kind, spec=spec))
    assert (active_now, stopped) == (active, None)  # no timestamp: seen late, taken late


@pytest.mark.parametrize("spec", [{}, {"suspend": True}])
def test_a_cronjob_is_a_user_even_suspended(spec: dict[str, Any]) -> None:
    assert may_create_pods("CronJob", workload("CronJob", spec=spec)) == (True, None)


def test_a_workload_user_keeps_a_claim_in_use_between_pods() -> None:
    """A Job between two attempts: its failed pod ended, the Job still counts."""
    job = workload_view("Job", workload("Job", status={"failed": 1}))
    use = users_of("scratch", None, [job], [job])
    decision = decide(claim(recorded_phase=Phase.IN_USE), use, at(100))
    assert decision.phase is Phase.IN_USE
    assert decision.active_users == ("Job/w",)


def test_a_workload_matches_a_claims_selector_by_its_template_labels() -> None:
    job = workload_view("Job", workload("Job", claim_name=None, app="etl"))
    assert [u.name for u in users_of("scratch", {"matchLabels": {"app": "etl"}}, [], [job])] \
        == ["Job/w"]
    assert users_of("scratch", {"matchLabels": {"app": "web"}}, [], [job]) == []
