"""The per-claim reconcile: the safety rules before a deletion, with fakes of the API and
the pod index (seams.py, tests/unit/fakes.py) in place of the cluster.

These are unit tests of the operator's own logic (what it asks, in which order, and
what it refuses to do); the real API server is exercised by tests/integration.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
from typing import Any, cast

import orjson
import pytest

from evc_operator import errors, evc, informer, lifecycle, metrics, status
from evc_operator import watched as watching
from evc_operator.claims import owner_reference, pvc_view
from evc_operator.deletion import CONFLICT_RETRY
from evc_operator.freshness import PodSnapshot
from evc_operator.limiter import Bounds
from evc_operator.settings import Settings
from evc_operator.users import pod_view
from tests.unit.fakes import (
    NOW,
    FakeApi,
    drain,
    evc_body,
    make,
    pod_body,
    reconcile_now,
    sealed,
    view_of,
)
from tests.unit.support import T0, Clock, settle


def test_due_claim_is_rechecked_then_deleted_with_preconditions() -> None:
    fake = FakeApi(fresh_pods=[])
    reconciler, _index = make(fake, indexed_pods=[])
    reconcile_now(reconciler, ("jobs", "scratch"))
    # One write: the delete itself, only if the claim is still the version decided on.
    assert fake.calls == ["list_pods", "delete:evc-uid:10", "event:Deleted"]
    assert ("jobs", "scratch") not in reconciler.claims


def test_a_deletion_whose_view_is_made_already_keeps_its_slot() -> None:
    # In a wave, the claims decided after their namespace's proof came in would give their
    # slot back and wait in line behind the whole wave again, for a view made already.
    fake = FakeApi(fresh_pods=[])
    scheduler, _index = make(fake, indexed_pods=[])
    gave_back: list[str] = []
    unslotted = scheduler.reconciler.waiting

    async def waiting(view: Any) -> Any:
        gave_back.append("slot")
        return await unslotted(view)

    scheduler.reconciler.waiting = waiting
    claim = scheduler.claims.get(("jobs", "scratch"))
    assert claim is not None

    async def scenario() -> None:
        deadline = lifecycle.decide(claim.view.claim, [], NOW).deletes_at
        assert deadline is not None
        scheduler.freshness.prepare("jobs", deadline)  # the proof begun at the deadline
        await settle()
        assert scheduler.freshness.ready("jobs", deadline)
        await scheduler.limit.acquire()  # the reconciliation's own slot
        await scheduler.reconcile(("jobs", "scratch"))
        scheduler.limit.release()

    asyncio.run(scenario())
    assert gave_back == []
    assert fake.calls == ["list_pods", "delete:evc-uid:10", "event:Deleted"]


def test_a_user_that_only_the_fresh_read_sees_stops_the_deletion() -> None:
    fake = FakeApi(fresh_pods=[pod_body("newcomer")])
    reconciler, _index = make(fake, indexed_pods=[])
    reconcile_now(reconciler, ("jobs", "scratch"))
    assert not any(call.startswith("delete") for call in fake.calls)
    assert "patch_status:InUse" in fake.calls


def test_a_user_only_the_proof_saw_is_not_taken_back_while_the_informer_lags() -> None:
    # At the deadline the proof sees a pod created a moment before, whose watch event has
    # not reached the informer: InUse. Decided again before the informer catches up (the
    # echo of that very status write, say), the claim must not go back to Idle with a new
    # countdown and an Idle Event on an index that lacks the pod.
    fake = FakeApi(fresh_pods=[])
    lagging = [True]

    async def current_pods(namespace: str) -> PodSnapshot:
        return PodSnapshot([pod_view(pod_body("newcomer"))], behind=lambda: lagging[0])

    reconciler, index = make(fake, indexed_pods=[], lister=current_pods)
    key = ("jobs", "scratch")
    reconcile_now(reconciler, key)
    assert fake.calls == ["patch_status:InUse", "event:InUse"]
    fake.calls.clear()
    reconcile_now(reconciler, key)
    assert fake.calls == []  # still InUse: nothing to write, nothing to tell
    # Once the informer has come as far as the proof, the index decides again: here it
    # has seen the pod come and finish.
    lagging[0] = False
    index.by_claim[key] = index.in_namespace["jobs"] = [
        pod_view(pod_body("newcomer", "Succeeded"))]
    reconcile_now(reconciler, key)
    assert fake.calls == ["patch_status:Idle", "event:Idle"]
    claim = reconciler.claims.get(key)
    assert claim is not None
    assert claim.ahead is None  # the proof's view is let go


def test_a_users_unreported_end_is_recorded_by_the_servers_clock_taken_the_late_way() -> None:
    """Recorded InUse, its user now gone (deleted: no reported end). The server's clock
    is known to be between 34.6 and 35.4 s past T0: the user went at 35.4 at the latest,
    so the claim is unused since 36 (by the early reading, 35: up to a second early)."""
    body = evc_body()
    body["status"] = sealed({"phase": "InUse", "conditions": [
        {"type": "PvcReady", "status": "True", "reason": "PvcReady"}]})
    fake = FakeApi(fresh_pods=[])
    reconciler, _index = make(fake, indexed_pods=[], body=body,
                              clock=lambda: T0 + datetime.timedelta(seconds=34.6),
                              latest=lambda: T0 + datetime.timedelta(seconds=35.4))
    reconcile_now(reconciler, ("jobs", "scratch"))
    assert "patch_status:Idle" in fake.calls
    assert fake.evc is not None
    assert fake.evc["status"]["unusedSince"] == "2026-01-01T00:00:36Z"


def test_an_unreachable_api_server_stops_the_deletion() -> None:
    fake = FakeApi(fresh_pods=errors.ApiException(status=503, reason="Service Unavailable"))
    reconciler, _index = make(fake, indexed_pods=[])
    with pytest.raises(errors.ApiException):
        reconcile_now(reconciler, ("jobs", "scratch"))
    assert fake.calls == ["list_pods"]


def test_no_deletion_before_the_pod_view_is_complete() -> None:
    fake = FakeApi(fresh_pods=[])
    reconciler, _index = make(fake, indexed_pods=[], complete=False)
    reconcile_now(reconciler, ("jobs", "scratch"))
    assert fake.calls == []
    assert ("jobs", "scratch") in reconciler.queue.later  # it will look again


def test_an_active_user_in_the_index_means_no_api_read_and_no_deletion() -> None:
    fake = FakeApi(fresh_pods=[])
    reconciler, _index = make(fake, indexed_pods=[pod_body("worker")])
    reconcile_now(reconciler, ("jobs", "scratch"))
    assert "list_pods" not in fake.calls
    assert not any(call.startswith("delete") for call in fake.calls)


def test_a_changed_claim_is_read_back_and_decided_again_at_once() -> None:
    fake = FakeApi(fresh_pods=[])
    fake.delete_error = errors.Conflict("Conflict")
    fake.evc = evc_body()
    fake.evc["metadata"]["resourceVersion"] = "12"  # labelled since; the watch lags
    reconciler, _index = make(fake, indexed_pods=[])
    drain(reconciler)
    reconcile_now(reconciler, ("jobs", "scratch"))
    assert fake.calls == ["list_pods", "delete:conflict", "read_evc"]
    assert view_of(reconciler, ("jobs", "scratch")).resource_version == "12"
    assert reconciler.queue.waiting(("jobs", "scratch"))


def test_a_refused_deletion_whose_read_brings_nothing_newer_waits_a_second() -> None:
    """Deleted again at once on the same view, it was refused again at once, thousands
    of times a second, until the watch brought the change (a review's loop)."""
    fake = FakeApi(fresh_pods=[])
    fake.delete_error = errors.Conflict("Conflict")
    reconciler, _index = make(fake, indexed_pods=[])  # the read: the view's own version
    drain(reconciler)
    reconcile_now(reconciler, ("jobs", "scratch"))
    assert fake.calls == ["list_pods", "delete:conflict", "read_evc"]
    assert not reconciler.queue.waiting(("jobs", "scratch"))
    assert reconciler.queue.later.get(("jobs", "scratch")) == NOW + CONFLICT_RETRY


def test_a_refused_deletion_of_a_claim_gone_since_forgets_it() -> None:
    fake = FakeApi(fresh_pods=[])
    fake.delete_error = errors.Conflict("Conflict")
    reconciler, _index = make(fake, indexed_pods=[])
    drain(reconciler)

    async def gone(namespace: str, name: str) -> None:
        return None

    fake.read_evc = gone  # type: ignore[method-assign]
    reconcile_now(reconciler, ("jobs", "scratch"))
    assert reconciler.claims.get(("jobs", "scratch")) is None


def test_unchanged_state_writes_nothing() -> None:
    fake = FakeApi(fresh_pods=[])
    reconciler, _index = make(fake, indexed_pods=[pod_body("worker")])
    reconcile_now(reconciler, ("jobs", "scratch"))
    written = [call for call in fake.calls if call.startswith("patch_status")]
    assert len(written) == 1  # Pending -> InUse
    fake.calls.clear()
    reconcile_now(reconciler, ("jobs", "scratch"))  # same world, again
    assert fake.calls == []


def test_without_lifecycle_events_only_warnings_are_posted() -> None:
    fake = FakeApi(fresh_pods=[])
    quiet = Settings(lifecycle_events=False)
    reconciler, _ = make(fake, indexed_pods=[], settings=quiet)
    reconcile_now(reconciler, ("jobs", "scratch"))
    assert fake.calls == ["list_pods", "delete:evc-uid:10"]  # no Deleted Event
    reconciler, _index = make(fake, indexed_pods=[], settings=quiet)
    fake.calls.clear()
    view = view_of(reconciler, ("jobs", "scratch"))
    asyncio.run(reconciler.reconciler.announcer.announce(
        view, status.Event("Warning", "InvalidSpec", "bad"), reconciler.logger_for(view)))
    assert fake.calls == ["event:InvalidSpec"]


def test_the_pvc_showing_up_after_its_creation_costs_no_status_write() -> None:
    fake = FakeApi(fresh_pods=[])
    reconciler, _index = make(fake, indexed_pods=[pod_body("worker")])
    reconcile_now(reconciler, ("jobs", "scratch"))
    said = {"type": "PvcReady", "status": "False", "reason": "Pending",
            "message": "Created PersistentVolumeClaim scratch of 1Gi. Not bound yet."}
    body = evc_body()
    body["metadata"]["resourceVersion"] = "20"
    body["status"] = {**view_of(reconciler, ("jobs", "scratch")).status, "conditions": [
        *(c for c in view_of(reconciler, ("jobs", "scratch")).status["conditions"]
          if c["type"] != "PvcReady"), {**said, "lastTransitionTime": "2026-01-01T00:00:01Z",
                                        "observedGeneration": 1}]}
    reconciler.observe_evc("MODIFIED", body)
    fake.calls.clear()
    reconcile_now(reconciler, ("jobs", "scratch"))  # the PVC is in the index now
    assert fake.calls == []
    kept = next(c for c in view_of(reconciler, ("jobs", "scratch")).status["conditions"]
                if c["type"] == "PvcReady")
    assert (kept["reason"], kept["message"]) == (said["reason"], said["message"])


def test_a_status_rewritten_by_someone_else_cannot_make_a_deadline_earlier() -> None:
    fake = FakeApi(fresh_pods=[pod_body("worker", "Succeeded")])
    reconciler, index = make(fake, indexed_pods=[pod_body("worker")])
    reconcile_now(reconciler, ("jobs", "scratch"))
    assert "patch_status:InUse" in fake.calls
    # The user ends; someone else claims the claim has been idle since long ago.
    ended = [pod_view(pod_body("worker", "Succeeded"))]
    index.by_claim[("jobs", "scratch")] = ended
    forged = evc_body()
    forged["metadata"]["resourceVersion"] = "12"
    forged["status"] = {"phase": "Idle", "unusedSince": "2026-01-01T00:00:01Z"}
    reconciler.observe_evc("MODIFIED", forged)
    fake.calls.clear()
    reconcile_now(reconciler, ("jobs", "scratch"))
    assert not any(call.startswith(("delete", "list_pods")) for call in fake.calls)
    assert "patch_status:Idle" in fake.calls
    claim = reconciler.claims.get(("jobs", "scratch"))
    assert claim is not None
    assert claim.countdown is not None
    assert claim.countdown.unused_since == NOW


def test_the_informer_lookups_serve_mounting_pods_and_a_selector_claim() -> None:
    bodies = [pod_body("worker"), {**pod_body("bystander"), "spec": {}},
              {**pod_body("labelled"), "spec": {}}]
    bodies[2]["metadata"] = {**bodies[2]["metadata"], "labels": {"app": "batch"}}
    watched = watching.Watched(cast(Any, None), pods_changed=lambda *_: None,
                               pvc_changed=lambda _key: None, namespace_synced=lambda _ns: None)
    held = informer.Informer(cast(Any, None), "pods", "jobs", pod_view, lambda *_: None,
                             lambda: None)
    watched.pods["jobs"], watched.claims["jobs"] = held, watching.NamespacePods()
    for body in bodies:  # what the informer does with each watch event
        view = pod_view(body)
        held.items[view.name] = view
        watched.claims["jobs"].update(view.name, None, view)
    mounting = watched.pods_of_claim(("jobs", "scratch"))
    in_namespace = watched.pods_in("jobs")
    assert [pod.name for pod in mounting] == ["worker"]
    assert [pod.name for pod in in_namespace] == ["worker", "bystander", "labelled"]
    assert mounting[0] is in_namespace[0]  # one view per pod

    fake = FakeApi(fresh_pods=[])
    reconciler, _index = make(fake, indexed_pods=[], watched=watched)
    body = evc_body()
    body["metadata"]["resourceVersion"] = "12"
    body["spec"]["selector"] = {"matchLabels": {"app": "batch"}}
    reconciler.observe_evc("MODIFIED", body)
    reconcile_now(reconciler, ("jobs", "scratch"))
    assert fake.calls[0] == "patch_status:InUse"
    claim = reconciler.claims.get(("jobs", "scratch"))
    assert claim is not None
    assert claim.seen_users == ("labelled", "worker")


def test_a_pod_that_finished_after_the_proof_counts_as_finished() -> None:
    # The proof made ahead saw the user running; it finished before the deadline, and the
    # live index knows. The proof's copy must not bring the user back to life.
    fake = FakeApi(fresh_pods=[])
    clock = Clock()
    clock.now = T0 + datetime.timedelta(seconds=82)  # 3 s before the deadline

    async def current_pods(namespace: str) -> PodSnapshot:
        return PodSnapshot([pod_view(pod_body("worker", "Running"))], live=lambda: True)

    body = evc_body()
    body["status"] = sealed({"phase": "Idle", "unusedSince": "2026-01-01T00:00:55Z"})
    reconciler, _ = make(fake, [pod_body("worker", "Succeeded")], lister=current_pods,
                         clock=clock, body=body)

    async def scenario() -> None:
        reconciler.freshness.pods.prefetch("jobs", not_before=clock.now)
        await settle()
        clock.advance(4)  # past the deadline: 00:00:55 + 30 s grace
        await reconciler.reconcile(("jobs", "scratch"))

    asyncio.run(scenario())
    assert "delete:evc-uid:10" in fake.calls
    assert not any(call.startswith("patch_status:InUse") for call in fake.calls)


def test_a_deletion_decided_late_rests_on_the_proof_begun_at_its_deadline() -> None:
    # Decided 1.5 s after the deadline (a backlog): the proof begun at the deadline holds
    # every change up to it. Waiting for a later proof would only make the deletion later.
    fake = FakeApi(fresh_pods=[])
    clock = Clock()
    clock.now = T0 + datetime.timedelta(seconds=85)  # the deadline: 00:00:55 + 30 s grace
    listed: list[datetime.datetime] = []

    async def current_pods(namespace: str) -> PodSnapshot:
        listed.append(clock.now)
        return PodSnapshot([pod_view(pod_body("worker", "Succeeded"))])

    body = evc_body()
    body["status"] = sealed({"phase": "Idle", "unusedSince": "2026-01-01T00:00:55Z"})
    reconciler, _ = make(fake, [pod_body("worker", "Succeeded")], lister=current_pods,
                         clock=clock, body=body)

    async def scenario() -> None:
        reconciler.freshness.prepare("jobs", clock.now)
        await settle()
        clock.advance(1.5)
        await reconciler.reconcile(("jobs", "scratch"))

    asyncio.run(scenario())
    assert "delete:evc-uid:10" in fake.calls
    assert listed == [T0 + datetime.timedelta(seconds=85)]  # one proof: the deadline's


def test_an_event_that_cannot_be_posted_never_fails_the_work_it_tells_of() -> None:
    fake = FakeApi(fresh_pods=[])
    reconciler, _index = make(fake, indexed_pods=[pod_body("worker")])
    fake.event_error = ConnectionResetError("the API server went away")
    reconcile_now(reconciler, ("jobs", "scratch"))  # does not raise
    assert "patch_status:InUse" in fake.calls
    assert "event refused" in fake.calls


def test_what_is_kept_of_an_evc_is_json_without_the_parts_no_decision_reads() -> None:
    body = evc_body()
    body["metadata"]["managedFields"] = [{"manager": "evc-operator", "fieldsV1": {}}]
    body["metadata"]["annotations"] = {
        "kubectl.kubernetes.io/last-applied-configuration": '{"a copy": "of the claim"}',
        "evc.zalando.org/keep": "true"}
    body["metadata"]["labels"] = {"team": "data"}
    kept = evc.slim(body)
    assert "status" not in kept
    assert "managedFields" not in kept["metadata"]
    assert "annotations" not in kept["metadata"]  # the keep annotation is in the view
    assert evc.evc_view(body, Settings()).claim.keep
    assert kept["spec"] == body["spec"]
    assert kept["metadata"]["uid"] == body["metadata"]["uid"]
    assert kept["metadata"]["labels"] == {"team": "data"}


def test_labels_too_large_to_copy_are_not_kept_and_no_pvc_is_made_for_them() -> None:
    body = evc_body()
    del body["status"]
    body["metadata"]["labels"] = {f"label-{i:04d}": "v" * 63 for i in range(200)}  # 14 KB
    view = evc.evc_view(body, Settings())
    assert view.labels_too_large == 200 * (10 + 63)
    assert len(orjson.dumps(view.body)) < 1000
    fake = FakeApi(fresh_pods=[])
    fake.body = body
    reconciler, index = make(fake, [pod_body("worker")], body=body)
    index.pvcs.clear()
    reconcile_now(reconciler, ("jobs", "scratch"))
    assert "create_pvc" not in fake.calls
    assert "event:LabelsTooLarge" in fake.calls
    written = view_of(reconciler, ("jobs", "scratch")).status
    ready = next(c for c in written["conditions"] if c["type"] == "PvcReady")
    assert (ready["status"], ready["reason"]) == ("False", "LabelsTooLarge")
    assert ready["message"].startswith("The claim's labels take 14600 bytes (keys and values), "
                                       "more than the 8192 this operator copies")
    assert written["reason"] == "LabelsTooLarge"
    body["metadata"]["labels"] = {"team": "data"}  # fewer now: its PVC is made
    body["metadata"]["resourceVersion"] = "12"
    reconciler.observe_evc("MODIFIED", body)
    reconcile_now(reconciler, ("jobs", "scratch"))
    assert "create_pvc" in fake.calls


def test_pvc_ready_turns_true_once_the_pvc_is_bound_and_the_status_says_why() -> None:
    fake = FakeApi(fresh_pods=[])
    reconciler, index = make(fake, indexed_pods=[pod_body("worker")])
    reconcile_now(reconciler, ("jobs", "scratch"))

    def pvc_ready() -> dict[str, Any]:
        return next(c for c in view_of(reconciler, ("jobs", "scratch")).status["conditions"]
                    if c["type"] == "PvcReady")

    assert (pvc_ready()["status"], pvc_ready()["reason"]) == ("False", "Pending")
    assert view_of(reconciler, ("jobs", "scratch")).status.get("reason") is None
    index.pvcs[("jobs", "scratch")] = dataclasses.replace(index.pvcs[("jobs", "scratch")],
                                                          phase="Bound")
    fake.calls.clear()
    reconcile_now(reconciler, ("jobs", "scratch"))
    assert fake.calls == ["patch_status:InUse"]
    assert (pvc_ready()["status"], pvc_ready()["reason"]) == ("True", "Bound")


def test_a_refused_status_write_never_lets_a_later_decision_rest_on_older_facts() -> None:
    # Idle since 00:00:10 (30 s grace). A new user comes; the write that records it is
    # refused (a policy on the status subresource, say). The user ends at 00:01:00: the
    # grace counts from then, not from the stored 00:00:10 -- that would delete at once.
    body = evc_body()
    body["status"] = sealed({"phase": "Idle", "unusedSince": "2026-01-01T00:00:10Z"})
    clock = Clock()
    clock.now = T0 + datetime.timedelta(seconds=20)
    fake = FakeApi(fresh_pods=[])
    fake.status_error = errors.Invalid("denied by ValidatingAdmissionPolicy")
    reconciler, index = make(fake, [pod_body("newcomer")], clock=clock, body=body)
    key = ("jobs", "scratch")
    reconcile_now(reconciler, key)  # refused: tried again with backoff
    assert fake.calls[0] == "patch_status:InUse"
    ended = pod_view(pod_body("newcomer", "Succeeded"))
    index.by_claim[key], index.in_namespace["jobs"] = [ended], [ended]
    fake.fresh_pods = [pod_body("newcomer", "Succeeded")]
    clock.now = T0 + datetime.timedelta(seconds=60)
    reconcile_now(reconciler, key)
    assert not any(call.startswith("delete") for call in fake.calls)
    assert "patch_status:Idle" in fake.calls
    fake.status_error = None  # the policy is lifted: the later facts are recorded
    clock.now = T0 + datetime.timedelta(seconds=70)
    reconcile_now(reconciler, key)
    assert not any(call.startswith("delete") for call in fake.calls)
    assert view_of(reconciler, key).claim.recorded_unused_since == T0 + datetime.timedelta(
        seconds=60)


def test_a_refused_resize_does_not_hold_the_labels_back() -> None:
    body = evc_body()
    body["metadata"]["labels"] = {"team": "data"}
    body["spec"]["size"] = "2Gi"
    body["metadata"]["annotations"] = {"evc.zalando.org/keep": "true"}
    fake = FakeApi(fresh_pods=[])
    fake.resize_error = errors.Forbidden("only dynamically provisioned pvc can be resized")
    reconciler, _ = make(fake, [], body=body)
    reconcile_now(reconciler, ("jobs", "scratch"))
    # The labels go first, on the version decided on; the resize on the version they made.
    assert fake.calls[:2] == ["patch_pvc:metadata@5", "patch_pvc:spec@6"]
    written = view_of(reconciler, ("jobs", "scratch")).status
    ready = next(c for c in written["conditions"] if c["type"] == "PvcReady")
    assert ready["reason"] == "PvcUpdateRejected"
    assert "only dynamically provisioned" in ready["message"]
    fake.calls.clear()
    reconcile_now(reconciler, ("jobs", "scratch"))  # the same PVC: the resize is not retried
    assert "patch_pvc:spec@6" not in fake.calls


def test_a_deletion_that_gave_its_slot_back_counts_its_wait_to_get_one_again() -> None:
    fake = FakeApi(fresh_pods=[])
    scheduler, _index = make(fake, indexed_pods=[], bounds=Bounds(initial=4, minimum=4))

    def waited() -> float:
        return metrics.REGISTRY.get_sample_value(
            "evc_deletion_slot_wait_seconds_count") or 0.0

    async def scenario() -> None:
        before = waited()
        for _ in range(4):  # every slot: this reconciliation's own and three others'
            await scheduler.limit.acquire()
        proof: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        deleting = asyncio.ensure_future(scheduler.reconciler.waiting(proof))
        await settle()
        assert scheduler.limit.in_flight == 3  # its slot given back while it is proven
        await scheduler.limit.acquire()  # another claim takes it meanwhile
        proof.set_result(None)
        await settle()
        assert not deleting.done()
        assert waited() == before
        scheduler.limit.release()
        await deleting
        assert scheduler.limit.in_flight == 4
        assert waited() == before + 1
        # A proof that fails ends the deletion: it takes its slot back, uncounted.
        failing: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        failing.set_exception(errors.ApiException(status=503, reason="Unavailable"))
        with pytest.raises(errors.ApiException):
            await scheduler.reconciler.waiting(failing)
        assert scheduler.limit.in_flight == 4
        assert waited() == before + 1

    asyncio.run(scenario())


def test_a_deletion_refused_for_good_is_said_and_tried_again_later() -> None:
    """A policy on deletes (403, 422) that the start's permission check cannot see: the
    claim stayed, `deletesAt` long past, retried every 60 s with only a log line (a
    review). Now said in status and by one Warning, tried again after 10 s, 30 s, ..."""
    key = ("jobs", "scratch")
    fake = FakeApi(fresh_pods=[])
    fake.delete_error = errors.Forbidden(body=orjson.dumps(
        {"reason": "Forbidden", "message": "deletes of claims are denied by policy"}))
    clock = [NOW]
    reconciler, _index = make(fake, indexed_pods=[], clock=lambda: clock[0])
    drain(reconciler)
    reconcile_now(reconciler, key)
    assert fake.calls == ["list_pods", "delete:conflict", "event:DeletionRefused"]
    assert reconciler.queue.waiting(key)  # looked at again at once: to say it in status
    fake.calls.clear()
    reconcile_now(reconciler, key)
    assert [call for call in fake.calls if call.startswith("delete")] == []
    assert fake.evc is not None
    paused = {c["type"]: c for c in fake.evc["status"]["conditions"]}["DeletionPaused"]
    assert (paused["status"], paused["reason"]) == ("True", "DeletionRefused")
    assert "Forbidden: deletes of claims are denied by policy" in paused["message"]
    assert "Tried again after 10 s, 30 s, 60 s, then every 5 minutes" in paused["message"]
    # Said in `kubectl get evc` too (its REASON was empty, its phase Deleting: a review).
    assert (fake.evc["status"]["phase"], fake.evc["status"]["reason"]) == (
        "Deleting", "DeletionRefused")
    assert reconciler.queue.later.get(key) == NOW + datetime.timedelta(seconds=10)
    clock[0] = NOW + datetime.timedelta(seconds=10)
    fake.calls.clear()
    reconcile_now(reconciler, key)  # tried again, refused again: no second Warning
    assert fake.calls[-1] == "delete:conflict"
    reconcile_now(reconciler, key)
    assert reconciler.queue.later.get(key) == NOW + datetime.timedelta(seconds=40)
    fake.delete_error = None  # the policy lifted
    clock[0] = NOW + datetime.timedelta(seconds=40)
    fake.calls.clear()
    reconcile_now(reconciler, key)
    assert any(call.startswith("delete:evc-uid:") for call in fake.calls)
    assert "event:DeletionRefused" not in fake.calls


def test_a_refused_status_write_keeps_the_deadline_and_says_its_transition_once() -> None:
    """The last user ended; the Idle write is refused (a policy on the status subresource).
    The deletion needs no status write: due at its deadline, not at the backoff's next try
    (up to a minute late), and the Idle Event is not said again at each try (a review)."""
    key = ("jobs", "scratch")
    body = evc_body()
    body["status"] = sealed({"phase": "InUse"})
    clock = Clock(T0 + datetime.timedelta(seconds=100))
    fake = FakeApi(fresh_pods=[])
    fake.status_error = errors.Forbidden("denied by policy")
    reconciler, _ = make(fake, [pod_body("w", "Succeeded")], clock=clock, body=body)
    drain(reconciler)
    reconcile_now(reconciler, key)
    claim = reconciler.claims.get(key)
    assert claim is not None
    assert claim.countdown is not None
    deadline = claim.countdown.deletes_at
    assert deadline is not None
    assert fake.calls.count("event:Idle") == 1
    assert reconciler.queue.later.get(key) == clock.now + datetime.timedelta(seconds=1)
    while not any(call.startswith("delete:") for call in fake.calls):
        # Tried again with backoff (1, 2, 5, 10, 30 s), and looked at by its deadline.
        moment = reconciler.queue.later.get(key)
        assert moment is not None
        assert moment <= deadline
        clock.now = moment
        reconcile_now(reconciler, key)
    assert clock.now == deadline
    assert claim.status_failures >= 4
    assert fake.calls.count("event:Idle") == 1


@pytest.mark.parametrize(("owner", "stored", "deleted"), [
    ("evc-uid", "evc-uid", "delete:evc-uid:10:orphan"),
    ("someone-else", "someone-else", "delete:evc-uid:10"),
    ("evc-uid", None, "delete:evc-uid:10"),  # the index behind: the claim's own now
])
def test_a_claim_is_deleted_orphaning_a_pvc_of_its_name_that_names_it_as_an_owner(
        owner: str, stored: str | None, deleted: str) -> None:
    """A PVC of the claim's name, not its own, naming it as an owner without being its
    controller (by hand, a tool): said to be left untouched, it was deleted with the claim
    by the garbage collector (Background). The claim is deleted orphaning it (a review);
    with another owner only, in the background as ever; and as the PVC is read, not as
    the index holds it (behind across a change of leader, it may hold that PVC where the
    claim's own is now: orphaned, that one leaked; a review of the fix)."""
    fake = FakeApi(fresh_pods=[])
    reconciler, index = make(fake, [])  # 100 s after creation, 30 s expiry: overdue
    key = ("jobs", "scratch")

    def theirs(uid: str) -> dict[str, Any]:
        reference = {**owner_reference(evc_body()), "controller": False, "uid": uid}
        return {"metadata": {"name": "scratch", "namespace": "jobs", "uid": "their-pvc",
                             "resourceVersion": "3", "ownerReferences": [reference]}}

    ours = {"metadata": {"name": "scratch", "namespace": "jobs", "uid": "own-pvc",
                         "ownerReferences": [owner_reference(evc_body())]}}

    async def read_pvc(namespace: str, name: str) -> dict[str, Any] | None:
        fake.calls.append("read_pvc")
        return theirs(stored) if stored is not None else ours

    fake.read_pvc = read_pvc  # type: ignore[method-assign]
    index.pvcs[key] = pvc_view(theirs(owner))
    drain(reconciler)
    reconcile_now(reconciler, key)
    assert [call for call in fake.calls if call.startswith("delete")] == [deleted]
    assert ("read_pvc" in fake.calls) is (owner == "evc-uid")


@pytest.mark.parametrize(("stored", "made_again"), [
    (None, False), ("another-uid", False), ("evc-uid", True)])
def test_a_pvc_gone_with_its_claim_is_not_made_again_for_a_claim_that_is_gone(
        stored: str | None, made_again: bool) -> None:
    """The claim deleted (no finalizer: gone at once), the garbage collector deleted its
    PVC, and the PVC's watch said so before the claims' watch said the claim went: it was
    made again for a claim that was gone, `PvcRecreated` said of it (a review). Before a
    PVC is made again the claim is read: made again only if it is still there."""
    fake = FakeApi(fresh_pods=[])
    body = evc_body()
    body["status"]["conditions"] = [{"type": "PvcReady", "status": "True", "reason": "Bound"}]
    reconciler, index = make(fake, [], body=body, clock=lambda: T0 + datetime.timedelta(
        seconds=10))
    key = ("jobs", "scratch")
    index.pvcs.pop(key)  # its PVC is gone

    async def read_evc(namespace: str, name: str) -> dict[str, Any] | None:
        fake.calls.append("read_evc")
        if stored is None:
            return None
        found = evc_body()
        found["metadata"]["uid"] = stored
        return found

    fake.read_evc = read_evc  # type: ignore[method-assign]
    drain(reconciler)
    reconcile_now(reconciler, key)
    assert fake.calls[0] == "read_evc"
    assert ("create_pvc" in fake.calls) is made_again
    assert ("event:PvcRecreated" in fake.calls) is made_again
    assert (key in reconciler.claims) is made_again
