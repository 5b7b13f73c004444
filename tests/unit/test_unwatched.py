"""Users run by controllers the operator does not watch: said by a condition and one
Warning (unwatched.py), never silently counted as pods alone."""

from __future__ import annotations

import datetime
from typing import Any

import pytest

from evc_operator import unwatched
from evc_operator.lifecycle import PodUse
from evc_operator.settings import Settings
from evc_operator.status import warned
from evc_operator.users import pod_view
from tests.unit.fakes import FakeApi, make, pod_body, reconcile_now
from tests.unit.support import T0

KEY = ("jobs", "scratch")
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
    ([{"apiVersion": "batch/v1", "kind": "Job", "name": "j", "controller": True}], None),
    ([{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "r", "controller": True}], None),
    ([{"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "s", "controller": True}], None),
    ([{"apiVersion": "apps/v1", "kind": "DaemonSet", "name": "d", "controller": True}], None),
    ([{"apiVersion": "v1", "kind": "ReplicationController", "name": "r",
       "controller": True}], None),
    ([{"apiVersion": "v1", "kind": "Node", "name": "n1", "controller": True}], None),
    # A Deployment's own pods come through a ReplicaSet: one naming it is someone else's.
    ([{"apiVersion": "apps/v1", "kind": "Deployment", "name": "d", "controller": True}],
     "Deployment.apps/d"),
    ([{"kind": "Workflow", "name": "build", "controller": True}], None),  # unreadable
    ([], None),
])
def test_a_pods_controller_is_kept_only_when_the_operator_does_not_follow_it(
        owners: list[dict[str, Any]], runner: str | None) -> None:
    assert pod_view(owned("p", *owners)).runner == runner
    assert pod_view(owned("p", *owners)).use().runner == runner


def test_owner_references_of_the_wrong_shape_are_no_controller() -> None:
    assert unwatched.runner({"ownerReferences": "Workflow"}) is None
    assert unwatched.runner({"ownerReferences": ["Workflow", None]}) is None


@pytest.mark.parametrize(("runner", "resources", "watched"), [
    ("Workflow.argoproj.io/b", [("argoproj.io", "workflows")], True),
    ("Workflow.argoproj.io/b", [("argoproj.io", "workflowtemplates")], False),
    ("Workflow.argoproj.io/b", [("example.com", "workflows")], False),
    ("Policy.example.com/p", [("example.com", "policies")], True),
    ("Mesh.example.com/m", [("example.com", "meshes")], True),
    ("TaskRun.tekton.dev/t", [("tekton.dev", "taskruns"), ("tekton.dev", "pipelineruns")],
     True),
    ("ConfigMap/cm", [("argoproj.io", "workflows")], False),
    ("Workflow.argoproj.io/b", [], False),
])
def test_a_controller_is_watched_when_user_kinds_names_its_resource(
        runner: str, resources: list[tuple[str, str]], watched: bool) -> None:
    assert unwatched.watched(runner, resources) is watched


def test_the_condition_names_the_pods_and_the_kinds_and_what_to_do() -> None:
    users = [PodUse(f"step-{n}", active=n == 0, created=T0, runner="Workflow.argoproj.io/b")
             for n in range(5)]
    users.append(PodUse("plain", active=True, created=T0))
    found = unwatched.unwatched(users, ())
    assert [pod for pod, _runner in found] == [f"step-{n}" for n in range(5)]
    condition = unwatched.condition(found)
    assert condition is not None
    assert (condition.type, condition.status, condition.reason) == (
        "UnwatchedController", True, "NotWatched")
    assert "pod step-0 (run by Workflow.argoproj.io/b)" in condition.message
    assert "and 2 more" in condition.message
    assert "step-3" not in condition.message
    assert "USER_KINDS" in condition.message
    assert "evc.zalando.org/keep" in condition.message
    assert unwatched.condition([]) is None
    assert unwatched.unwatched(users, [("argoproj.io", "workflows")]) == []


def _conditions(status: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in status.get("conditions") or ()}


def test_a_user_run_by_an_unwatched_controller_is_a_condition_and_one_warning() -> None:
    fake = FakeApi(fresh_pods=[])
    reconciler, index = make(fake, [owned("step-1", WORKFLOW)],
                             clock=lambda: T0 + datetime.timedelta(seconds=60))
    reconcile_now(reconciler, KEY)
    claim = reconciler.claims.get(KEY)
    assert claim is not None
    assert fake.calls.count("event:UnwatchedController") == 1
    condition = _conditions(claim.view.status)["UnwatchedController"]
    assert condition["status"] == "True"
    assert "Workflow.argoproj.io/build" in condition["message"]
    assert "reason" not in claim.view.status or claim.view.status["reason"] is None
    # Looked at again, still so: not told again.
    reconcile_now(reconciler, KEY)
    assert fake.calls.count("event:UnwatchedController") == 1
    # Its step gone (judged once more as last seen: tracked.py), the condition goes.
    index.by_claim[KEY] = index.in_namespace["jobs"] = []
    reconcile_now(reconciler, KEY)
    reconcile_now(reconciler, KEY)
    assert "UnwatchedController" not in _conditions(claim.view.status)
    # A later step is told again.
    index.by_claim[KEY] = index.in_namespace["jobs"] = [pod_view(owned("step-2", WORKFLOW))]
    reconcile_now(reconciler, KEY)
    assert fake.calls.count("event:UnwatchedController") == 2


def test_a_failed_write_does_not_tell_the_warning_again() -> None:
    fake = FakeApi(fresh_pods=[])
    fake.status_error = TimeoutError()
    reconciler, _ = make(fake, [owned("step-1", WORKFLOW)],
                         clock=lambda: T0 + datetime.timedelta(seconds=60))
    reconcile_now(reconciler, KEY)
    reconcile_now(reconciler, KEY)
    assert fake.calls.count("event:UnwatchedController") == 1
    claim = reconciler.claims.get(KEY)
    assert claim is not None
    assert claim.unwritten is not None
    assert "UnwatchedController" in {c["type"] for c in warned({"conditions": [
        {"type": "UnwatchedController"}, {"type": "InUse"}]})["conditions"]}


def test_no_condition_when_user_kinds_watches_the_controller_or_pods_are_followed() -> None:
    settings = Settings.from_environ({"USER_KINDS": "workflows.v1alpha1.argoproj.io"})
    for pods, chosen in (([owned("step-1", WORKFLOW)], settings),
                         ([pod_body("plain")], Settings())):
        fake = FakeApi(fresh_pods=[])
        reconciler, _ = make(fake, pods, settings=chosen,
                             clock=lambda: T0 + datetime.timedelta(seconds=60))
        reconcile_now(reconciler, KEY)
        claim = reconciler.claims.get(KEY)
        assert claim is not None
        assert "event:UnwatchedController" not in fake.calls
        assert "UnwatchedController" not in _conditions(claim.view.status)
