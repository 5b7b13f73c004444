"""The whole EVC lifecycle on the real control plane, with periods of a few seconds.

There is no kubelet: a pod's phase is set by patching its status, as a kubelet would.
"""

from __future__ import annotations

import datetime
import functools
import json
import signal
import time
from pathlib import Path
from typing import Any

from controlplane.cluster import ControlPlane
from tests.integration.conftest import OperatorFactory
from tests.integration.goneproxy import GoneProxy
from tests.integration.support import REPO, Kubectl, eventually

FAST = {"EXPIRY_PERIOD": "4", "GRACE_PERIOD": "4", "COUNTDOWN_INTERVAL": "1"}


def evc(name: str, size: str = "1Gi", labels: dict[str, str] | None = None,
        annotations: dict[str, str] | None = None, **spec: Any) -> str:
    return json.dumps({
        "apiVersion": "zalando.org/v1", "kind": "EphemeralVolumeClaim",
        "metadata": {"name": name, "labels": labels or {}, "annotations": annotations or {}},
        "spec": {"size": size, **spec}})


def pod(name: str, claim: str | None = None, labels: dict[str, str] | None = None,
        finalizers: list[str] | None = None) -> str:
    volumes = [{"name": "v", "persistentVolumeClaim": {"claimName": claim}}] if claim else []
    return json.dumps({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": labels or {}, "finalizers": finalizers or []},
        "spec": {"restartPolicy": "Never", "volumes": volumes,
                 "containers": [{"name": "main", "image": "busybox"}]}})


def finish(kubectl: Kubectl, name: str, phase: str = "Succeeded") -> None:
    """What a kubelet reports when a pod's only container ends."""
    finished = now().strftime("%Y-%m-%dT%H:%M:%SZ")
    terminated = {"exitCode": 0 if phase == "Succeeded" else 1, "finishedAt": finished,
                  "startedAt": finished, "reason": "Completed" if phase == "Succeeded"
                  else "Error"}
    kubectl("patch", "pod", name, "--subresource=status", "--type=merge", "-p", json.dumps(
        {"status": {"phase": phase, "containerStatuses": [{
            "name": "main", "image": "busybox", "imageID": "", "ready": False,
            "restartCount": 0, "state": {"terminated": terminated}}]}}))


def status(kubectl: Kubectl, name: str) -> dict[str, Any]:
    body = kubectl.get("evc", name)
    assert body is not None, f"EVC {name} is gone"
    found: dict[str, Any] = body.get("status") or {}
    return found


def phase_is(kubectl: Kubectl, name: str, phase: str) -> bool:
    return status(kubectl, name).get("phase") == phase


def reasons(kubectl: Kubectl, name: str) -> list[str]:
    return [event["reason"] for event in kubectl.events(name)]


def parse(stamp: str) -> datetime.datetime:
    return datetime.datetime.fromisoformat(stamp.replace("Z", "+00:00"))


def now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def managers(body: dict[str, Any]) -> set[str]:
    """Who wrote to the object, by field manager."""
    return {entry["manager"] for entry in body["metadata"].get("managedFields") or []}


def gone(kubectl: Kubectl, kind: str, name: str) -> bool:
    return kubectl.get(kind, name) is None


def used_then_idle(kubectl: Kubectl, claim: str, user: str) -> None:
    """Create a claim, have a pod use it and end: the claim is Idle."""
    kubectl("apply", "-f", "-", input=evc(claim))
    kubectl("apply", "-f", "-", input=pod(user, claim))
    eventually(lambda: phase_is(kubectl, claim, "InUse"), what="InUse")
    finish(kubectl, user)
    eventually(lambda: phase_is(kubectl, claim, "Idle"), what="Idle")


def test_seed_flow_pending_in_use_idle_deleted(kubectl: Kubectl,
                                               operator: OperatorFactory) -> None:
    operator(kubectl.namespace, **FAST)
    kubectl("apply", "-f", str(REPO / "evc.yaml"))
    eventually(lambda: phase_is(kubectl, "my-claim-1", "Pending"), what="Pending")
    pending = status(kubectl, "my-claim-1")
    assert pending["countdown"] == "expiry"
    assert pending["deletesAt"]

    kubectl("apply", "-f", str(REPO / "pod.yaml"))
    eventually(lambda: phase_is(kubectl, "my-claim-1", "InUse"), what="InUse")
    in_use = status(kubectl, "my-claim-1")
    assert in_use["users"] == 1
    assert in_use["userNames"] == ["my-pod"]
    assert "deletesAt" not in in_use
    listing = kubectl("get", "evc", "my-claim-1")
    assert "InUse" in listing.splitlines()[1]

    time.sleep(5)  # longer than the expiry period: in use, so it stays
    assert phase_is(kubectl, "my-claim-1", "InUse")

    finish(kubectl, "my-pod")
    eventually(lambda: phase_is(kubectl, "my-claim-1", "Idle"), what="Idle")
    idle = status(kubectl, "my-claim-1")
    assert idle["countdown"] == "grace"
    assert parse(idle["deletesAt"]) - parse(idle["unusedSince"]) == datetime.timedelta(seconds=4)

    # Pods are watched, never written to: no annotations, no finalizers of ours.
    watched_pod = kubectl.get("pod", "my-pod")
    assert watched_pod is not None
    assert not any("kopf" in key for key in watched_pod["metadata"].get("annotations") or {})
    assert not watched_pod["metadata"].get("finalizers")
    assert managers(watched_pod) <= {"kubectl-client-side-apply", "kubectl-patch"}
    claim_body = kubectl.get("evc", "my-claim-1")
    assert claim_body is not None
    assert not any("kopf" in key for key in claim_body["metadata"].get("annotations") or {})
    assert not claim_body["metadata"].get("finalizers")

    eventually(lambda: gone(kubectl, "evc", "my-claim-1"), timeout=15, what="deletion")
    deleted_at = now()
    assert deleted_at >= parse(idle["deletesAt"])
    eventually(lambda: gone(kubectl, "pvc", "my-claim-1"), what="PVC garbage-collected")
    events = reasons(kubectl, "my-claim-1")
    for reason in ("PvcCreated", "Expiring", "InUse", "Idle", "Deleted"):
        assert reason in events


def test_never_used_claim_expires(kubectl: Kubectl, operator: OperatorFactory) -> None:
    process = operator(kubectl.namespace, **FAST)
    kubectl("apply", "-f", "-", input=evc("unused"))
    pending: str = eventually(lambda: status(kubectl, "unused").get("deletesAt") or "",
                              what="deadline")
    eventually(lambda: gone(kubectl, "evc", "unused"), timeout=15, what="expiry")
    assert now() >= parse(pending)
    # The Deleted Event follows the delete's answer: it may land just after.
    deleted: dict[str, Any] = eventually(
        lambda: next((e for e in kubectl.events("unused") if e["reason"] == "Deleted"), {}),
        what="the Deleted Event")
    assert "ExpiryPeriodElapsed" in deleted["message"]
    assert "Expiry countdown" in process.log_text()


def test_idle_starts_when_the_last_of_two_users_ends(kubectl: Kubectl,
                                                     operator: OperatorFactory) -> None:
    operator(kubectl.namespace, **FAST)
    kubectl("apply", "-f", "-", input=evc("shared"))
    kubectl("apply", "-f", "-", input=pod("first", "shared"))
    kubectl("apply", "-f", "-", input=pod("second", "shared"))
    eventually(lambda: status(kubectl, "shared").get("users") == 2, what="two users")
    finish(kubectl, "first")
    eventually(lambda: status(kubectl, "shared").get("userNames") == ["second"],
               what="one user left")
    time.sleep(5)  # beyond the grace period after the first ended
    assert phase_is(kubectl, "shared", "InUse")
    kubectl("delete", "pod", "second", "--wait=false")
    eventually(lambda: phase_is(kubectl, "shared", "Idle"), what="Idle")
    eventually(lambda: gone(kubectl, "evc", "shared"), timeout=15, what="deletion")


def test_a_pod_created_before_its_evc_counts_from_the_start(
        kubectl: Kubectl, operator: OperatorFactory) -> None:
    kubectl("apply", "-f", "-", input=pod("early", "late-claim"))
    operator(kubectl.namespace, **FAST)
    kubectl("apply", "-f", "-", input=evc("late-claim"))
    eventually(lambda: phase_is(kubectl, "late-claim", "InUse"), what="InUse")
    time.sleep(5)
    assert phase_is(kubectl, "late-claim", "InUse")
    assert kubectl.get("pvc", "late-claim") is not None


def test_selector_users_count(kubectl: Kubectl, operator: OperatorFactory) -> None:
    operator(kubectl.namespace, **FAST)
    kubectl("apply", "-f", "-", input=evc(
        "by-label", selector={"matchLabels": {"application": "evc-demo"}}))
    eventually(lambda: phase_is(kubectl, "by-label", "Pending"), what="Pending")
    kubectl("apply", "-f", "-", input=pod("labelled", labels={"application": "evc-demo"}))
    eventually(lambda: phase_is(kubectl, "by-label", "InUse"), what="InUse by selector")
    kubectl("label", "pod", "labelled", "application-")
    eventually(lambda: phase_is(kubectl, "by-label", "Idle"), what="Idle once unlabelled")


def test_a_terminating_pod_is_still_a_user(kubectl: Kubectl,
                                           operator: OperatorFactory) -> None:
    operator(kubectl.namespace, **FAST)
    kubectl("apply", "-f", "-", input=evc("held"))
    kubectl("apply", "-f", "-", input=pod("lingering", "held", finalizers=["test.evc/hold"]))
    eventually(lambda: phase_is(kubectl, "held", "InUse"), what="InUse")
    kubectl("delete", "pod", "lingering", "--wait=false")
    terminating = kubectl.get("pod", "lingering")
    assert terminating is not None
    assert terminating["metadata"].get("deletionTimestamp")
    time.sleep(5)
    assert phase_is(kubectl, "held", "InUse")
    kubectl("patch", "pod", "lingering", "--type=json",
            "-p", '[{"op": "remove", "path": "/metadata/finalizers"}]')
    eventually(lambda: phase_is(kubectl, "held", "Idle"), what="Idle once the pod is gone")


def test_restart_mid_grace_keeps_the_original_deadline(
        kubectl: Kubectl, operator: OperatorFactory) -> None:
    first = operator(kubectl.namespace, EXPIRY_PERIOD="4", GRACE_PERIOD="12",
                     COUNTDOWN_INTERVAL="1")
    used_then_idle(kubectl, "survivor", "worker")
    idle = status(kubectl, "survivor")
    deadline = parse(idle["deletesAt"])
    first.stop(signal.SIGKILL)
    time.sleep(3)
    operator(kubectl.namespace, EXPIRY_PERIOD="4", GRACE_PERIOD="12", COUNTDOWN_INTERVAL="1")
    assert status(kubectl, "survivor")["deletesAt"] == idle["deletesAt"]  # not reset
    # The claim existed at some moment after `asked` (a kubectl call takes a while on a
    # busy machine: the moment it returns would count its own time as lateness).
    while True:
        asked = now()
        if kubectl.get("evc", "survivor") is None:
            break
        assert asked < deadline + datetime.timedelta(seconds=3), "deleted late"
        time.sleep(0.1)
    assert now() >= deadline, "deleted before the deadline"


def test_overdue_claims_found_at_start_are_deleted(kubectl: Kubectl,
                                                   operator: OperatorFactory) -> None:
    first = operator(kubectl.namespace, **FAST)
    kubectl("apply", "-f", "-", input=evc("overdue"))
    eventually(lambda: phase_is(kubectl, "overdue", "Pending"), what="Pending")
    first.stop(signal.SIGKILL)
    time.sleep(5)  # the deadline passes while no operator runs
    assert kubectl.get("evc", "overdue") is not None
    operator(kubectl.namespace, **FAST)
    eventually(lambda: gone(kubectl, "evc", "overdue"), timeout=10, what="prompt deletion")


def claim_lists(kubectl: Kubectl) -> float:
    """How many namespaced lists of EVCs the API server has answered, by its own count."""
    total = 0.0
    for line in kubectl("get", "--raw", "/metrics", namespaced=False).splitlines():
        if (line.startswith("apiserver_request_total{") and 'verb="LIST"' in line
                and 'resource="ephemeralvolumeclaims"' in line and 'subresource=""' in line
                and 'scope="namespace"' in line):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_claims_are_listed_as_a_stream_so_no_page_can_be_gone(
        kubectl: Kubectl, operator: OperatorFactory) -> None:
    """Kopf ends the operator when a page of its initial list is refused with 410 Gone
    (etcd compacted the list's revision while it was read in pages). On an API server
    that serves streaming lists, claims come as one watch that begins with every claim:
    no list request, so no page to lose; the claims are all known, and one found overdue
    is deleted at once."""
    first = operator(kubectl.namespace, **FAST)
    for name in ("streamed-a", "streamed-b"):
        kubectl("apply", "-f", "-", input=evc(name))
    eventually(lambda: all(phase_is(kubectl, name, "Pending")
                           for name in ("streamed-a", "streamed-b")), what="Pending")
    first.stop(signal.SIGKILL)
    time.sleep(5)  # their expiry passes while no operator runs
    lists = claim_lists(kubectl)
    operator(kubectl.namespace, **FAST)
    for name in ("streamed-a", "streamed-b"):
        eventually(functools.partial(gone, kubectl, "evc", name), timeout=10,
                   what=f"{name} deleted")
    assert claim_lists(kubectl) == lists, "claims were listed in pages"


def test_a_410_during_the_initial_list_of_claims_is_survived(
        control_plane: ControlPlane, kubectl: Kubectl, operator: OperatorFactory,
        tmp_path: Path) -> None:
    """The claims' initial list (a stream) cut with 410 Gone after its first claim, as
    the API server cuts one whose revision was compacted: the operator lists again, and
    serves every claim; it does not exit."""
    names = ("gone-a", "gone-b", "gone-c")
    for name in names:
        kubectl("apply", "-f", "-", input=evc(name))
    with GoneProxy(control_plane).running() as proxy:
        config = proxy.kubeconfig(tmp_path / "proxy.kubeconfig", control_plane.admin_token)
        process = operator(kubectl.namespace, KUBECONFIG=str(config), EXPIRY_PERIOD="1h")
        for name in names:
            eventually(functools.partial(phase_is, kubectl, name, "Pending"),
                       what=f"{name} Pending")
        assert proxy.cut == 1, "no initial list was cut"
        assert proxy.claim_streams >= 2, "the claims were not listed again"
        assert process.process.poll() is None, process.log_text()
        assert "Traceback" not in process.log_text()


def test_labels_sync_one_way_and_leave_others_alone(kubectl: Kubectl,
                                                    operator: OperatorFactory) -> None:
    operator(kubectl.namespace, **FAST)
    kubectl("apply", "-f", "-", input=evc("labelled", labels={"team": "data", "tier": "a"},
                                           annotations={"evc.zalando.org/keep": "true"}))
    eventually(lambda: kubectl.get("pvc", "labelled"), what="PVC")
    kubectl("label", "pvc", "labelled", "backup=nightly")
    kubectl("label", "evc", "labelled", "tier-", "team=ml", "new=yes", "--overwrite")

    def pvc_labels() -> dict[str, str]:
        body = kubectl.get("pvc", "labelled")
        return dict((body or {}).get("metadata", {}).get("labels") or {})

    eventually(lambda: pvc_labels() == {"team": "ml", "new": "yes", "backup": "nightly"},
               what=f"synced labels (last: {pvc_labels()})")


def test_keep_annotation_pauses_deletion_until_removed(kubectl: Kubectl,
                                                       operator: OperatorFactory) -> None:
    operator(kubectl.namespace, **FAST)
    kubectl("apply", "-f", "-", input=evc("kept", annotations={"evc.zalando.org/keep": "true"}))
    eventually(lambda: phase_is(kubectl, "kept", "Pending"), what="Pending")
    time.sleep(6)  # past the expiry period
    kept = status(kubectl, "kept")
    assert "deletesAt" not in kept
    paused = next(c for c in kept["conditions"] if c["type"] == "DeletionPaused")
    assert (paused["status"], paused["reason"]) == ("True", "KeepAnnotation")
    kubectl("annotate", "evc", "kept", "evc.zalando.org/keep-")
    eventually(lambda: gone(kubectl, "evc", "kept"), timeout=10, what="deletion once unkept")


def test_dry_run_reports_and_deletes_nothing(kubectl: Kubectl,
                                             operator: OperatorFactory) -> None:
    process = operator(kubectl.namespace, DRY_RUN="true", **FAST)
    kubectl("apply", "-f", "-", input=evc("rehearsal"))
    eventually(lambda: "WouldDelete" in reasons(kubectl, "rehearsal"), timeout=15,
               what="WouldDelete event")
    assert kubectl.get("evc", "rehearsal") is not None
    assert kubectl.get("pvc", "rehearsal") is not None
    assert "would delete" in process.log_text()


def test_pvc_deleted_by_someone_is_recreated(kubectl: Kubectl,
                                             operator: OperatorFactory) -> None:
    operator(kubectl.namespace, **FAST)
    kubectl("apply", "-f", "-", input=evc("resilient",
                                           annotations={"evc.zalando.org/keep": "true"}))
    original = eventually(lambda: kubectl.get("pvc", "resilient"), what="PVC")
    assert original is not None
    kubectl("delete", "pvc", "resilient")
    eventually(lambda: (kubectl.get("pvc", "resilient") or original)["metadata"]["uid"]
               != original["metadata"]["uid"], what="a new PVC")
    eventually(lambda: "PvcRecreated" in reasons(kubectl, "resilient"), what="Event")


def test_unowned_pvc_is_reported_in_status_and_never_touched(
        kubectl: Kubectl, operator: OperatorFactory) -> None:
    kubectl("apply", "-f", "-", input=json.dumps({
        "apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "theirs"},
        "spec": {"accessModes": ["ReadWriteOnce"],
                 "resources": {"requests": {"storage": "1Gi"}}}}))
    before = kubectl.get("pvc", "theirs")
    assert before is not None
    operator(kubectl.namespace, **FAST)
    kubectl("apply", "-f", "-", input=evc("theirs", labels={"mine": "yes"}))
    def conflict() -> dict[str, Any]:
        conditions = status(kubectl, "theirs").get("conditions", [])
        return next((c for c in conditions if c["reason"] == "PvcConflict"), {})

    condition = eventually(conflict, what="PvcConflict condition")
    assert (condition["type"], condition["status"]) == ("PvcReady", "False")
    eventually(lambda: gone(kubectl, "evc", "theirs"), timeout=15, what="EVC expiry")
    after = kubectl.get("pvc", "theirs")
    assert after is not None
    assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]


def test_size_growth_is_applied_to_the_pvc(control_plane: ControlPlane, kubectl: Kubectl,
                                           operator: OperatorFactory) -> None:
    storage_class = f"expandable-{kubectl.namespace}"
    control_plane.kubectl("apply", "-f", "-", input=json.dumps({
        "apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
        "metadata": {"name": storage_class}, "provisioner": "example.com/none",
        "allowVolumeExpansion": True}))
    control_plane.kubectl("apply", "-f", "-", input=json.dumps({
        "apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": storage_class},
        "spec": {"capacity": {"storage": "10Gi"}, "accessModes": ["ReadWriteOnce"],
                 "storageClassName": storage_class, "hostPath": {"path": "/tmp/evc-test"},
                 "claimRef": {"namespace": kubectl.namespace, "name": "growing"}}}))
    operator(kubectl.namespace, **FAST)
    kubectl("apply", "-f", "-", input=evc("growing", "1Gi", storageClassName=storage_class,
                                           annotations={"evc.zalando.org/keep": "true"}))
    eventually(lambda: (kubectl.get("pvc", "growing") or {}).get("status", {}).get("phase")
               == "Bound", what="PVC bound to the prepared volume")
    kubectl("patch", "evc", "growing", "--type=merge", "-p", '{"spec": {"size": "2Gi"}}')
    eventually(lambda: (kubectl.get("pvc", "growing") or {})["spec"]["resources"]["requests"]
               ["storage"] == "2Gi", what="PVC request grown")
    eventually(lambda: "PvcResized" in reasons(kubectl, "growing"), what="PvcResized event")


def test_per_claim_periods_override_the_defaults(kubectl: Kubectl,
                                                 operator: OperatorFactory) -> None:
    operator(kubectl.namespace, EXPIRY_PERIOD="1h", GRACE_PERIOD="1h", COUNTDOWN_INTERVAL="1")
    kubectl("apply", "-f", "-", input=evc("quick", expiryPeriod="3s"))
    kubectl("apply", "-f", "-", input=evc("slow"))
    pending = eventually(lambda: status(kubectl, "quick").get("deletesAt") or "",
                         what="deadline")
    created = (kubectl.get("evc", "quick") or {})["metadata"]["creationTimestamp"]
    assert parse(pending) - parse(created) == datetime.timedelta(seconds=1 + 3)
    eventually(lambda: gone(kubectl, "evc", "quick"), timeout=10, what="expiry after 3 s")
    slow_deadline = parse(status(kubectl, "slow")["deletesAt"])
    assert slow_deadline - now() > datetime.timedelta(minutes=55)


def test_kubectl_get_makes_problems_stand_out_and_pvc_ready_means_bound(
        control_plane: ControlPlane, kubectl: Kubectl, operator: OperatorFactory) -> None:
    namespace = kubectl.namespace
    kubectl("apply", "-f", "-", input=json.dumps({
        "apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "taken"},
        "spec": {"accessModes": ["ReadWriteOnce"],
                 "resources": {"requests": {"storage": "1Gi"}}}}))
    volume = f"evc-static-{namespace}"  # binds the claim of its storage class, statically
    control_plane.kubectl("apply", "-f", "-", input=json.dumps({
        "apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": volume},
        "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"],
                 "storageClassName": volume, "hostPath": {"path": "/tmp/evc-static"}}}))
    try:
        operator(namespace, EXPIRY_PERIOD="1h", GRACE_PERIOD="1h", COUNTDOWN_INTERVAL="1")
        kubectl("apply", "-f", "-", input=evc("taken"))
        kubectl("apply", "-f", "-", input=evc("kept",
                                               annotations={"evc.zalando.org/keep": "true"}))
        kubectl("apply", "-f", "-", input=evc("plain"))
        kubectl("apply", "-f", "-", input=evc("bound", storageClassName=volume))

        def reasons() -> dict[str, str]:
            """The REASON column as `kubectl get evc` prints it (blank when absent)."""
            header, *rows = kubectl("get", "evc").splitlines()
            assert header.split()[:5] == ["NAME", "SIZE", "PHASE", "REASON", "USERS"], header
            start, end = header.index("REASON"), header.index("USERS")
            return {row.split()[0]: row[start:end].strip() for row in rows}

        eventually(lambda: reasons() == {"taken": "PvcConflict", "kept": "Kept", "plain": "",
                                         "bound": ""}, timeout=30, what="the reason column")

        def pvc_ready(name: str) -> tuple[str, str]:
            condition: dict[str, str] = next(
                (c for c in status(kubectl, name).get("conditions", [])
                 if c["type"] == "PvcReady"), {})
            return condition.get("status", ""), condition.get("reason", "")

        assert pvc_ready("plain") == ("False", "Pending")  # no provisioner: never bound
        eventually(lambda: pvc_ready("bound") == ("True", "Bound"), timeout=60,
                   what="PvcReady=True once the PVC is Bound")
        in_use = next(c for c in status(kubectl, "plain")["conditions"] if c["type"] == "InUse")
        assert "Pending, Running and terminating pods count as users" in in_use["message"]
    finally:
        control_plane.kubectl("delete", "pv", volume, "--ignore-not-found", "--wait=false")
