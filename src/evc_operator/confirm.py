"""Confirming a record once the seal's spacing has passed: a read, and a write only if needed.

When a record that makes the deadline later (a use, a later end of use) replaces one
sealed less than `seal.SPACING` before, the one it replaced, put back by someone who may
write the status, would be believed after a restart: that write would come within
`seal.TOLERANCE` of its sealing. Once `SPACING` has passed since that sealing, a record
put back comes too late to be believed. So the operator must know that its own record
stood at that moment (docs/lifecycle.md, *When unsure, later*):

- if the API server still holds the very record this process wrote (the same seal), any
  record put back from then on is written too late to be believed, and nothing needs
  writing;
- otherwise (someone wrote the status since, or the read failed) the record is written
  once more, sealed anew, as before this read existed.

The read is a GET of the claim, the latest state (not a cache), taken after the moment
(this process's view of the server's clock is never ahead of it). Where users start right
after their claims, as Jobs created with their claim do, one claim in sixteen was
written twice for this in the default benchmark; each such write was also an event to
every watcher of claims. A read is neither.
"""

from __future__ import annotations

import datetime
import logging
from collections.abc import Callable, Mapping
from typing import Any

from evc_operator import seal
from evc_operator.errors import describe
from evc_operator.evc import EvcView
from evc_operator.seams import ClaimApi
from evc_operator.tracked import TrackedClaim

log = logging.getLogger(__name__)


def due(claim: TrackedClaim, key: bytes, facts: tuple[str | None, datetime.datetime | None],
        stored_seal: object, changed: bool, now: datetime.datetime) -> bool:
    """Whether this reconciliation only has to confirm the stored record: its confirmation
    is due, nothing in the status changes, and the stored record is the one this process
    sealed last, for these very facts."""
    return (claim.confirm_after is not None and now >= claim.confirm_after and not changed
            and isinstance(stored_seal, str) and claim.sealed_at is not None
            and seal.sealed_at(stored_seal) == claim.sealed_at
            and seal.verify(key, claim.view.uid, *facts, stored_seal))


async def still_as_written(api: ClaimApi, view: EvcView, stored_seal: object,
                           remember: Callable[[Mapping[str, Any], str], object]) -> bool:
    """Whether the API server holds the record in `view`, sealed `stored_seal`, now (True
    also if the claim is gone or is another claim of that name: it has no record of this
    one's to confirm). False if someone wrote the status since, or if this cannot be told:
    then write it."""
    try:
        body = await api.read_evc(view.namespace, view.name)
    except Exception as error:  # any failure: confirm the way that needs no read
        log.debug("%s/%s: could not read its record back (%s); writing it once more.",
                  view.namespace, view.name, describe(error))
        return False
    if body is None or (body.get("metadata") or {}).get("uid") != view.uid:
        return True
    if (body.get("status") or {}).get("seal") != stored_seal:
        return False
    remember(body, view.uid)  # the freshest view of it
    return True


def adopt(claim: TrackedClaim, stored_seal: str | None, now: datetime.datetime) -> None:
    """A record of the operator's found by a process that has decided nothing about the
    claim yet: confirmed as its writer would have, if it is young (`seal.confirm_found`:
    one read, a write only if it no longer stands)."""
    sealed = seal.sealed_at(stored_seal)
    due = seal.confirm_found(sealed, now)
    if due is not None:
        claim.sealed_at = sealed
        claim.confirm_after = due
