"""Workloads as users: which may still create pods that use a claim, and since when not."""

from __future__ import annotations

import dataclasses
import datetime
from typing import Any

import pytest

from evc_operator.lifecycle import Action, Countdown, Phase, PodUse, decide
from evc_operator.users import PodView, mounting_views, names, pod_view, users_of
from evc_operator.workloads import KINDS, MAX_ORDINALS, may_create_pods, workload_view
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
    assert view.claims == ("scratch",)
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


@pytest.mark.parametrize(("kind", "selector"), [
    # w-1, evicted, made again once w-0 is Ready: the labels its controller gives it.
    ("StatefulSet", {"matchLabels": {"app": "db", "statefulset.kubernetes.io/pod-name": "w-1"}}),
    ("StatefulSet", {"matchExpressions": [
        {"key": "apps.kubernetes.io/pod-index", "operator": "In", "values": ["1"]}]}),
    # An Indexed Job's index 3, backing off before its retry.
    ("Job", {"matchLabels": {"app": "db", "batch.kubernetes.io/job-completion-index": "3"}}),
    ("DaemonSet", {"matchLabels": {"app": "db", "pod-template-generation": "2"}}),
    ("DaemonSet", {"matchLabels": {"controller-revision-hash": "7d4b5c9d8f"}}),  # bare
    ("Deployment", {"matchLabels": {"app": "db", "pod-template-hash": "5d8f"}}),
    # The Jobs a CronJob will make get these when they are made.
    ("CronJob", {"matchLabels": {"batch.kubernetes.io/job-name": "w-29000000"}}),
])
def test_a_selector_on_labels_a_controller_gives_each_pod_finds_its_workload(
        kind: str, selector: dict[str, Any]) -> None:
    """Its template lacks them, yet each pod it makes has them: until it makes that pod
    again, the workload is the user that holds the claim (a review: the claim was deleted
    between two pods)."""
    view = workload_view(kind, workload(kind, claim_name=None, app="db"))
    assert [user.name for user in users_of("scratch", selector, [], [view])] == [f"{kind}/w"]
    # The template's own labels still decide the rest, and a pod is judged by its own.
    other = {**selector, "matchLabels": {**selector.get("matchLabels", {}), "app": "web"}}
    assert users_of("scratch", other, [], [view]) == []
    pod = pod_view({"metadata": {"name": "db-0", "namespace": "ns", "labels": {"app": "db"},
                                 "creationTimestamp": CREATED},
                    "spec": {}, "status": {"phase": "Running"}})
    assert users_of("scratch", selector, [], [pod]) == []


@pytest.mark.parametrize(("kind", "selector"), [
    ("StatefulSet", {"matchLabels": {"statefulset.kubernetes.io/pod-name": "db-1"}}),
    ("StatefulSet", {"matchExpressions": [{"key": "controller-revision-hash",
                                           "operator": "In", "values": ["db-5d8f"]}]}),
    ("CronJob", {"matchLabels": {"job-name": "nightly-29000000"}}),
])
def test_a_label_a_controller_names_after_its_workload_finds_that_workload_only(
        kind: str, selector: dict[str, Any]) -> None:
    """`w` never makes pod db-1, nor revision db-5d8f, nor Job nightly-29000000: taken as
    matching every workload of the kind, such a claim was held by any (a review)."""
    view = workload_view(kind, workload(kind, claim_name=None, app="cache"))
    assert users_of("scratch", selector, [], [view]) == []


def at_zero(*, generation: int, writes: dict[str, str] | None = None,
            created: str = CREATED) -> dict[str, Any]:
    """A Deployment at zero replicas; `writes` are its managedFields' times by subresource
    ("" for the object itself)."""
    body = workload("Deployment", spec={"replicas": 0})
    body["metadata"].update(generation=generation, creationTimestamp=created, managedFields=[
        {"manager": "m", "operation": "Update", "time": stamp,
         **({"subresource": sub} if sub else {})} for sub, stamp in (writes or {}).items()])
    return body


def decided(body: dict[str, Any], claim_created: float, now: float,
            **recorded: Any) -> Any:
    use = users_of("scratch", None, [workload_view("Deployment", body)], [])
    return decide(claim(created=at(claim_created), **recorded), use, at(now))


def test_a_workload_at_zero_since_before_its_claim_existed_starts_no_grace() -> None:
    """Scaled to zero (00:00:50) before the claim was created (00:01:40): it never used
    the claim, which keeps its expiry countdown (30 s) instead of the grace (60 s).
    Its status written since says nothing about its replicas."""
    body = at_zero(generation=4, writes={"": "2026-01-01T00:00:10Z",
                                         "scale": "2026-01-01T00:00:50Z",
                                         "status": "2026-01-01T00:01:50Z"})
    assert may_create_pods("Deployment", body) == (
        False, datetime.datetime(2026, 1, 1, 0, 0, 50, tzinfo=datetime.UTC))
    decision = decided(body, claim_created=100, now=101)
    assert (decision.phase, decision.countdown) == (Phase.PENDING, Countdown.EXPIRY)
    assert decision.deletes_at == at(100 + 1 + 30)


def test_a_workload_created_at_zero_and_never_changed_is_no_use_even_if_newer() -> None:
    body = at_zero(generation=1, created="2026-01-01T00:03:00Z",
                   writes={"": "2026-01-01T00:03:00Z"})
    decision = decided(body, claim_created=100, now=200, expiry_period=300)
    assert (decision.phase, decision.countdown) == (Phase.PENDING, Countdown.EXPIRY)
    recorded = decided(body, claim_created=0, now=200, recorded_phase=Phase.IDLE,
                       recorded_unused_since=at(150))
    assert recorded.unused_since == at(150)  # no unseen use after the recorded end


@pytest.mark.parametrize("writes", [
    {"scale": "2026-01-01T00:01:40Z"},  # in the claim's own second: may be after it
    {"": "2026-01-01T00:01:45Z"},  # written after the claim existed: may have run
    {},  # no record of its writes: it may have run
])
def test_a_workload_that_may_have_been_active_after_the_claim_counts(
        writes: dict[str, str]) -> None:
    decision = decided(at_zero(generation=3, writes=writes), claim_created=100, now=105)
    assert decision.phase is Phase.IDLE
    # From now, or past its last write's second (stamps are cut to the second).
    assert decision.unused_since in (at(105), at(106))


def test_a_scale_down_after_the_recorded_end_moves_the_clock_later() -> None:
    """After a restart: scaled down (00:02:30) after the recorded end (00:02:00), unseen,
    so it may have used the claim meanwhile: the grace counts from now."""
    body = at_zero(generation=3, writes={"scale": "2026-01-01T00:02:30Z"})
    decision = decided(body, claim_created=0, now=200, recorded_phase=Phase.IDLE,
                       recorded_unused_since=at(120))
    assert decision.unused_since == at(200)


def statefulset(replicas: int | None, *, generation: int = 1, **spec: Any) -> dict[str, Any]:
    """A StatefulSet `w` with claim templates `data` and `cache`, its spec never changed
    unless `generation` says so (then it names its other ordinals too:
    test_statefulset_ordinals.py)."""
    body = workload("StatefulSet", claim_name=None,
                    spec={**spec, "volumeClaimTemplates": [{"metadata": {"name": "data"}},
                                                           {"metadata": {"name": "cache"}}]})
    body["metadata"]["generation"] = generation
    if replicas is not None:
        body["spec"]["replicas"] = replicas
    return body


def test_a_statefulset_uses_the_claims_its_claim_templates_name_for_its_ordinals() -> None:
    """Its controller mounts `<template>-<name>-<ordinal>` if such a PVC exists, an EVC's
    among them: between two pods of that ordinal (evicted, not yet made again while an
    earlier one is not Ready), the claim is still the StatefulSet's."""
    view = workload_view("StatefulSet", statefulset(2))
    assert view.claims == ("cache-w-0", "cache-w-1", "data-w-0", "data-w-1")
    use = users_of("data-w-1", None, [view], [])
    decision = decide(claim(recorded_phase=Phase.IN_USE), use, at(100))
    assert (decision.phase, decision.active_users) == (Phase.IN_USE, ("StatefulSet/w",))
    # Beyond its replicas, and its spec never changed: never its.
    assert users_of("data-w-2", None, [view], []) == []


@pytest.mark.parametrize(("replicas", "spec", "claims"), [
    (None, {}, ("cache-w-0", "data-w-0")),  # replicas unset: 1
    (2, {"ordinals": {"start": 5}}, ("cache-w-5", "cache-w-6", "data-w-5", "data-w-6")),
    (0, {}, ()),
    # Too many to name: per template its marker and range, not 1,001 names (the marker
    # even at generation 1: an index finds it there by a claim's name).
    (1001, {}, ("cache-w-*", "cache-w-*0:1001!", "data-w-*", "data-w-*0:1001!")),
])
def test_a_statefulsets_ordinals_follow_its_replicas_and_start(
        replicas: int | None, spec: dict[str, Any], claims: tuple[str, ...]) -> None:
    assert workload_view("StatefulSet", statefulset(replicas, **spec)).claims == claims


def large(replicas: int, *, name: str = "web", generation: int = 1,
          templates: tuple[str, ...] = ("data", "cache"), **spec: Any) -> PodView:
    """The view of a StatefulSet of more replicas than it names ordinals (MAX_ORDINALS),
    last written at 00:02:30 (its `kubectl scale`)."""
    body = statefulset(replicas, generation=generation, **spec)
    body["spec"]["volumeClaimTemplates"] = [{"metadata": {"name": template}}
                                            for template in templates]
    body["metadata"].update(name=name, managedFields=[
        {"manager": "kubectl", "operation": "Update", "subresource": "scale",
         "time": "2026-01-01T00:02:30Z"}])
    return workload_view("StatefulSet", body)


ACTIVE = PodUse(name="StatefulSet/web", active=True, created=at(0), ended=None,
                from_creation=False)


@pytest.mark.parametrize("replicas", [MAX_ORDINALS + 1, 5000, 10**9])
@pytest.mark.parametrize("generation", [1, 3])
def test_a_large_statefulset_uses_the_claim_of_any_ordinal_in_its_range(
        replicas: int, generation: int) -> None:
    """The reviewer's case: `web`, 1,200 replicas, its pod web-5 crash-looping, web-900
    evicted and not made again (OrderedReady) for as long: `data-web-900` is still its,
    IN_USE, not deleted after the grace period. Found by the index as by a fresh list
    (under the claim's marker), and told apart without a name per ordinal."""
    view = large(replicas, generation=generation)
    assert len(view.claims) == 4  # whatever its replicas
    index = {entry: (view,) for entry in view.claims}
    for name in ("data-web-900", "data-web-0", f"cache-web-{replicas - 1}"):
        mounting = mounting_views(name, lambda entry: index.get(entry, ()))
        assert list(mounting) == [view]
        use = users_of(name, None, mounting, [])
        assert use == [dataclasses.replace(ACTIVE, name="StatefulSet/web")]
        assert names(view, name)
        decision = decide(claim(recorded_phase=Phase.IDLE, recorded_unused_since=at(100)),
                          use, at(500))
        assert (decision.phase, decision.action) == (Phase.IN_USE, Action.NONE)


def test_a_large_statefulsets_range_honours_its_ordinals_start() -> None:
    view = large(2000, ordinals={"start": 100})
    assert users_of("data-web-100", None, [view], []) == [ACTIVE]
    assert users_of("data-web-2099", None, [view], []) == [ACTIVE]
    for outside in ("data-web-99", "data-web-2100", "data-web-0"):
        assert users_of(outside, None, [view], []) == []  # generation 1: never its


@pytest.mark.parametrize(("generation", "users"), [
    (1, []),  # its spec never changed: no other ordinal was ever its
    (3, [PodUse(name="StatefulSet/web", active=False, created=at(0), ended=at(150),
                from_creation=False)]),  # scaled below it: a use ended by its last write
])
def test_a_large_statefulsets_ordinals_outside_its_range_are_as_a_small_ones(
        generation: int, users: list[PodUse]) -> None:
    view, small = large(5000, generation=generation), large(2, generation=generation)
    assert users_of("data-web-4999", None, [view], []) == [ACTIVE]  # its last ordinal
    for name in ("data-web-5000", "data-web-123456"):
        assert users_of(name, None, [view], []) == users
        assert users_of("data-web-2", None, [small], []) == users
        assert names(view, name) is bool(users)
    assert view.use() == ACTIVE  # its own use, active, has no end


@pytest.mark.parametrize("name", [
    "data-web-0900", "data-web-00", "data-web-+900", "data-web-900x", "data-web-",
    "data-web-9 ", "data-web-1_000", "data-web-٩",
    "web-900", "data-900", "data-webs-900", "xdata-web-900",
])
@pytest.mark.parametrize("generation", [1, 3])
def test_a_large_statefulset_matches_only_canonical_ordinals_of_its_own_names(
        name: str, generation: int) -> None:
    """A leading zero is no name its controller writes (web-900's claim is data-web-900),
    nor is a prefix that only ends like its own."""
    view = large(5000, generation=generation)
    assert users_of("data-web-900", None, [view], []) == [ACTIVE]
    assert users_of(name, None, [view], []) == []
    assert not names(view, name)


def test_dashes_in_its_template_and_name_are_matched_by_the_whole_prefix() -> None:
    """`my-data-my-web-3` is template `my-data` of `my-web`'s ordinal 3, told from its
    whole prefix, not by splitting at a dash."""
    view = large(1500, name="my-web", templates=("my-data", "data"))
    mine = dataclasses.replace(ACTIVE, name="StatefulSet/my-web")
    for name in ("my-data-my-web-3", "my-data-my-web-1499", "data-my-web-3"):
        assert users_of(name, None, [view], []) == [mine]
    for name in ("data-my-data-my-web-3", "my-data-web-3", "data-web-3", "my-web-3",
                 "my-data-my-web-1500", "my-data-my-web-03"):
        assert users_of(name, None, [view], []) == []
