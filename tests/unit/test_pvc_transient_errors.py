"""An API server that throttles (429) or fails (5xx) while a claim's PVC is created has
refused nothing yet: the creation is retried with backoff, the claim says `PvcRetrying`
without a Warning and counts down as usual; only a failure that persists is said as
`PvcRefused`. A real refusal (403, 422, 400) is said at once. With the fakes of
tests/unit/fakes.py in place of the cluster."""

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


def new_claim() -> dict[str, Any]:
    body = evc_body()
    del body["status"]
    return body


def answer(status: int, reason: str, message: str) -> errors.ApiException:
    return errors.api_error(status, reason, json.dumps(
        {"kind": "Status", "status": "Failure", "reason": reason, "message": message,
         "code": status}))


def creation_failing(error: errors.ApiException) -> tuple[Clock, FakeApi, Scheduler]:
    """A new claim, 5 s old, whose PVC's creation the API server answers with `error`."""
    clock = Clock()
    clock.now = T0 + datetime.timedelta(seconds=5)
    fake = FakeApi(fresh_pods=[])
    fake.create_error = error
    scheduler, index = make(fake, [], clock=clock, body=new_claim())
    index.pvcs.clear()
    return clock, fake, scheduler



TRANSIENT = {
    "429": answer(429, "TooManyRequests", "Too many requests, please try again later."),
    "500": answer(500, "InternalError", "Internal error occurred: etcdserver: leader changed"),
    "503": answer(503, "ServiceUnavailable", "the server is currently unable to handle the "
                                             "request"),
    "504": answer(504, "Timeout", "Timeout: request did not complete within 60s"),
}


@pytest.mark.parametrize("error", TRANSIENT.values(), ids=TRANSIENT.keys())
def test_a_throttled_or_failing_api_server_is_retried_not_reported_as_a_refusal(
        error: errors.ApiException) -> None:
    """The claim says PvcRetrying (no Warning) and counts down as usual meanwhile; retried
    after 1 s, then 2 s; created once the API server answers: PvcCreated."""
    clock, fake, scheduler = creation_failing(error)

    for wait in (1, 2):
        fake.calls.clear()
        work_once(scheduler)
        assert fake.calls.count("create_pvc") == 1
        assert "event:PvcRefused" not in fake.calls  # no Warning (Expiring: it counts down)
        status = view_of(scheduler, KEY).status
        ready = next(c for c in status["conditions"] if c["type"] == "PvcReady")
        assert (ready["status"], ready["reason"]) == ("False", "PvcRetrying")
        assert status["phase"] == "Pending"
        assert "deletesAt" in status  # its countdown runs
        assert not status.get("reason")
        retry_at = scheduler.queue.later.get(KEY)
        assert retry_at == clock.now + datetime.timedelta(seconds=wait)
        clock.now = retry_at

    fake.create_error = None  # the API server answers again
    fake.calls.clear()
    work_once(scheduler)
    assert "event:PvcCreated" in fake.calls  # created, not "recreated"
    ready = next(c for c in view_of(scheduler, KEY).status["conditions"]
                 if c["type"] == "PvcReady")
    assert ready["reason"] == "Pending"
    claim = scheduler.claims.get(KEY)
    assert claim is not None
    assert claim.refusals == 0


def test_a_failure_that_persists_is_said_as_refused() -> None:
    """A fail-closed admission webhook that is down answers 500 until someone acts: after
    TRANSIENT_SAID_AFTER tries in a row it is a refusal, with the server's words."""
    clock, fake, scheduler = creation_failing(answer(
        500, "InternalError", 'Internal error occurred: failed calling webhook "pvc.example"'))
    for _ in range(TRANSIENT_SAID_AFTER):
        work_once(scheduler)
        retry_at = scheduler.queue.later.get(KEY)
        assert retry_at is not None
        clock.now = retry_at
    status = view_of(scheduler, KEY).status
    ready = next(c for c in status["conditions"] if c["type"] == "PvcReady")
    assert (ready["status"], ready["reason"]) == ("False", "PvcRefused")
    assert "failed calling webhook" in ready["message"]
    assert status["reason"] == "PvcRefused"
    assert fake.calls.count("event:PvcRefused") == 1


REFUSALS = {
    "403": answer(403, "Forbidden", 'persistentvolumeclaims "scratch" is forbidden: '
                                    'exceeded quota: storage'),
    "422": answer(422, "Invalid", "denied by ValidatingAdmissionPolicy 'no-pvcs'"),
    "400": answer(400, "BadRequest", "admission webhook \"pvc.example\" denied the request"),
}


@pytest.mark.parametrize("error", REFUSALS.values(), ids=REFUSALS.keys())
def test_a_real_refusal_is_still_said_once_as_pvc_refused(error: errors.ApiException) -> None:
    _clock, fake, scheduler = creation_failing(error)

    work_once(scheduler)
    ready = next(c for c in view_of(scheduler, KEY).status["conditions"]
                 if c["type"] == "PvcReady")
    assert (ready["status"], ready["reason"]) == ("False", "PvcRefused")
    assert fake.calls.count("event:PvcRefused") == 1
    claim = scheduler.claims.get(KEY)
    assert claim is not None
    assert claim.refusals == 1


def test_transient_is_429_5xx_and_timeouts_only() -> None:
    assert all(errors.transient(error) for error in TRANSIENT.values())
    assert errors.transient(TimeoutError())
    assert not any(errors.transient(error) for error in REFUSALS.values())
    assert not errors.transient(errors.Conflict("Conflict"))
    assert not errors.transient(errors.NotFound("Not Found"))
    assert not errors.transient(ValueError("x"))
