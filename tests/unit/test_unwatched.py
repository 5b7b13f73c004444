"""Users run by controllers the operator does not watch: said by a condition and one
Warning (unwatched.py), never silently counted as pods alone."""

from __future__ import annotations

import datetime
import json
import types
from typing import Any, cast

import pytest

from evc_operator import unwatched
from evc_operator import watched as watching
from evc_operator.lifecycle import PodUse
from evc_operator.resources import KEEP_ANNOTATION
from evc_operator.scheduler import Scheduler
from evc_operator.settings import Settings
from evc_operator.status import only_users_changed
from evc_operator.tracked import TrackedClaim
from evc_operator.users import pod_view
from evc_operator.workloads import BUILT_IN, workload_view
from tests.unit.fakes import FakeApi, evc_body, make, pod_body, reconcile_now
from tests.unit.support import T0
from tests.unit.test_clusterwide import ClusterApi

KEY = ("jobs", "scratch")
NOW = T0 + datetime.timedelta(seconds=60)
WORKFLOW = {"apiVersion": "argoproj.io/v1alpha1", "kind": "Workflow", "name": "build",
            "uid": "wf-uid", "controller": True}


def owned(name: str, *owners: dict[str, Any], phase: str = "Running") -> dict[str, Any]:
    body = pod_body(name, phase)
    body["metadata"]["ownerReferences"] = list(owners)
    return body


@pytest.mark.parametrize(("owners", "runner"), [
    ([WORKFLOW], "Workflow.argoproj.io/build"),
    ([{**WORKFLOW, "controller": False}], None),  # an owner, not its controller
    ([{**WORKFLOW, "controller": False},
      {"apiVersion": "v1", "kind": "ConfigMap", "name": "cm", "controller": True}],
     "ConfigMap/cm"),
    ([{"apiVersion": "batch/v1", "kind": "Job", "name": "j", "controller": True}],
     "Job.batch/j"),
    ([{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "r", "controller": True}],
     "ReplicaSet.apps/r"),
    ([{"apiVersion": "v1", "kind": "ReplicationController", "name": "r",
       "controller": True}], "ReplicationController/r"),
    ([{"apiVersion": "v1", "kind": "Node", "name": "n1", "controller": True}], None),
    # A Deployment's own pods come through a ReplicaSet: one naming it is someone else's.
    ([{"apiVersion": "apps/v1", "kind": "Deployment", "name": "d", "controller": True}],
     "Deployment.apps/d"),
    ([{"kind": "Workflow", "name": "build", "controller": True}], None),  # unreadable
    ([], None),
])
def test_a_pods_controller_is_kept_but_a_nodes(
        owners: list[dict[str, Any]], runner: str | None) -> None:
    assert pod_view(owned("p", *owners)).runner == runner
    assert pod_view(owned("p", *owners)).use().runner == runner


def test_owner_references_of_the_wrong_shape_are_no_controller() -> None:
    assert unwatched.runner({"ownerReferences": "Workflow"}) is None
    assert unwatched.runner({"ownerReferences": ["Workflow", None]}) is None


def _tell(users: list[PodUse], said: dict[str, Any] | None = None,
          now: datetime.datetime = NOW, *, seen: bool | None = None,
          paused: bool = False) -> unwatched.Told:
    """`seen`: what the index says of every controller (None: a kind it does not watch)."""
    return unwatched.tell(users, said or {}, now, lambda _runner: seen, paused=paused)


def _steps(*names: str, runner: str = "Workflow.argoproj.io/b") -> list[PodUse]:
    return [PodUse(name, active=True, created=T0, runner=runner) for name in names]


def test_a_claim_held_only_by_pods_of_an_unwatched_controller_has_the_condition() -> None:
    condition = _tell([*_steps("step-0"), PodUse("plain", active=True, created=T0)]).condition
    assert condition is not None
    assert (condition.type, condition.status, condition.reason) == (
        "UnwatchedController", True, "NotWatched")
    assert condition.message.startswith("Pods run by Workflow.argoproj.io use this claim")
    assert "USER_KINDS" in condition.message
    assert "evc.zalando.org/keep" in condition.message
    assert _tell([PodUse("plain", active=True, created=T0)]).condition is None


def test_pods_of_a_job_whose_template_does_not_name_the_claim_are_told() -> None:
    """A volume a webhook adds to a Job's pods: between its pods nothing holds the claim
    (a Job that names it would be among the users, and no condition then)."""
    condition = _tell(_steps("job-x7k2", runner="Job.batch/nightly"), {}, seen=True).condition
    assert condition is not None
    assert "the pod template of their Job.batch does not name it" in condition.message
    assert "name the claim (or the labels its selector matches) in that pod template" in (
        condition.message)
    assert "USER_KINDS" not in condition.message
    job = PodUse("Job/nightly", active=True, created=T0, from_creation=True)
    assert _tell([*_steps("job-x7k2", runner="Job.batch/nightly"), job]).condition is None


def test_a_pod_younger_than_settled_is_not_counted_yet() -> None:
    """Its controller's view may come a moment after it (each kind has its own watch)."""
    young = [PodUse("job-x7k2", active=True, created=NOW - unwatched.SETTLED / 2,
                    runner="Job.batch/nightly")]
    assert _tell(young).condition is None
    assert _tell(young, {}, NOW + unwatched.SETTLED, paused=False) is not None


def test_the_message_names_only_the_kinds_so_that_pods_coming_and_going_keep_it() -> None:
    one = _tell(_steps("step-0")).condition
    other = _tell(_steps("step-1", "step-2", runner="Workflow.argoproj.io/c")).condition
    assert one is not None
    assert other is not None
    assert one.message == other.message
    assert "step-" not in one.message


def test_built_in_controllers_are_not_told_to_be_listed_in_user_kinds() -> None:
    """customkinds.parse refuses built-in groups: a Spark executor's driver Pod or a
    Deployment owning pods itself can only be kept."""
    for runner in ("Pod/driver", "Deployment.apps/d"):
        condition = _tell(_steps("p", runner=runner)).condition
        assert condition is not None
        assert "USER_KINDS" not in condition.message
        assert "evc.zalando.org/keep" in condition.message


@pytest.mark.parametrize("holder", ["Job/build", "workflows.argoproj.io/build",
                                    "StatefulSet/db"])
def test_no_condition_while_an_object_the_operator_watches_holds_the_claim(
        holder: str) -> None:
    """A workload or a USER_KINDS object that names the claim holds it between the pods,
    running or finished (a PipelineRun whose pods a TaskRun controls, say)."""
    users = [*_steps("step-0"), PodUse(holder, active=False, created=T0)]
    said = {"conditions": [{"type": "UnwatchedController", "status": "True",
                            "message": "said"}]}
    assert _tell(users).condition is None
    assert _tell(users, said, paused=False).condition is None


def test_the_condition_stays_once_said_until_something_holds_the_claim_or_it_is_paused(
        ) -> None:
    """Argo's podGC deletes each step's pod: between steps no pod is there, and the
    condition would come and go (and warn) at each step."""
    said = {"conditions": [{"type": "UnwatchedController", "status": "True",
                            "message": "as said"}]}
    kept = _tell([], said, paused=False).condition
    assert kept is not None
    assert kept.message == "as said"
    assert _tell([]).condition is None
    assert _tell(_steps("step-0"), said, paused=True).condition is None
    assert _tell([], said, paused=True).condition is None


def test_the_warning_names_the_first_pods_and_comes_once() -> None:
    users = _steps(*(f"step-{n}" for n in range(5)))
    condition = _tell(users).condition
    [warning] = _tell(users, {}).warnings
    assert warning.type == "Warning"
    assert warning.reason == "UnwatchedController"
    assert condition is not None
    assert warning.message.startswith(condition.message)
    assert "step-0 (run by Workflow.argoproj.io/b)" in warning.message
    assert "and 2 more" in warning.message
    assert "step-3" not in warning.message
    said = {"conditions": [{"type": "UnwatchedController", "status": "True"}]}
    assert _tell(users, said).warnings == []
    assert _tell([*users, PodUse("Job/j", active=False, created=T0)], {}).warnings == []


def _conditions(status: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in status.get("conditions") or ()}


def _reconciled(reconciler: Scheduler) -> TrackedClaim:
    """The claim, reconciled once more."""
    reconcile_now(reconciler, KEY)
    claim = reconciler.claims.get(KEY)
    assert claim is not None
    return claim


def _assert_untold(fake: FakeApi, claim: TrackedClaim) -> None:
    assert "event:UnwatchedController" not in fake.calls
    assert "UnwatchedController" not in _conditions(claim.view.status)


def test_a_user_run_by_an_unwatched_controller_is_a_condition_and_one_warning() -> None:
    fake = FakeApi(fresh_pods=[])
    reconciler, index = make(fake, [owned("step-1", WORKFLOW)],
                             clock=lambda: NOW)
    claim = _reconciled(reconciler)
    assert fake.calls.count("event:UnwatchedController") == 1
    condition = _conditions(claim.view.status)["UnwatchedController"]
    assert condition["status"] == "True"
    assert "Workflow.argoproj.io" in condition["message"]
    assert claim.view.status.get("reason") is None  # not a status.reason: the CRD's enum
    assert claim.view.unwatched  # counted: evc_claims_unwatched_controller
    assert reconciler.unwatched() == 1
    # Looked at again, still so: not told again.
    reconcile_now(reconciler, KEY)
    assert fake.calls.count("event:UnwatchedController") == 1
    # Its step gone (a podGC), the condition stays; the next step is not told again.
    index.by_claim[KEY] = index.in_namespace["jobs"] = []
    reconcile_now(reconciler, KEY)
    reconcile_now(reconciler, KEY)
    assert _conditions(claim.view.status)["UnwatchedController"]["status"] == "True"
    index.by_claim[KEY] = index.in_namespace["jobs"] = [pod_view(owned("step-2", WORKFLOW))]
    reconcile_now(reconciler, KEY)
    assert fake.calls.count("event:UnwatchedController") == 1


def test_a_pod_of_a_job_that_does_not_name_the_claim_is_told_and_one_that_does_is_not(
        ) -> None:
    job = {"apiVersion": "batch/v1", "kind": "Job", "name": "nightly", "uid": "job-uid",
           "controller": True}
    nightly = {"apiVersion": "batch/v1", "kind": "Job",
               "metadata": {"name": "nightly", "namespace": "jobs",
                            "creationTimestamp": "2026-01-01T00:00:10Z"},
               "spec": {"template": {"spec": {"containers": [{"name": "main"}]}}}}
    named = json.loads(json.dumps(nightly))
    named["spec"]["template"]["spec"] = pod_body("x")["spec"]
    for body, told in ((nightly, True), (named, False)):
        fake = FakeApi(fresh_pods=[])
        reconciler, index = make(fake, [], clock=lambda: NOW)
        step = pod_view(owned("nightly-x7k2", job))
        held = workload_view("Job", body)
        index.by_claim[KEY] = [step, *([held] if held.claims else [])]
        index.in_namespace["jobs"] = [step, held]
        claim = _reconciled(reconciler)
        assert ("event:UnwatchedController" in fake.calls) is told
        if told:
            message = _conditions(claim.view.status)["UnwatchedController"]["message"]
            assert "the pod template of their Job.batch does not name it" in message


def test_a_failed_write_does_not_tell_the_warning_again() -> None:
    fake = FakeApi(fresh_pods=[])
    fake.status_error = TimeoutError()
    reconciler, _ = make(fake, [owned("step-1", WORKFLOW)],
                         clock=lambda: NOW)
    reconcile_now(reconciler, KEY)
    reconcile_now(reconciler, KEY)
    assert fake.calls.count("event:UnwatchedController") == 1
    claim = reconciler.claims.get(KEY)
    assert claim is not None
    assert claim.unwritten is not None
    assert _conditions(dict(claim.unwritten))["UnwatchedController"]["status"] == "True"


def test_pods_coming_and_going_leave_a_write_of_users_only_for_the_budget() -> None:
    """The condition's words do not follow the pods: such a write stays budgeted."""
    statuses = []
    for step in ("step-1", "step-2"):
        fake = FakeApi(fresh_pods=[])
        reconciler, _ = make(fake, [owned(step, WORKFLOW)],
                             clock=lambda: NOW)
        claim = _reconciled(reconciler)
        statuses.append(claim.view.status)
    assert statuses[0] != statuses[1]
    assert only_users_changed(statuses[1], statuses[0])


@pytest.mark.parametrize("environ", [{"DRY_RUN": "true"}, {}])
def test_no_condition_where_deletion_is_paused(environ: dict[str, str]) -> None:
    body = evc_body()
    if not environ:
        body["metadata"]["annotations"] = {KEEP_ANNOTATION: "true"}
    fake = FakeApi(fresh_pods=[])
    reconciler, _ = make(fake, [owned("step-1", WORKFLOW)], body=body,
                         settings=Settings.from_environ(environ),
                         clock=lambda: NOW)
    claim = _reconciled(reconciler)
    _assert_untold(fake, claim)


def test_no_condition_when_an_object_names_the_claim_or_pods_are_followed() -> None:
    settings = Settings.from_environ({"USER_KINDS": "workflows.v1alpha1.argoproj.io"})
    workflow = {"apiVersion": "argoproj.io/v1alpha1", "kind": "Workflow",
                "metadata": {"name": "build", "namespace": "jobs",
                             "creationTimestamp": "2026-01-01T00:00:10Z"},
                "spec": {"volumes": [{"name": "w",
                                      "persistentVolumeClaim": {"claimName": "scratch"}}]}}
    for views in ([pod_view(owned("step-1", WORKFLOW)),
                   settings.user_kinds[0].project(workflow)],
                  [pod_view(pod_body("plain"))]):
        fake = FakeApi(fresh_pods=[])
        reconciler, index = make(fake, [], settings=settings,
                                 clock=lambda: NOW)
        index.by_claim[KEY] = index.in_namespace["jobs"] = views
        claim = _reconciled(reconciler)
        _assert_untold(fake, claim)


def test_a_pod_whose_watched_controller_is_gone_is_not_counted() -> None:
    """A Job deleted before its pods (kubectl's background cascade), or whose view has not
    come yet after a relist: told, the words would be untrue (its template may name it)."""
    pods = _steps("job-x7k2", runner="Job.batch/nightly")
    assert _tell(pods, seen=False).condition is None
    assert _tell(pods, seen=False).warnings == []
    said = {"conditions": [{"type": "UnwatchedController", "status": "True",
                            "message": "as said"}]}
    assert _tell(pods, said, seen=False).condition is not None  # said before: it stays


def test_a_claim_is_looked_at_again_when_its_youngest_such_pod_counts() -> None:
    young = [PodUse("a", active=True, created=NOW - datetime.timedelta(seconds=3),
                    runner="Job.batch/j"),
             PodUse("b", active=True, created=NOW - datetime.timedelta(seconds=1),
                    runner="Workflow.argoproj.io/w"),
             PodUse("plain", active=True, created=NOW)]
    assert _tell(young).settles_at == NOW + unwatched.SETTLED - datetime.timedelta(seconds=3)
    assert _tell(young, seen=False).settles_at is not None  # its view may come meanwhile
    assert _tell(_steps("old")).settles_at is None
    assert _tell(young, paused=True).settles_at is None
    assert _tell([*young, PodUse("Job/j", active=True, created=T0)]).settles_at is None


def test_the_index_finds_a_controller_among_the_views_of_its_kind() -> None:
    settings = Settings.from_environ({"USER_KINDS": "workflows.v1alpha1.argoproj.io"})
    index = watching.Watched(ClusterApi({}), pods_changed=lambda *_: None,
                             pvc_changed=lambda _key: None,
                             namespace_synced=lambda _namespace: None,
                             kinds=(*BUILT_IN, *settings.user_kinds))
    held: dict[str, dict[str, Any]] = {kind.name: {} for kind in index.kinds}
    held["Job"] = {"nightly": pod_view(pod_body("x"))}
    held["workflows.v1alpha1.argoproj.io"] = {"build": pod_view(pod_body("y"))}
    index.workloads["jobs"] = [cast(Any, types.SimpleNamespace(items=held[kind.name]))
                               for kind in index.kinds]
    assert index.controller_seen("jobs", "Job.batch/nightly") is True
    assert index.controller_seen("jobs", "Job.batch/gone") is False
    assert index.controller_seen("jobs", "ReplicaSet.apps/web-1") is False
    assert index.controller_seen("jobs", "Workflow.argoproj.io/build") is True
    assert index.controller_seen("jobs", "Workflow.argoproj.io/gone") is False
    assert index.controller_seen("jobs", "TaskRun.tekton.dev/t") is None
    assert index.controller_seen("jobs", "Pod/driver") is None
    assert index.controller_seen("elsewhere", "Job.batch/nightly") is None


def test_pods_of_a_deleted_job_are_not_told_in_a_reconciliation() -> None:
    fake = FakeApi(fresh_pods=[])
    job = {"apiVersion": "batch/v1", "kind": "Job", "name": "nightly", "uid": "job-uid",
           "controller": True}
    reconciler, _ = make(fake, [owned("nightly-x7k2", job, phase="Succeeded")],
                         clock=lambda: NOW)
    claim = _reconciled(reconciler)
    _assert_untold(fake, claim)


def test_a_claim_used_by_a_young_such_pod_is_looked_at_again_once_it_counts() -> None:
    """Otherwise told only at the pod's next change: its end, a grace before the deletion
    (with a grace of 0, never)."""
    body = owned("step-1", WORKFLOW)
    body["metadata"]["creationTimestamp"] = "2026-01-01T00:00:58Z"  # 2 s old at NOW
    fake = FakeApi(fresh_pods=[])
    reconciler, _ = make(fake, [body], clock=lambda: NOW)
    reconcile_now(reconciler, KEY)
    assert "event:UnwatchedController" not in fake.calls
    assert reconciler.queue.later.get(KEY) == NOW + datetime.timedelta(seconds=8)


def test_once_said_its_kinds_only_grow_so_pods_of_two_kinds_in_turn_keep_its_words(
        ) -> None:
    first = _tell(_steps("wf-1"))
    assert first.condition is not None
    said = {"conditions": [{"type": "UnwatchedController", "status": "True",
                            "message": first.condition.message}]}
    both = _tell(_steps("task-1", runner="TaskRun.tekton.dev/t"), said).condition
    assert both is not None
    assert both.message.startswith(
        "Pods run by TaskRun.tekton.dev, Workflow.argoproj.io use this claim")
    said["conditions"][0]["message"] = both.message
    for pods in (_steps("wf-2"), _steps("task-2", runner="TaskRun.tekton.dev/u"), []):
        again = _tell(pods, said).condition
        assert again is not None
        assert again.message == both.message
