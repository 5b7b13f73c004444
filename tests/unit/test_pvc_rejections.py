"""A PVC update the API server refuses for good (403, 422: a quota, a StorageClass that
cannot expand volumes, a policy on labels) is said once (`PvcUpdateRejected`, one
Warning), and tried again: at once when the EVC or the PVC changes, else after
pvcsync.REJECTED_RETRY, since the refusal may be lifted with no change to either (a quota
raised). A refusal of the labels holds the resize back no more than the other way round.
With the fakes of tests/unit/fakes.py."""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Mapping
from typing import Any

from evc_operator import errors
from evc_operator.pvcsync import REJECTED_RETRY
from evc_operator.scheduler import Scheduler
from tests.unit.fakes import FakeApi, FakeIndex, evc_body, make, reconcile_now, view_of
from tests.unit.support import T0, Clock

KEY = ("jobs", "scratch")
QUOTA = errors.Forbidden('persistentvolumeclaims "scratch" is forbidden: exceeded quota')


def resized(**labels: str) -> dict[str, Any]:
    """The claim grown to 2Gi (its PVC has 1Gi), kept (no deadline in the way)."""
    body = evc_body()
    body["spec"]["size"] = "2Gi"
    body["metadata"]["labels"] = dict(labels)
    body["metadata"]["annotations"] = {"evc.zalando.org/keep": "true"}
    return body


def quota_exceeded() -> tuple[Clock, FakeApi, Scheduler]:
    """The claim grown, its resize refused by a quota, 5 s after its creation."""
    clock = Clock(T0 + datetime.timedelta(seconds=5))
    fake = FakeApi(fresh_pods=[])
    fake.body = resized()  # what a status write returns
    fake.resize_error = QUOTA
    scheduler, _ = make(fake, [], clock=clock, body=resized())
    return clock, fake, scheduler


def pvc_ready(fake: FakeApi, scheduler: Scheduler) -> dict[str, Any]:
    conditions = view_of(scheduler, KEY).status["conditions"]
    return next(c for c in conditions if c["type"] == "PvcReady")


def test_a_refused_resize_is_tried_again_later_and_goes_through_once_allowed() -> None:
    clock, fake, scheduler = quota_exceeded()
    reconcile_now(scheduler, KEY)
    assert fake.calls.count("patch_pvc:spec@5") == 1
    assert fake.calls.count("event:PvcUpdateRejected") == 1
    assert pvc_ready(fake, scheduler)["reason"] == "PvcUpdateRejected"
    claim = scheduler.claims.get(KEY)
    assert claim is not None
    retry = claim.rejected_retry()
    assert retry == clock.now + datetime.timedelta(seconds=REJECTED_RETRY[0])
    woken = scheduler.queue.later.get(KEY)
    assert woken is not None
    assert woken <= retry  # the claim is looked at again by then

    # Looked at again sooner (a pod changed): not tried again yet, nor said again.
    clock.advance(REJECTED_RETRY[0] - 1)
    reconcile_now(scheduler, KEY)
    assert fake.calls.count("patch_pvc:spec@5") == 1

    # Refused again when due: the next try waits longer; still one Warning.
    clock.advance(1)
    reconcile_now(scheduler, KEY)
    assert fake.calls.count("patch_pvc:spec@5") == 2
    assert fake.calls.count("event:PvcUpdateRejected") == 1
    assert claim.rejected_retry() == clock.now + datetime.timedelta(seconds=REJECTED_RETRY[1])

    # The quota is raised: the next try goes through, with no change to the claim or PVC.
    fake.resize_error = None
    clock.advance(REJECTED_RETRY[1])
    reconcile_now(scheduler, KEY)
    assert fake.calls.count("patch_pvc:spec@5") == 3
    assert "event:PvcResized" in fake.calls
    assert pvc_ready(fake, scheduler)["reason"] != "PvcUpdateRejected"
    assert claim.rejected is None


def test_refusals_in_a_row_are_tried_again_ever_less_often() -> None:
    clock, fake, scheduler = quota_exceeded()
    claim = scheduler.claims.get(KEY)
    assert claim is not None
    waits = []
    for _ in range(len(REJECTED_RETRY) + 1):
        reconcile_now(scheduler, KEY)
        retry = claim.rejected_retry()
        assert retry is not None
        woken = scheduler.queue.later.get(KEY)
        assert woken is not None
        assert woken <= retry  # looked at again by then, with nothing else to wake it
        waits.append((retry - clock.now).total_seconds())
        clock.now = retry
    assert waits == [*REJECTED_RETRY, REJECTED_RETRY[-1]]
    assert fake.calls.count("event:PvcUpdateRejected") == 1


class LabelsRefused(FakeApi):
    async def patch_pvc(self, namespace: str, name: str, uid: str, resource_version: str,
                        patch: Mapping[str, Any]) -> str:
        version = await super().patch_pvc(namespace, name, uid, resource_version, patch)
        if "metadata" in patch:
            raise errors.Invalid('admission webhook "labels.example" denied the request: '
                                 'label team is immutable')
        return version


def test_a_refused_label_update_does_not_hold_the_resize_back() -> None:
    fake = LabelsRefused(fresh_pods=[])
    fake.body = resized(team="data")
    scheduler, _ = make(fake, [], body=resized(team="data"))
    reconcile_now(scheduler, KEY)
    assert fake.calls[:2] == ["patch_pvc:metadata@5", "patch_pvc:spec@5"]
    ready = pvc_ready(fake, scheduler)
    assert ready["reason"] == "PvcUpdateRejected"
    assert "label team is immutable" in ready["message"]
    # The resize went through, and is said as any resize (the only time it can be).
    assert "event:PvcResized" in fake.calls
    fake.calls.clear()
    reconcile_now(scheduler, KEY)  # the labels not tried again before their time
    assert "patch_pvc:metadata@5" not in fake.calls


def test_a_refusal_no_longer_planned_is_dropped_not_woken_for_again_and_again() -> None:
    """The resize refused, then an admin grows the PVC by hand: no resize is planned any
    more. Its refusal, kept, had its time to try (past) wake the claim at once, again and
    again (thousands of reconciliations a second)."""
    clock, fake, scheduler = quota_exceeded()
    reconcile_now(scheduler, KEY)
    claim = scheduler.claims.get(KEY)
    assert claim is not None
    assert claim.rejected
    index = scheduler.index
    assert isinstance(index, FakeIndex)
    index.pvcs[KEY] = dataclasses.replace(index.pvcs[KEY], storage="2Gi", resource_version="6")
    clock.advance(REJECTED_RETRY[0] + 1)
    for _ in range(3):
        fake.calls.clear()
        reconcile_now(scheduler, KEY)
        assert not [call for call in fake.calls if call.startswith("patch_pvc")]
    assert claim.rejected is None
    woken = scheduler.queue.later.get(KEY)
    assert woken is None or woken > clock.now
