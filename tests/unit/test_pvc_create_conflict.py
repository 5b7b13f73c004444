"""A PVC creation answered 409 (AlreadyExists) is read back, and the PVC never touched if it
is not the operator's. When the read finds it gone again (deleted meanwhile), or the read
itself fails, the claim still gets its decision and a word about its PVC: `PvcRetrying`
(no Warning while it may pass), retried with backoff; the read's own refusal is said as a
refusal. Before, both left the reconciliation before the claim's decision, unsaid. With the
fakes of tests/unit/fakes.py in place of the cluster."""

from __future__ import annotations

import datetime
import json
from typing import Any

import pytest

from evc_operator import errors
from evc_operator.pvcsync import TRANSIENT_SAID_AFTER
from evc_operator.scheduler import Scheduler
from tests.unit.fakes import FakeApi, evc_body, make, view_of, work_once
from tests.unit.support import T0, Clock

KEY = ("jobs", "scratch")
EXISTS = errors.api_error(409, "Conflict", json.dumps(
    {"kind": "Status", "status": "Failure", "reason": "AlreadyExists", "code": 409,
     "message": 'persistentvolumeclaims "scratch" already exists'}))
READ_FORBIDDEN = errors.api_error(403, "Forbidden", json.dumps(
    {"kind": "Status", "status": "Failure", "reason": "Forbidden", "code": 403,
     "message": 'persistentvolumeclaims "scratch" is forbidden: no get'}))


class GoneAgain(FakeApi):
    """Every creation is answered 409; the read back finds nothing, or fails."""

    def __init__(self, read_error: Exception | None = None) -> None:
        super().__init__(fresh_pods=[])
        self.create_error = EXISTS
        self.read_error = read_error

    async def read_pvc(self, namespace: str, name: str) -> dict[str, Any] | None:
        found = await super().read_pvc(namespace, name)
        if self.read_error is not None:
            raise self.read_error
        return found



def started(fake: FakeApi) -> tuple[Scheduler, Clock]:
    clock = Clock()
    clock.now = T0 + datetime.timedelta(seconds=5)
    body = evc_body()
    del body["status"]
    scheduler, index = make(fake, [], clock=clock, body=body)
    index.pvcs.clear()
    return scheduler, clock


def ready_of(scheduler: Scheduler) -> dict[str, Any]:
    status = view_of(scheduler, KEY).status
    return next(c for c in status["conditions"] if c["type"] == "PvcReady")


@pytest.mark.parametrize("read_error", [None, TimeoutError()], ids=["gone", "unanswered"])
def test_a_pvc_gone_again_after_409_is_retried_and_said(read_error: Exception | None) -> None:
    fake = GoneAgain(read_error)
    scheduler, clock = started(fake)
    work_once(scheduler)
    assert fake.calls.count("create_pvc") == 1
    assert "read_pvc" in fake.calls
    ready = ready_of(scheduler)
    assert (ready["status"], ready["reason"]) == ("False", "PvcRetrying")
    if read_error is None:
        assert "AlreadyExists" in ready["message"]
        assert "gone again" in ready["message"]
    assert "event:PvcRefused" not in fake.calls
    status = view_of(scheduler, KEY).status
    # The claim's own decision was made meanwhile: its expiry counts down.
    assert (status["phase"], status["deletesAt"]) == ("Pending", "2026-01-01T00:00:31Z")
    assert scheduler.queue.later.get(KEY) == clock.now + datetime.timedelta(seconds=1)


def test_gone_again_after_409_every_time_is_said_as_refused_once_it_lasts() -> None:
    fake = GoneAgain()
    scheduler, clock = started(fake)
    reasons = []
    for _ in range(TRANSIENT_SAID_AFTER):
        work_once(scheduler)
        reasons.append(ready_of(scheduler)["reason"])
        retry_at = scheduler.queue.later.get(KEY)
        assert retry_at is not None
        clock.now = retry_at
    assert reasons == ["PvcRetrying"] * (TRANSIENT_SAID_AFTER - 1) + ["PvcRefused"]
    assert fake.calls.count("event:PvcRefused") == 1


def test_a_refused_read_after_409_is_said_as_a_refusal() -> None:
    fake = GoneAgain(READ_FORBIDDEN)
    scheduler, _ = started(fake)
    work_once(scheduler)
    ready = ready_of(scheduler)
    assert ready["reason"] == "PvcRefused"
    assert "Forbidden" in ready["message"]
    assert view_of(scheduler, KEY).status["phase"] == "Pending"
