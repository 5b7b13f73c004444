"""A patch of the claim's PVC that fails without refusing anything for good (429, 5xx: a
fail-closed admission webhook on PVC updates that is down; no answer; a PVC that changed or
went since the index saw it: 409, 404) must neither stop the claim's decision nor go
unsaid: the claim says `PvcUpdateRetrying`, then `PvcUpdateFailing` with one Warning, is
retried with backoff, and is deleted at its deadline meanwhile. A creation that gets no
answer is retried like a 5xx (`PvcRetrying`). With the fakes of tests/unit/fakes.py in
place of the cluster."""

from __future__ import annotations

import datetime
import json
from collections.abc import Mapping
from typing import Any

import aiohttp
import pytest

from evc_operator import errors
from evc_operator.pvcsync import TRANSIENT_SAID_AFTER
from evc_operator.scheduler import Scheduler
from tests.unit.fakes import FakeApi, evc_body, make, view_of, work_once
from tests.unit.support import T0, Clock

KEY = ("jobs", "scratch")


class PatchFailing(FakeApi):
    """An API server whose every patch of a PVC (labels too, not only a resize) fails with
    `patch_error` while it is set."""

    def __init__(self, error: Exception) -> None:
        super().__init__(fresh_pods=[])
        self.patch_error: Exception | None = error
        self.body = labelled()  # what a status write returns: the claim, labels and all

    async def patch_pvc(self, namespace: str, name: str, uid: str, resource_version: str,
                        patch: Mapping[str, Any]) -> str:
        version = await super().patch_pvc(namespace, name, uid, resource_version, patch)
        if self.patch_error is not None:
            raise self.patch_error
        return version


def answer(status: int, reason: str, message: str) -> errors.ApiException:
    return errors.api_error(status, reason, json.dumps(
        {"kind": "Status", "status": "Failure", "reason": reason, "message": message,
         "code": status}))


WEBHOOK_DOWN = answer(500, "InternalError", 'Internal error occurred: failed calling webhook '
                                            '"pvc.example": connection refused')
FAILURES = {
    "500": WEBHOOK_DOWN,
    "429": answer(429, "TooManyRequests", "Too many requests, please try again later."),
    "409": answer(409, "Conflict", 'Operation cannot be fulfilled on persistentvolumeclaims '
                                   '"scratch": the object has been modified'),
    "404": answer(404, "NotFound", 'persistentvolumeclaims "scratch" not found'),
    "timeout": TimeoutError(),
    "connection": aiohttp.ClientConnectionError("Connection reset by peer"),
}


def labelled() -> dict[str, Any]:
    """The claim (Pending since T0, expiry 30 s) with a label its PVC lacks: a patch."""
    body = evc_body()
    body["metadata"]["labels"] = {"team": "data"}
    return body



def pvc_ready(scheduler: Scheduler) -> dict[str, Any]:
    status = view_of(scheduler, KEY).status
    return next(c for c in status["conditions"] if c["type"] == "PvcReady")


@pytest.mark.parametrize("error", FAILURES.values(), ids=FAILURES.keys())
def test_an_overdue_claim_whose_pvc_patch_fails_is_still_deleted_at_its_deadline(
        error: Exception) -> None:
    """Today's bug: the failure left `sync`, before the decision; the claim, long past its
    expiry, was never deleted while the patch failed (only patch calls)."""
    fake = PatchFailing(error)
    scheduler, _ = make(fake, [], body=labelled())  # now: 100 s after creation
    work_once(scheduler)
    assert "patch_pvc:metadata@5" in fake.calls
    assert "delete:evc-uid:10" in fake.calls


@pytest.mark.parametrize("error", FAILURES.values(), ids=FAILURES.keys())
def test_a_failed_patch_says_retrying_and_the_claim_counts_down(error: Exception) -> None:
    clock = Clock()
    clock.now = T0 + datetime.timedelta(seconds=5)
    fake = PatchFailing(error)
    scheduler, _ = make(fake, [], clock=clock, body=labelled())
    work_once(scheduler)
    ready = pvc_ready(scheduler)
    assert ready["reason"] == "PvcUpdateRetrying"
    assert ready["message"].startswith("Updating PersistentVolumeClaim scratch failed for now (")
    status = view_of(scheduler, KEY).status
    assert status["phase"] == "Pending"
    assert status["deletesAt"] == "2026-01-01T00:00:31Z"  # its countdown runs
    assert not status.get("reason")
    assert not any(call.startswith("event:PvcUpdate") for call in fake.calls)  # no Warning
    claim = scheduler.claims.get(KEY)
    assert claim is not None
    assert (claim.refusals, claim.rejected) == (1, None)  # tried again, not given up
    assert scheduler.queue.later.get(KEY) == clock.now + datetime.timedelta(seconds=1)


def test_a_patch_that_goes_on_failing_gives_one_warning_then_recovers() -> None:
    """A webhook that is down answers 500 until someone acts: retried after 1 s, 2 s, ...;
    the third failure in a row is said with a Warning, once; a patch that goes through
    again clears it, and no failure is counted any more."""
    clock = Clock()
    clock.now = T0 + datetime.timedelta(seconds=5)
    fake = PatchFailing(WEBHOOK_DOWN)
    scheduler, _ = make(fake, [], clock=clock, body=labelled())
    reasons = []
    for _ in range(TRANSIENT_SAID_AFTER + 1):
        work_once(scheduler)
        reasons.append(pvc_ready(scheduler)["reason"])
        retry_at = scheduler.queue.later.get(KEY)
        assert retry_at is not None
        clock.now = retry_at
    assert reasons == ["PvcUpdateRetrying"] * (TRANSIENT_SAID_AFTER - 1) + [
        "PvcUpdateFailing"] * 2
    assert fake.calls.count("event:PvcUpdateFailing") == 1
    ready = pvc_ready(scheduler)
    assert "failed calling webhook" in ready["message"]
    claim = scheduler.claims.get(KEY)
    assert claim is not None
    assert claim.rejected is None

    fake.patch_error = None  # the webhook is back
    work_once(scheduler)
    assert pvc_ready(scheduler)["reason"] == "Pending"  # in place, not bound yet
    assert claim.refusals == 0


def test_a_claim_whose_pvc_updates_keep_failing_is_flagged_until_one_passes() -> None:
    """status.reason (the REASON column, evc_claims_by_reason, the EvcClaimsStuck alert) is
    PvcUpdateFailing from the third failure in a row, as PvcRefused is after PvcRetrying:
    the failures before it may pass by themselves and flag nothing. An update that goes
    through clears it."""
    clock = Clock()
    clock.now = T0 + datetime.timedelta(seconds=5)
    fake = PatchFailing(WEBHOOK_DOWN)
    scheduler, _ = make(fake, [], clock=clock, body=labelled())
    flagged = []
    for _ in range(TRANSIENT_SAID_AFTER + 1):
        work_once(scheduler)
        flagged.append(view_of(scheduler, KEY).status.get("reason"))
        retry_at = scheduler.queue.later.get(KEY)
        assert retry_at is not None
        clock.now = retry_at
    assert flagged == [None] * (TRANSIENT_SAID_AFTER - 1) + ["PvcUpdateFailing"] * 2

    fake.patch_error = None  # the webhook is back
    work_once(scheduler)
    status = view_of(scheduler, KEY).status
    assert pvc_ready(scheduler)["reason"] == "Pending"
    assert status.get("reason") is None
    assert status["phase"] == "Pending"  # counted down as usual meanwhile


@pytest.mark.parametrize("error", [TimeoutError(), aiohttp.ServerDisconnectedError()],
                         ids=["timeout", "disconnected"])
def test_a_creation_that_gets_no_answer_is_retried_as_pvc_retrying(error: Exception) -> None:
    """errors.transient counts a timeout, and a lost connection is no refusal either: the
    creation says PvcRetrying (no Warning) and is tried again with backoff, instead of
    leaving the reconciliation before the claim's decision."""
    clock = Clock()
    clock.now = T0 + datetime.timedelta(seconds=5)
    fake = FakeApi(fresh_pods=[])
    fake.create_error = error
    body = evc_body()
    del body["status"]
    scheduler, index = make(fake, [], clock=clock, body=body)
    index.pvcs.clear()
    work_once(scheduler)
    assert fake.calls.count("create_pvc") == 1
    ready = pvc_ready(scheduler)
    assert (ready["status"], ready["reason"]) == ("False", "PvcRetrying")
    assert f"failed for now ({type(error).__name__}" in ready["message"]
    assert "event:PvcRefused" not in fake.calls
    status = view_of(scheduler, KEY).status
    assert (status["phase"], status["deletesAt"]) == ("Pending", "2026-01-01T00:00:31Z")
    assert scheduler.queue.later.get(KEY) == clock.now + datetime.timedelta(seconds=1)
