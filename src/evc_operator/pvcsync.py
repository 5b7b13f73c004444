"""A claim's PVC made to match the EVC: created, or its labels and size patched; never one
that is not the operator's.

`PvcSync.sync` acts on the plan of `claims.plan_pvc` (pure: create, patch, wait for a PVC
being deleted, or a conflict with a PVC of someone else's) and says how the PVC stands: the
`PvcReady` condition and its Events (status.pvc_ready). A refusal (quota, an admission
policy or webhook, a LimitRange, invalid) is said in the status and counted on the claim
(`refusals`) for the reconciliation's backoff; an API server that throttles or fails (429,
5xx: errors.transient) refused nothing yet: `PvcRetrying`, without a Warning, until it has
failed TRANSIENT_SAID_AFTER times in a row; so is a call that got no answer (a timeout, no
connection). A patch refused for good is said once, and tried again when the EVC or the
PVC changes, else after REJECTED_RETRY (`rejected`): the refusal may be lifted. A patch
that fails otherwise (429, 5xx, no answer, or a PVC that changed or went meanwhile: 409,
404) is `PvcUpdateRetrying`, retried with backoff, and
`PvcUpdateFailing` with a Warning once it failed TRANSIENT_SAID_AFTER times in a row. None
of these leaves `sync`: the claim's own decision comes after it (reconcile.py), and must not
wait for its PVC; nor does a creation answered 409 whose PVC is gone again when read
(`PvcRetrying`: it was deleted meanwhile) or cannot be read (as the read's failure). A PVC
created or patched that lacks a field the claim asked for (a webhook that changed it) is
said too.
"""

from __future__ import annotations

import datetime
import logging
from collections.abc import Callable, Mapping
from typing import Any

from evc_operator import status
from evc_operator.claims import (
    PvcStep,
    PvcView,
    desired_pvc,
    not_as_asked,
    plan_pvc,
    pvc_view,
    update_attempt,
)
from evc_operator.errors import (
    ApiException,
    Conflict,
    Forbidden,
    Invalid,
    describe,
    error_message,
    refusal,
    transient,
)
from evc_operator.evc import EvcView
from evc_operator.kube import UNANSWERED
from evc_operator.seams import ClaimApi, PodIndex
from evc_operator.status import PvcOutcome, pvc_ready
from evc_operator.tracked import Rejection, TrackedClaim

Logger = logging.LoggerAdapter[Any]


# A PVC creation that the API server throttles or fails (429, 5xx) this many times in a row
# is said as refused, with a Warning, and an update as failing: after the backoff's 1 + 2 s,
# it is no passing spell (an admission webhook that is down and fails closed answers 500
# until someone acts).
TRANSIENT_SAID_AFTER = 3


# A part of a PVC update refused for good is tried again after these many seconds, by the
# refusals in a row (the last again and again), with no change to the claim or the PVC:
# the refusal may be lifted meanwhile (a quota raised, a StorageClass allowed to expand).
REJECTED_RETRY = (10, 30, 60, 300)


class PvcSync:
    def __init__(self, api: ClaimApi, index: PodIndex,
                 clock: Callable[[], datetime.datetime]) -> None:
        self.api = api
        self.index = index
        self.clock = clock

    async def gone_with_its_pvc(self, view: EvcView, previous: Mapping[str, Any]) -> bool:
        """Whether a claim whose PVC is gone is gone too (deleted, or being deleted, or
        another of its name there): the garbage collector took its PVC, and the PVC's
        watch said so before the claims' watch said the claim went. Read before its PVC
        is made again (rare); else made for a claim that was gone, `PvcRecreated` said."""
        if self.index.pvc(view.key) is not None or not status.had_pvc(previous):
            return False
        stored = await self.api.read_evc(view.namespace, view.name)
        return (stored is None or stored["metadata"].get("uid") != view.uid
                or bool(stored["metadata"].get("deletionTimestamp")))

    async def sync(self, claim: TrackedClaim, view: EvcView, previous: Mapping[str, Any],
                   logger: Logger) -> tuple[status.Condition, list[status.Event]]:
        """Make the PVC match the EVC, if it is ours; say how it stands."""
        if view.size_invalid or view.labels_too_large:
            _keep_planned_refusals(claim, {})  # no update planned: none to try again
        if view.size_invalid:
            return pvc_ready(PvcOutcome.INVALID_SPEC, view.name, previous)
        if view.labels_too_large:  # not kept: the PVC cannot be made to match
            return pvc_ready(PvcOutcome.LABELS_TOO_LARGE, view.name, previous,
                             detail=str(view.labels_too_large))
        body = view.body
        observed = self.index.pvc(view.key)
        plan = plan_pvc(body, observed)
        _keep_planned_refusals(claim, plan.patch if plan.step is PvcStep.PATCH else {})
        if plan.step is PvcStep.CREATE:
            try:
                created = await self.api.create_pvc(desired_pvc(body))
            except Conflict as conflict:
                # Our index had not seen it yet: read it, and never touch it if not ours.
                try:
                    existing = await self.api.read_pvc(view.namespace, view.name)
                except (ApiException, *UNANSWERED) as error:
                    return _creation_failed(claim, view, previous, error, logger)
                observed = pvc_view(existing) if existing else None
                plan = plan_pvc(body, observed)
                if plan.step is PvcStep.CREATE:
                    # There a moment ago and gone again (deleted meanwhile): no refusal,
                    # tried again with backoff like a creation that got no answer.
                    return _creation_failed(claim, view, previous, conflict, logger,
                                            passing=True, gone=True)
            except (ApiException, *UNANSWERED) as error:
                return _creation_failed(claim, view, previous, error, logger)
            else:
                claim.refusals = 0
                condition, events = pvc_ready(PvcOutcome.CREATED, view.name, previous,
                                              size=str(body["spec"]["size"]))
                return _as_asked(body, pvc_view(created), previous, condition, events)
        # Failures in a row: reset, unless a patch below fails again.
        failures, claim.refusals = claim.refusals, 0
        if plan.step is PvcStep.CONFLICT:
            return pvc_ready(PvcOutcome.CONFLICT, view.name, previous, detail=plan.message)
        if plan.step is PvcStep.WAIT:
            return pvc_ready(PvcOutcome.DELETING, view.name, previous)
        resized_from, size = None, ""
        if plan.step is PvcStep.PATCH and observed is not None:
            # Labels and size go in two patches: a refusal of either (a StorageClass that
            # cannot expand volumes, a policy on labels) must not hold the other back.
            # Each, refused for good, is said once, and tried again at once when the EVC
            # or the PVC changes, else after REJECTED_RETRY; conflicts (it changed
            # meanwhile) and outages are retried with backoff.
            attempt = update_attempt(body, view.generation, observed)
            version = observed.resource_version
            refused: list[str] = []  # said now, of each part refused just now
            held_back = False  # a part refused before, not due again yet
            for part in ("metadata", "spec"):
                if part not in plan.patch:
                    continue
                before = (claim.rejected or {}).get(part)
                if before is not None and before.attempt != attempt:
                    before = None  # tried on another EVC or PVC: try this one
                if before is not None and self.clock() < before.retry_at:
                    held_back = True
                    continue
                try:
                    version = await self.api.patch_pvc(view.namespace, view.name,
                                                       observed.uid, version,
                                                       {part: plan.patch[part]})
                except (Forbidden, Invalid) as error:
                    _reject(claim, part, attempt, before, self.clock())
                    refused.append(error_message(error))
                    continue
                except (ApiException, *UNANSWERED) as error:
                    # Nothing refused for good: throttled or failing (429, 5xx: a
                    # fail-closed webhook on PVC updates that is down), unanswered, or the
                    # PVC changed or went since the index saw it (409, 404: the watch
                    # brings it). Said, and tried again with backoff (`refusals`), never
                    # `rejected`; the claim's decision goes on: left to propagate, it never
                    # came, and the claim was never deleted while this lasted.
                    claim.refusals = failures + 1
                    logger.debug("Updating PersistentVolumeClaim %s failed (%s).", view.name,
                                 describe(error))
                    outcome = (PvcOutcome.UPDATE_RETRYING
                               if claim.refusals < TRANSIENT_SAID_AFTER
                               else PvcOutcome.UPDATE_FAILING)
                    return pvc_ready(outcome, view.name, previous, detail=_detail(error),
                                     phase=observed.phase)
                _accepted(claim, part)
                if part == "metadata":
                    logger.info("Synced labels to PersistentVolumeClaim %s.", view.name)
                else:
                    size = plan.patch["spec"]["resources"]["requests"]["storage"]
                    resized_from = observed.storage
            if refused or held_back:
                return pvc_ready(PvcOutcome.REJECTED, view.name, previous,
                                 detail="; ".join(refused) or None, phase=observed.phase,
                                 size=size, resized_from=resized_from)
        condition, events = pvc_ready(PvcOutcome.IN_PLACE, view.name, previous, size=size,
                                      resized_from=resized_from,
                                      phase=observed.phase if observed is not None else "Pending")
        return _as_asked(body, observed, previous, condition, events)


def _keep_planned_refusals(claim: TrackedClaim, planned: Mapping[str, object]) -> None:
    """Keep the refusals of the parts of an update still planned only: one no longer
    planned (the label taken off the claim, the PVC grown by hand or made again) is not
    to be tried again, and its time to try, passed, would have the claim looked at again
    and again at once."""
    if claim.rejected:
        claim.rejected = {part: rejection for part, rejection in claim.rejected.items()
                          if part in planned} or None


def _accepted(claim: TrackedClaim, part: str) -> None:
    """That `part` of the update went through: a refusal of it before is over."""
    if claim.rejected and part in claim.rejected:
        claim.rejected = {other: rejection for other, rejection in claim.rejected.items()
                          if other != part} or None


def _reject(claim: TrackedClaim, part: str, attempt: tuple[object, ...],
            before: Rejection | None, now: datetime.datetime) -> None:
    """Keep that `part` of the update was refused, and when to try it again."""
    times = 1 if before is None else before.times + 1
    delay = REJECTED_RETRY[min(times, len(REJECTED_RETRY)) - 1]
    claim.rejected = {**(claim.rejected or {}), part: Rejection(
        attempt, times, now + datetime.timedelta(seconds=delay))}


def _creation_failed(claim: TrackedClaim, view: EvcView, previous: Mapping[str, Any],
                     error: BaseException, logger: Logger, *, passing: bool = False,
                     gone: bool = False) -> tuple[status.Condition, list[status.Event]]:
    """A creation that failed: retried with backoff (`refusals`), the countdown running
    meanwhile. Throttled (429), failing (5xx), unanswered, or a PVC that was there and went
    again (`gone`): no answer about this PVC yet, so no refusal to warn of while it may
    pass. Refused (quota, an admission policy or webhook, a LimitRange, invalid), or
    failing for good (a fail-closed webhook that is down answers 500): said in the status
    and a Warning."""
    claim.refusals += 1
    logger.debug("Creating PersistentVolumeClaim %s refused (%s).", view.name,
                 describe(error))
    detail = _detail(error)
    if gone:
        detail = f"{detail}; gone again when read"
    if (passing or _passing(error)) and claim.refusals < TRANSIENT_SAID_AFTER:
        return pvc_ready(PvcOutcome.RETRYING, view.name, previous, detail=detail)
    return pvc_ready(PvcOutcome.REFUSED, view.name, previous, detail=detail)


def _passing(error: BaseException) -> bool:
    """Whether a failure may pass by itself: throttled or failing (errors.transient), or
    unanswered (which errors.transient counts only as a timeout)."""
    return isinstance(error, UNANSWERED) or transient(error)


def _detail(error: BaseException) -> str:
    """A failure as the condition says it: the API server's reason and message, or what
    kept the answer away (`TimeoutError`, `ClientConnectorError: ...`)."""
    if isinstance(error, ApiException):
        return refusal(error)
    return describe(error) if str(error) else type(error).__name__


def _as_asked(body: Mapping[str, Any], observed: PvcView | None,
              previous: Mapping[str, Any], condition: status.Condition,
              events: list[status.Event]) -> tuple[status.Condition, list[status.Event]]:
    """The condition, unless the PVC lacks a field the claim asked for: then that. A PVC
    that lost its volume stays Lost: said once, it is the news (the mismatch, said in its
    place, would have it said again at every look)."""
    missing = not_as_asked(body, observed) if observed is not None else []
    if not missing or condition.reason == "Lost":
        return condition, events
    mismatch, warnings = pvc_ready(PvcOutcome.NOT_AS_ASKED, body["metadata"]["name"],
                                   previous, detail="; ".join(missing))
    return mismatch, events + warnings
