"""Custom resources of `USER_KINDS` as users (customkinds.py): a pipeline's object holds the
claims it names between two of its pods, until it has finished by the generic rule, and
the operator reads them like the built-in workloads (the setting, its RBAC, its watch)."""

from __future__ import annotations

import asyncio
import datetime
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from evc_operator import access, customkinds, kube
from evc_operator import watched as watching
from evc_operator.lifecycle import Action, Claim, Phase, decide
from evc_operator.settings import Settings, SettingsError
from evc_operator.users import PodView, pod_view, users_of

T0 = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
WORKFLOWS, = customkinds.parse("workflows.v1alpha1.argoproj.io")
PIPELINE_RUNS, = customkinds.parse("pipelineruns.v1.tekton.dev")


def at(seconds: float) -> datetime.datetime:
    return T0 + datetime.timedelta(seconds=seconds)


def stamp(seconds: float) -> str:
    return at(seconds).strftime("%Y-%m-%dT%H:%M:%SZ")


def pipeline_run(name: str = "build-42", *, created: float = 0,
                 succeeded: str | None = "Unknown", at_: float = 0) -> dict[str, Any]:
    """A Tekton PipelineRun whose workspace is the claim `scratch`."""
    status: dict[str, Any] = {}
    if succeeded is not None:
        status["conditions"] = [{"type": "Succeeded", "status": succeeded,
                                 "lastTransitionTime": stamp(at_)}]
    return {"apiVersion": "tekton.dev/v1", "kind": "PipelineRun",
            "metadata": {"name": name, "namespace": "ci", "creationTimestamp": stamp(created)},
            "spec": {"workspaces": [{"name": "source",
                                     "persistentVolumeClaim": {"claimName": "scratch"}}]},
            "status": status}


def workflow(phase: str, *, finished_at: float | None = None) -> dict[str, Any]:
    """An Argo Workflow naming `scratch` in a template's volumes and `shared` at the top;
    finished, its status as Argo writes it: a `Completed` condition without a time, and
    `finishedAt`."""
    status: dict[str, Any] = {"phase": phase, "finishedAt": None}
    if finished_at is not None:
        status["finishedAt"] = stamp(finished_at)
        status["conditions"] = [{"type": "PodRunning", "status": "False"},
                                {"type": "Completed", "status": "True"}]
    return {"metadata": {"name": "etl", "namespace": "ci", "creationTimestamp": stamp(0)},
            "spec": {"volumes": [{"name": "s", "persistentVolumeClaim": {"claimName": "shared"}}],
                     "templates": [{"name": "step", "volumes": [
                         {"name": "w", "persistentVolumeClaim": {"claimName": "scratch",
                                                                 "readOnly": False}}]}]},
            "status": status}


# The setting.

def test_user_kinds_are_read_as_kubectl_writes_resources() -> None:
    kinds = Settings.from_environ({"USER_KINDS": " workflows.v1alpha1.argoproj.io ,"
                                                 "pipelineruns.v1.tekton.dev,"}).user_kinds
    assert [(k.collection, k.group, k.plural) for k in kinds] == [
        ("argoproj.io/v1alpha1/workflows", "argoproj.io", "workflows"),
        ("tekton.dev/v1/pipelineruns", "tekton.dev", "pipelineruns")]
    assert Settings.from_environ({}).user_kinds == ()


@pytest.mark.parametrize("value", [
    "Workflow", "workflows.argoproj.io", "workflows.v1alpha1", "workflows.1.argoproj.io",
    "Workflows.v1.argoproj.io", "jobs.v1.batch", "deployments.v1.apps", "pods.v1.",
    "workflows.v1.argoproj.io,workflows.v1alpha1.argoproj.io"])
def test_a_user_kind_that_cannot_be_watched_stops_the_operator_with_a_word(value: str) -> None:
    """Not plural.version.group, a single-label group (`batch`: the built-in Jobs), or the
    same resource twice: said at start, naming the setting."""
    with pytest.raises(SettingsError, match="USER_KINDS"):
        Settings.from_environ({"USER_KINDS": value})


def test_a_built_in_workload_is_refused_as_watched_already() -> None:
    with pytest.raises(customkinds.BadUserKind, match="built-in API group 'batch'"):
        customkinds.parse("jobs.v1.batch")
    assert customkinds.parse("jobs.v1.batch.example.com")[0].group == "batch.example.com"


def test_each_user_kind_needs_list_and_watch_where_claims_are() -> None:
    needed = access.namespaced((WORKFLOWS, PIPELINE_RUNS))
    assert needed[:len(access.NAMESPACED)] == access.NAMESPACED
    assert [str(p) for p in needed[len(access.NAMESPACED):]] == [
        "list workflows.argoproj.io", "watch workflows.argoproj.io",
        "list pipelineruns.tekton.dev", "watch pipelineruns.tekton.dev"]
    assert access.namespaced((WORKFLOWS,)) is access.namespaced((WORKFLOWS,))  # checked once
    assert access.namespaced(()) is access.NAMESPACED
    assert [str(p) for p in access.workloads((WORKFLOWS,))][-2:] == [
        "list workflows.argoproj.io", "watch workflows.argoproj.io"]


# The rule.

@pytest.mark.parametrize(("status", "done"), [
    ({}, False),
    ({"conditions": [{"type": "Succeeded", "status": "Unknown"}]}, False),  # Tekton, running
    ({"conditions": [{"type": "Succeeded", "status": "True"}]}, True),
    ({"conditions": [{"type": "Succeeded", "status": "False"}]}, True),  # failed, cancelled
    ({"conditions": [{"type": "Completed", "status": "True"}]}, True),
    ({"conditions": [{"type": "Complete", "status": "False"}]}, False),
    ({"conditions": [{"type": "Failed", "status": "True"}]}, True),
    ({"conditions": [{"type": "Ready", "status": "True"}]}, False),
    ({"phase": "Running"}, False),
    ({"phase": "Pending"}, False),
    ({"phase": "Succeeded"}, True),
    ({"phase": "Error"}, True),
    ({"completionTime": "2026-01-01T00:00:09Z"}, True),
    ({"finishedAt": "2026-01-01T00:00:09Z"}, True),
    ({"finishedAt": None, "phase": "Running"}, False),
    ({"conditions": ["not a condition"]}, False),
])
def test_the_finished_rule(status: dict[str, Any], done: bool) -> None:
    assert customkinds.finished(status)[0] is done


def test_the_end_is_the_latest_time_the_status_gives() -> None:
    assert customkinds.finished({"conditions": [
        {"type": "Succeeded", "status": "True", "lastTransitionTime": stamp(7)}]}) == (True, at(7))
    assert customkinds.finished({"phase": "Failed", "finishedAt": stamp(8)}) == (True, at(8))
    # Argo: its Completed condition has no time; its finishedAt has.
    assert customkinds.finished(workflow("Failed", finished_at=40)["status"]) == (True, at(40))
    assert customkinds.finished({"conditions": [
        {"type": "Succeeded", "status": "True", "lastTransitionTime": stamp(7)}],
        "completionTime": stamp(9)}) == (True, at(9))
    assert customkinds.finished({"phase": "Failed"}) == (True, None)  # unknown: the later way
    assert customkinds.finished({"completionTime": "garbage"}) == (True, None)


def test_an_argo_workflow_retried_while_the_operator_was_away_moves_the_deadline() -> None:
    """Recorded idle since 10 with a grace of 1,800 s; while the operator restarted, the
    same workflow (created at 0) was retried and failed again at 2,400 (Argo's `retry`
    keeps the object). Its end, read from `finishedAt`, is after the record: the grace
    counts from then at the earliest, not from 10 (the claim deleted at once)."""
    claim = Claim(created=at(0), expiry_period=60, grace_period=1800,
                  recorded_phase=Phase.IDLE, recorded_unused_since=at(10))
    retried = WORKFLOWS.project(workflow("Failed", finished_at=2400)).use()
    decision = decide(claim, [retried], at(2460))
    assert decision.action is Action.NONE
    assert decision.deletes_at is not None
    assert decision.deletes_at >= at(2400 + 1800)


def test_a_workflow_finished_before_a_new_claim_of_its_name_is_no_use_of_it() -> None:
    """Argo keeps finished workflows: yesterday's names `scratch`; today's claim `scratch`
    keeps its expiry countdown, not a grace from now."""
    old = WORKFLOWS.project(workflow("Succeeded", finished_at=-86400)).use()
    claim = Claim(created=at(100), expiry_period=86400, grace_period=600)
    decision = decide(claim, [old], at(200))
    assert decision.phase is Phase.PENDING
    assert decision.deletes_at == at(100 + 1 + 86400)


json_values = st.recursive(st.none() | st.booleans() | st.text(max_size=4) | st.integers(),
                           lambda inner: st.lists(inner, max_size=3)
                           | st.dictionaries(st.text(max_size=4), inner, max_size=3),
                           max_leaves=12)


@given(st.dictionaries(st.sampled_from(["conditions", "phase", "finishedAt", "completionTime",
                                        "type", "status", "lastTransitionTime"]),
                       json_values | st.lists(st.dictionaries(
                           st.sampled_from(["type", "status", "lastTransitionTime"]),
                           json_values | st.sampled_from(["Succeeded", "True", "False",
                                                          "Completed"])), max_size=3)),
       )
def test_any_status_is_read_without_error(status: dict[str, Any]) -> None:
    """A custom resource's status is whatever its controller writes: no shape of it may
    stop the informer (a TypeError there fails every list and watch of the kind)."""
    done, end = customkinds.finished(status)
    assert done or end is None
    body = {"metadata": {"name": "x", "namespace": "ci", "creationTimestamp": stamp(0)},
            "spec": status, "status": status}
    assert WORKFLOWS.project(body).active is not done


def test_a_custom_object_names_the_claims_it_names_anywhere() -> None:
    view = WORKFLOWS.project(workflow("Running"))
    assert view.name == "workflows.argoproj.io/etl"
    assert view.claims == ("scratch", "shared")
    assert view.active
    assert view.use().from_creation  # in use from its creation, as a Job
    done = WORKFLOWS.project(workflow("Succeeded", finished_at=30))
    assert (done.active, done.ended) == (False, at(30))


@given(st.integers(min_value=1, max_value=5000))
def test_claims_are_found_however_deep_they_are(depth: int) -> None:
    """Walked without recursion: a deeply nested object does not stop its informer."""
    node: Any = {"persistentVolumeClaim": {"claimName": "deep"}}
    for level in range(depth):
        node = {"a": [node]} if level % 2 else [node]
    assert customkinds.named_claims({"x": node}, None) == ("deep",)


@given(st.recursive(st.none() | st.booleans() | st.text(max_size=3) | st.integers(),
                    lambda inner: st.lists(inner, max_size=3)
                    | st.dictionaries(st.sampled_from(["claimName", "persistentVolumeClaim",
                                                       "x"]), inner, max_size=3),
                    max_leaves=20))
def test_any_shape_of_spec_is_read_without_error(spec: Any) -> None:
    names = customkinds.named_claims(spec)
    assert all(isinstance(name, str) for name in names)
    assert list(names) == sorted(set(names))


def test_no_selector_finds_a_custom_object() -> None:
    """By name only: a selector that only excludes labels matches an object with none, yet
    a pipeline's object gives its pods no labels the operator knows."""
    run = PIPELINE_RUNS.project(pipeline_run())
    excluding = {"matchExpressions": [{"key": "team", "operator": "DoesNotExist"}]}
    unlabelled_pod = pod_view({"metadata": {"name": "p.1", "namespace": "ci",
                                            "creationTimestamp": stamp(0)}, "spec": {}})
    assert [u.name for u in users_of("other", excluding, [], [run, unlabelled_pod])] == ["p.1"]
    assert [u.name for u in users_of("scratch", excluding, [run], [run])] == [
        "pipelineruns.tekton.dev/build-42"]  # by name, it is


# The decision.

def decided(*views: PodView, now: float) -> Any:
    # Recorded idle since 100 (its first pod's end): due at 160 unless a user holds it.
    claim = Claim(created=at(0), expiry_period=10, grace_period=60,
                  recorded_phase=Phase.IDLE, recorded_unused_since=at(100))
    users = users_of("scratch", None, list(views), [])
    return decide(claim, users, at(now))


def test_a_running_pipeline_keeps_its_claim_between_two_of_its_pods() -> None:
    """The first step's pod has finished and gone; the next has not been created yet.
    Without USER_KINDS nothing would hold the claim; with it, the run does."""
    finished_step = pod_view({"metadata": {"name": "build-42-clone-pod", "namespace": "ci",
                                           "creationTimestamp": stamp(1)},
                              "spec": {"volumes": [{"name": "s", "persistentVolumeClaim": {
                                  "claimName": "scratch"}}]},
                              "status": {"phase": "Succeeded", "containerStatuses": [
                                  {"state": {"terminated": {"finishedAt": stamp(99)}}}]}})
    run = PIPELINE_RUNS.project(pipeline_run())
    decision = decided(finished_step, run, now=500)
    assert decision.phase is Phase.IN_USE
    assert decision.active_users == ("pipelineruns.tekton.dev/build-42",)
    assert decision.action is Action.NONE
    assert decided(finished_step, now=500).action is Action.DELETE  # the gap, without it


def test_a_finished_pipeline_starts_the_grace_at_its_end() -> None:
    """Due at 160 by the record alone; the run that ended at 150 moves it to 210 at least."""
    run = PIPELINE_RUNS.project(pipeline_run(succeeded="True", at_=150))
    decision = decided(run, now=170)
    assert decision.phase is Phase.IDLE
    assert decision.deletes_at is not None
    assert decision.deletes_at >= at(150 + 60)
    assert decision.action is Action.NONE
    assert decided(now=170).action is Action.DELETE  # without it


# The watch.

class KindsApi:
    """An informer.Source whose lists are by kind; watches bring nothing."""

    def __init__(self, lists: dict[str, list[dict[str, Any]]]) -> None:
        self.lists = lists
        self.calls: list[str] = []

    async def list_all(self, kind: str, namespace: str,
                       each: Callable[[dict[str, Any]], None]) -> str:
        self.calls.append(f"list {kind}")
        for item in self.lists.get(kind, []):
            each(item)
        return "10"

    async def watch(self, kind: str, namespace: str, resource_version: str,
                    seconds: int = 300) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        self.calls.append(f"watch {kind}")
        await asyncio.Event().wait()
        yield "BOOKMARK", {}  # never reached

    async def collection_version(self, kind: str, namespace: str) -> int:
        raise AssertionError("not asked")

    async def list_pods(self, namespace: str) -> tuple[list[PodView], int]:
        raise AssertionError("not asked")


def test_a_namespace_with_claims_watches_each_user_kind_and_indexes_its_objects() -> None:
    api = KindsApi({"tekton.dev/v1/pipelineruns": [pipeline_run()]})
    poked: list[list[str]] = []

    async def scenario() -> watching.Watched:
        watched = watching.Watched(api, pods_changed=lambda ns, c, _: poked.append(list(c)),
                                   pvc_changed=lambda key: None,
                                   namespace_synced=lambda ns: None,
                                   kinds=(PIPELINE_RUNS,))
        watched.ensure("ci")
        for _ in range(100):
            await asyncio.sleep(0.001)
        await watched.close()
        return watched

    watched = asyncio.run(scenario())
    assert "list tekton.dev/v1/pipelineruns" in api.calls
    assert "watch tekton.dev/v1/pipelineruns" in api.calls
    assert watched.synced("ci")
    assert [v.name for v in watched.pods_of_claim(("ci", "scratch"))] == [
        "pipelineruns.tekton.dev/build-42"]
    assert ["scratch"] in poked


def test_a_kind_not_served_is_said_at_start_and_again_when_it_goes_later(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """Discovery looked at again every so often: served at start, uninstalled later (one
    error), still gone (no repeat), back (one line)."""
    answers = iter([True, False, False, True])
    rounds: list[float] = []

    async def serves(_api: Any, group_version: str, plural: str) -> bool:
        assert (group_version, plural) == ("tekton.dev/v1", "pipelineruns")
        return next(answers)

    async def sleep(seconds: float) -> None:
        rounds.append(seconds)
        if len(rounds) == 4:
            raise asyncio.CancelledError

    monkeypatch.setattr(kube, "serves", serves)
    with caplog.at_level("INFO", logger="evc_operator.access"), \
            pytest.raises(asyncio.CancelledError):
        asyncio.run(access.check_served(None, (PIPELINE_RUNS,), every=300, sleep=sleep))  # type: ignore[arg-type]
    said = [(r.levelname, r.getMessage().split(",")[0]) for r in caplog.records]
    assert said == [("ERROR", "USER_KINDS names pipelineruns.v1.tekton.dev"),
                    ("INFO", "USER_KINDS: pipelineruns.v1.tekton.dev is served now.")]
    assert rounds == [300] * 4
