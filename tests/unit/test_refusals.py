"""Every refusal of a claim's PVC is visible: a PVC the API server refuses to create (a
ResourceQuota, an admission policy or webhook, a LimitRange), or creates without a field
the claim asked for. With the fakes of tests/unit/fakes.py in place of the cluster."""

from __future__ import annotations

import datetime
import json
from collections.abc import Mapping
from typing import Any

from evc_operator import errors
from evc_operator.claims import desired_pvc, not_as_asked, pvc_view
from tests.unit.fakes import NOW, FakeApi, evc_body, make, reconcile_now, view_of, work_once
from tests.unit.support import T0, Clock

KEY = ("jobs", "scratch")
QUOTA = ('persistentvolumeclaims "scratch" is forbidden: exceeded quota: storage, requested: '
         'requests.storage=1Gi, used: requests.storage=0, limited: requests.storage=1')
SOURCE = {"apiGroup": "snapshot.storage.k8s.io", "kind": "VolumeSnapshot", "name": "nightly",
          "namespace": "backups"}


def quota_refusal() -> errors.ApiException:
    return errors.Forbidden("Forbidden", body=json.dumps(
        {"kind": "Status", "status": "Failure", "reason": "Forbidden", "message": QUOTA,
         "code": 403}))


def new_claim() -> dict[str, Any]:
    body = evc_body()
    del body["status"]
    return body


def pvc_ready(status: Mapping[str, Any]) -> dict[str, Any]:
    found: dict[str, Any] = next(c for c in status["conditions"] if c["type"] == "PvcReady")
    return found


def test_a_refused_pvc_is_said_in_status_and_a_warning_once_and_retried_with_backoff() -> None:
    clock = Clock()
    clock.now = T0 + datetime.timedelta(seconds=5)  # the claim is 5 s old: 30 s expiry
    fake = FakeApi(fresh_pods=[])
    fake.create_error = quota_refusal()
    scheduler, index = make(fake, [], clock=clock, body=new_claim())
    index.pvcs.clear()
    reconcile_now(scheduler, KEY)  # no exception: a refusal is an answer, not a failure

    stored = view_of(scheduler, KEY).status
    ready = pvc_ready(stored)
    assert (ready["status"], ready["reason"]) == ("False", "PvcRefused")
    assert ready["message"] == (f"The API server refused to create PersistentVolumeClaim "
                                f"scratch: Forbidden: {QUOTA}. Retried with backoff; the "
                                f"claim's own countdown runs as usual.")
    assert stored["reason"] == "PvcRefused"
    assert stored["phase"] == "Pending"
    assert stored["deletesAt"] == "2026-01-01T00:00:31Z"  # its countdown runs
    assert fake.calls.count("event:PvcRefused") == 1

    retries = []
    for _ in range(7):
        retry_at = scheduler.queue.later.get(KEY)
        assert retry_at is not None
        retries.append((retry_at - clock.now).total_seconds())
        fake.calls.clear()
        reconcile_now(scheduler, KEY)
        assert fake.calls[0] == "create_pvc"
        assert "event:PvcRefused" not in fake.calls  # said once, while it stays refused
    assert retries == [1, 2, 5, 10, 26, 26, 26]  # backoff, never past the deadline (31 s)

    fake.create_error = None  # the quota was raised
    fake.calls.clear()
    reconcile_now(scheduler, KEY)
    assert "event:PvcCreated" in fake.calls  # created at last, not "recreated"
    assert pvc_ready(view_of(scheduler, KEY).status)["reason"] == "Pending"
    assert view_of(scheduler, KEY).status.get("reason") is None
    assert scheduler.queue.later.get(KEY) == T0 + datetime.timedelta(seconds=31)


def test_an_unused_claim_whose_pvc_is_always_refused_still_expires_on_time() -> None:
    fake = FakeApi(fresh_pods=[])
    fake.create_error = errors.Invalid("Unprocessable Entity", body=json.dumps({
        "reason": "Invalid", "message": "denied by ValidatingAdmissionPolicy 'no-pvcs'"}))
    scheduler, index = make(fake, [])  # NOW is long past the 30 s expiry
    index.pvcs.clear()
    reconcile_now(scheduler, KEY)
    # Read first: its status says it had a PVC (a recreation: is the claim still there?).
    assert fake.calls == ["read_evc", "create_pvc", "list_pods", "delete:evc-uid:10",
                          "event:Deleted"]
    assert KEY not in scheduler.claims
    assert T0 + datetime.timedelta(seconds=31) < NOW  # the fixture: long past its expiry


def test_a_field_the_api_server_dropped_is_not_reported_as_success() -> None:
    body = new_claim()
    body["spec"]["dataSourceRef"] = SOURCE

    def without_namespace(sent: Mapping[str, Any]) -> dict[str, Any]:
        stored = json.loads(json.dumps(sent))
        del stored["spec"]["dataSourceRef"]["namespace"]  # no CrossNamespaceVolumeDataSource
        stored["spec"]["volumeMode"] = "Filesystem"  # a default added is no difference
        return dict(stored)

    clock = Clock()
    clock.now = T0 + datetime.timedelta(seconds=5)
    fake = FakeApi(fresh_pods=[])
    fake.stored = without_namespace
    fake.body = body
    scheduler, index = make(fake, [], clock=clock, body=body)
    index.pvcs.clear()
    reconcile_now(scheduler, KEY)
    stored = view_of(scheduler, KEY).status
    ready = pvc_ready(stored)
    assert (ready["status"], ready["reason"]) == ("False", "PvcSpecMismatch")
    assert "spec.dataSourceRef.namespace (asked 'backups', got none)" in ready["message"]
    assert stored["reason"] == "PvcSpecMismatch"
    assert {"event:PvcCreated", "event:PvcSpecMismatch"} <= set(fake.calls)

    # Seen again through the informer, and after a restart: still said, not said again.
    created = pvc_view(without_namespace(desired_pvc(body)) | {"metadata": {
        **desired_pvc(body)["metadata"], "uid": "pvc-uid", "resourceVersion": "5"}})
    index.pvcs[KEY] = created
    fake.calls.clear()
    reconcile_now(scheduler, KEY)
    assert pvc_ready(view_of(scheduler, KEY).status)["reason"] == "PvcSpecMismatch"
    assert not [call for call in fake.calls if call.startswith("event:")]


def test_not_as_asked_compares_only_what_the_claim_asked_for() -> None:
    body = evc_body()
    body["spec"] |= {"dataSourceRef": SOURCE, "storageClassName": "fast",
                     "accessModes": ["ReadWriteMany"]}
    sent = desired_pvc(body)
    assert not_as_asked(body, pvc_view(sent)) == []
    defaulted = json.loads(json.dumps(sent))
    defaulted["spec"] |= {"volumeMode": "Filesystem", "dataSource": {"kind": "X", "name": "y"}}
    assert not_as_asked(body, pvc_view(defaulted)) == []
    changed = json.loads(json.dumps(sent))
    changed["spec"]["storageClassName"] = "slow"
    del changed["spec"]["dataSourceRef"]
    assert not_as_asked(body, pvc_view(changed)) == [
        "spec.storageClassName (asked 'fast', got 'slow')",
        "spec.dataSourceRef (asked apiGroup=snapshot.storage.k8s.io, kind=VolumeSnapshot, "
        "name=nightly, namespace=backups; got none)"]


def test_an_invalid_spec_is_warned_once_while_its_status_writes_fail() -> None:
    """The InvalidSpec Warning went with the status that says so; that write failing, the
    stored status still said nothing, and the Warning was posted again at every try."""
    clock = [NOW]
    fake = FakeApi(fresh_pods=[])
    body = evc_body()
    body["spec"]["gracePeriod"] = "bogus"
    scheduler, _ = make(fake, [], body=body, clock=lambda: clock[0])
    fake.status_error = errors.ApiException(503, "Service Unavailable")
    for _ in range(4):
        work_once(scheduler)
        retry = scheduler.queue.later.get(("jobs", "scratch"))
        assert retry is not None
        clock[0] = retry
        scheduler.queue.take(0)  # the retry comes due
    assert fake.calls.count("event:InvalidSpec") == 1
    assert fake.calls.count("patch_status:Pending") == 4
