"""A StatefulSet scaled below a claim's ordinal: still a user of that claim, inactive, whose
use ended by its last write (workloads._claim_templates, users.users_of).

Its claim templates name `<template>-<statefulset>-<ordinal>` PVCs, an EVC's among them.
Scaled up (its pod of ordinal n used `data-web-n`) and down below n while the operator was
stopped, it named the claim no more: the claim had no user at all after the restart, and
kept its recorded end of use (or its expiry from creation), and was deleted up to a grace
period early. It now lists `data-web-*` beside the names of its ordinals, and a claim
found only by that is used by it as by a Deployment at zero replicas.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from evc_operator import watched as watching
from evc_operator.freshness import PodList, PodSnapshot
from evc_operator.informer import Informer
from evc_operator.lifecycle import Action, Countdown, Decision, Phase, PodUse, decide
from evc_operator.users import PodView, ordinal_marker, pod_view, users_of
from evc_operator.workloads import workload_view
from tests.unit.fakes import FakeApi, evc_body, make, reconcile_now
from tests.unit.test_informer import KindsApi, ScriptedApi
from tests.unit.test_lifecycle import T0, at, claim


def stamp(seconds: float) -> str:
    return at(seconds).strftime("%Y-%m-%dT%H:%M:%SZ")


def web(replicas: int, *, generation: int, written: float | None = None,
        start: int | None = None) -> dict[str, Any]:
    """StatefulSet `web` (created at T0) with the claim template `data`, last written
    (`kubectl scale`) `written` seconds past T0; its status written later still."""
    spec: dict[str, Any] = {"replicas": replicas,
                            "volumeClaimTemplates": [{"metadata": {"name": "data"}}],
                            "template": {"spec": {"containers": [{"name": "c"}]}}}
    if start is not None:
        spec["ordinals"] = {"start": start}
    writes = [] if written is None else [
        {"manager": "kubectl", "operation": "Update", "subresource": "scale",
         "time": stamp(written)},
        {"manager": "kube-controller-manager", "operation": "Update",
         "subresource": "status", "time": stamp(written + 30)}]
    return {"metadata": {"name": "web", "namespace": "jobs", "creationTimestamp": stamp(0),
                         "generation": generation, "managedFields": writes},
            "spec": spec, "status": {}}


def view(body: dict[str, Any]) -> PodView:
    return workload_view("StatefulSet", body)


def decided(claim_name: str, body: dict[str, Any], now: float, **recorded: Any) -> Decision:
    return decide(claim(**recorded), users_of(claim_name, None, [view(body)], []), at(now))


def test_a_scale_down_below_the_claims_ordinal_while_stopped_moves_the_grace_later() -> None:
    """The reviewer's case: `data-web-0` recorded Idle since 00:01:40; `web` scaled up
    (its pod 0 used the claim again) and down to zero at 00:02:30, unseen. The grace
    counts from now (00:03:20), not from the record (deleted at 00:02:40, early)."""
    decision = decided("data-web-0", web(0, generation=3, written=150), now=200,
                       recorded_phase=Phase.IDLE, recorded_unused_since=at(100))
    assert (decision.phase, decision.unused_since) == (Phase.IDLE, at(200))
    assert (decision.action, decision.deletes_at) == (Action.NONE, at(260))


def test_a_claim_never_recorded_as_used_is_kept_past_its_expiry_for_a_later_scale_down() -> None:
    """Created at 00:01:40 and never recorded as used; `web` last written (scaled down)
    at 00:02:30, after: its pod may have used the claim. Not deleted on its expiry
    (00:02:11): Idle, its grace from now."""
    decision = decided("data-web-0", web(0, generation=3, written=150), now=200,
                       created=at(100))
    assert (decision.phase, decision.countdown) == (Phase.IDLE, Countdown.GRACE)
    assert (decision.unused_since, decision.action) == (at(200), Action.NONE)


def test_a_statefulset_whose_spec_never_changed_never_had_other_ordinals() -> None:
    """Generation 1: its range is what it was made with, so ordinal 0 of one made at
    zero replicas never ran, however new: the claim keeps its expiry."""
    body = web(0, generation=1, written=150)
    assert view(body).claims == ()
    decision = decided("data-web-0", body, now=200, created=at(100))
    assert (decision.countdown, decision.deletes_at) == (Countdown.EXPIRY, at(131))
    assert decision.action is Action.DELETE  # due on its expiry: never used


def test_an_old_statefulset_does_not_hold_a_new_claim_named_for_its_other_ordinals() -> None:
    """Last written at 00:00:10, long before the claim (00:01:40): its ordinal 4 was out
    of range since before the claim existed, so never used it. The claim keeps its expiry,
    or its recorded end of use; the StatefulSet is active (one replica) all the while."""
    body = web(1, generation=3, written=10)
    fresh = decided("data-web-4", body, now=200, created=at(100), expiry_period=300)
    assert (fresh.phase, fresh.deletes_at) == (Phase.PENDING, at(401))
    idle = decided("data-web-4", body, now=200, recorded_phase=Phase.IDLE,
                   recorded_unused_since=at(150))
    assert (idle.unused_since, idle.deletes_at) == (at(150), at(210))


def test_a_partial_scale_down_leaves_the_ordinals_beyond_it_an_ended_use() -> None:
    """3 -> 1 replicas at 00:02:30: `data-web-2` is used by it no more, a use that ended
    by that write; `data-web-0` still is, with no end."""
    body = web(1, generation=5, written=150)
    assert view(body).claims == ("data-web-*", "data-web-0")
    assert users_of("data-web-2", None, [view(body)], []) == [PodUse(
        name="StatefulSet/web", active=False, created=T0, ended=at(150), from_creation=False)]
    assert users_of("data-web-0", None, [view(body)], []) == [PodUse(
        name="StatefulSet/web", active=True, created=T0, ended=None, from_creation=False)]
    for recorded in ({"recorded_phase": Phase.IN_USE},
                     {"recorded_phase": Phase.IDLE, "recorded_unused_since": at(120)}):
        decision = decided("data-web-2", body, now=200, **recorded)
        assert (decision.phase, decision.unused_since) == (Phase.IDLE, at(200))
        assert decision.action is Action.NONE


def test_ordinals_below_its_start_are_beyond_it_too() -> None:
    body = web(2, generation=2, written=150, start=5)
    assert [use.active for use in users_of("data-web-4", None, [view(body)], [])] == [False]
    assert [use.active for use in users_of("data-web-6", None, [view(body)], [])] == [True]


def test_a_statefulset_too_large_to_name_each_ordinal_lists_their_range() -> None:
    """Beyond 1,000 replicas, its marker and one range per template (it listed none,
    and was no user of the claims of its own ordinals)."""
    assert view(web(1001, generation=2, written=150)).claims == (
        "data-web-*", "data-web-*0:1001")


@pytest.mark.parametrize(("name", "marker"), [
    ("data-web-5", "data-web-*"), ("data-web-0", "data-web-*"), ("a-b-c-12", "a-b-c-*"),
    ("data-web-05", None),  # no ordinal a StatefulSet's controller writes
    ("data-web-", None), ("data-web-5x", None), ("scratch", None), ("-5", None),
])
def test_the_marker_of_a_claim_name(name: str, marker: str | None) -> None:
    assert ordinal_marker(name) == marker


def test_a_view_that_lists_neither_the_name_nor_its_marker_is_no_user() -> None:
    other = view(web(0, generation=3, written=150))  # lists data-web-*
    assert users_of("data-other-0", None, [other], []) == []
    assert users_of("scratch", None, [other], []) == []


def pod_mounting(name: str, claim_name: str) -> PodView:
    return pod_view({"metadata": {"name": name, "namespace": "jobs",
                                  "creationTimestamp": stamp(0)},
                     "spec": {"volumes": [{"name": "v", "persistentVolumeClaim": {
                         "claimName": claim_name}}]},
                     "status": {"phase": "Running"}})


def test_the_index_and_a_fresh_list_find_a_statefulset_by_the_claims_marker() -> None:
    sts, pod = view(web(1, generation=3, written=150)), pod_mounting("web-0", "data-web-0")
    watched = watching.Watched(ScriptedApi(lists=[], watches=[]),
                               pods_changed=lambda *_: None, pvc_changed=lambda _key: None,
                               namespace_synced=lambda _namespace: None)
    users = watching.NamespacePods()
    for each in (sts, pod):
        users.update(each.name, None, each)
    watched.claims["jobs"] = users
    fresh = PodList.of(PodSnapshot([sts, pod]))
    for found in (lambda name: watched.pods_of_claim(("jobs", name)), fresh.mounting):
        assert [each.name for each in found("data-web-5")] == ["StatefulSet/web"]
        # Listed under both the name and the marker: found once.
        assert sorted(each.name for each in found("data-web-0")) == ["StatefulSet/web",
                                                                     "web-0"]
        assert list(found("scratch")) == []


def test_a_deletion_proof_finds_the_statefulset_by_the_claims_marker() -> None:
    """`data-web-2`, never used that the operator saw, is due on its expiry; the proof's
    list holds `web`, scaled to one replica at 00:00:50, after the claim was made: it may
    have used it. Not deleted."""
    body = evc_body()
    body["metadata"]["name"] = "data-web-2"
    fake = FakeApi(fresh_pods=[])

    async def current_pods(_namespace: str) -> PodSnapshot:
        return PodSnapshot([view(web(1, generation=3, written=50))])

    scheduler, _index = make(fake, indexed_pods=[], body=body, lister=current_pods)
    reconcile_now(scheduler, ("jobs", "data-web-2"))
    assert not any(call.startswith("delete") for call in fake.calls)
    assert "patch_status:Idle" in fake.calls


def test_a_write_of_a_listed_statefulset_looks_again_at_its_other_ordinals_claims() -> None:
    """Scaled 1 -> 2, its ordinal 5 still beyond it: the claim `data-web-5` is named in no
    view, yet its use by `web` now ends later. Its claim is looked at again (not only at
    its deadline), and no unrelated claim is."""
    pvcs = [{"metadata": {"name": name, "namespace": "jobs"}}
            for name in ("data-web-5", "data-other-5", "scratch")]
    api = KindsApi({"persistentvolumeclaims": pvcs,
                    "apps/v1/statefulsets": [web(1, generation=3, written=100)]})
    poked: list[list[str]] = []

    async def scenario() -> None:
        watched = watching.Watched(api, pods_changed=lambda _ns, claims, _: poked.append(
            sorted(claims)), pvc_changed=lambda _key: None, namespace_synced=lambda _ns: None)
        watched.ensure("jobs")
        for _ in range(100):
            await asyncio.sleep(0.001)
        assert watched.synced("jobs")
        # Its arrival, while the namespace was being listed: the listing's end looks at
        # every claim anyway.
        assert poked == [["data-web-*", "data-web-0"]]
        statefulsets = next(informer for informer in watched.workloads["jobs"]
                            if isinstance(informer, Informer)
                            and informer.kind == "apps/v1/statefulsets")
        before = statefulsets.items["web"]
        statefulsets.changed("web", before, view(web(2, generation=4, written=160)))
        await watched.close()

    asyncio.run(scenario())
    assert poked[1] == ["data-web-*", "data-web-0", "data-web-1", "data-web-5"]


def test_an_active_statefulsets_use_has_no_end_whatever_its_last_write() -> None:
    """Its view keeps its last write for the ordinals beyond it; its own use, active, has
    none (as before: a user's change is told by its use)."""
    sts = view(web(1, generation=3, written=150))
    assert sts.ended == at(150)
    assert sts.use().ended is None
