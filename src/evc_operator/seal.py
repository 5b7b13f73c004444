"""The operator's seal on the facts a claim's deadline rests on. Pure: no API, no clock.

A claim's status records its phase and when its last user ended (`unusedSince`): after a
restart or a change of leader, the countdown resumes from them. Anyone who may write
`ephemeralvolumeclaims/status` could write them too (`phase: Idle, unusedSince: 2000-...`).
So the operator stores, beside them, `status.seal`: the moment it sealed them on the API
server's clock, and an HMAC-SHA256 over the claim's uid, those two facts and that moment,
with a key only the operator holds (signingkey.py). A record whose seal does not verify is
not the operator's, and is taken the later way (lifecycle.believed).

The uid binds a seal to one claim: a record copied from another claim, or from an earlier
claim of the same name, does not verify.

A genuine record of the same claim, put back later (a replay), verifies too. What gives
it away is when it was written: the API server stamps each status write's time in the
claim's `managedFields` (to the second), and a status writer cannot set that stamp (the
status subresource ignores `managedFields` in a request). A record written more than
`TOLERANCE` after it was sealed is not believed (the later way, as if unsealed): put back
while the claim was in use, its user may have gone on after the write, unseen.

A replay written within `TOLERANCE` of its sealing passes that test. It can only put back
a record the operator superseded within those seconds, so after a write that makes the
deadline later (a use, a later end of use), written sooner than `SPACING` after the
record before it, the operator writes its record once more when `SPACING` has passed
(reconcile.py): from then on, every older record, put back, is written too late to be
believed. See docs/bad-input.md for the seconds in between.
"""

from __future__ import annotations

import datetime
import hashlib
import hmac

from evc_operator.timestamps import format_time, parse_time

VERSION = "v2"
# How much later than its seal a genuine record may be written: the write's round trip,
# and this process's view of the server's clock (servertime.py), which is never ahead. A
# genuine write slower than that is believed no more than a forged one.
TOLERANCE = datetime.timedelta(seconds=5)
# A record superseded sooner than this after its sealing is confirmed once it has passed
# (confirm.py: read back, and written once more unless it stands as written): the
# managedFields stamp is cut to the second, so one second more than the tolerance.
SPACING = TOLERANCE + datetime.timedelta(seconds=1)


def _message(uid: str, phase: str | None, unused_since: datetime.datetime | None,
             sealed_at: str) -> bytes:
    since = format_time(unused_since) if unused_since is not None else ""
    return "\n".join(("evc-status", VERSION, uid, phase or "", since, sealed_at)).encode()


def seal(key: bytes, uid: str, phase: str | None,
         unused_since: datetime.datetime | None, sealed_at: datetime.datetime) -> str:
    """The seal of these facts of the claim with this uid, sealed at `sealed_at` (the API
    server's clock): `v2:<sealed_at>:<hex digest>`."""
    moment = format_time(sealed_at, micro=True)
    digest = hmac.new(key, _message(uid, phase, unused_since, moment),
                      hashlib.sha256).hexdigest()
    return f"{VERSION}:{moment}:{digest}"


def sealed_at(stored: str | None) -> datetime.datetime | None:
    """When a seal says it was made (unverified: see `verify`); None if it says nothing."""
    parts = (stored or "").split(":", 1)
    if len(parts) != 2 or parts[0] != VERSION:
        return None
    moment, _, digest = parts[1].rpartition(":")
    try:
        return parse_time(moment) if moment and digest else None
    except ValueError:
        return None


def verify(key: bytes, uid: str, phase: str | None,
           unused_since: datetime.datetime | None, stored: str | None) -> bool:
    """Whether `stored` is the operator's seal of exactly these facts of this claim."""
    moment = sealed_at(stored)
    if moment is None or phase is None or stored is None:
        return False
    return hmac.compare_digest(seal(key, uid, phase, unused_since, moment), stored)


def written_in_time(stored: str | None, written: datetime.datetime | None) -> bool:
    """Whether a status whose seal verifies was written soon enough after its sealing to
    be the operator's own write of it (`written`: the latest status write's time stamped
    by the API server; None: no stamp, as on a claim whose managedFields an editor reset,
    who may delete it anyway)."""
    moment = sealed_at(stored)
    if moment is None:
        return False
    return written is None or written - moment <= TOLERANCE


def confirm_after(previous: tuple[str | None, datetime.datetime | None],
                  new: tuple[str | None, datetime.datetime | None],
                  last_sealed: datetime.datetime | None,
                  now: datetime.datetime) -> datetime.datetime | None:
    """When to confirm a record (confirm.py: read it back, write it once more unless it
    stands), after writing `new` (phase, unusedSince) at `now` over `previous`, the last
    record sealed at `last_sealed`; None: no need.

    Needed when the record it supersedes, put back, would make the deadline earlier and
    could still pass `written_in_time`: sealed less than `SPACING` ago. A record in use,
    put back, makes no deadline earlier (its grace counts from when it is read)."""
    if previous == new or previous[0] == "InUse":
        return None
    return confirm_found(last_sealed, now)


def confirm_found(sealed: datetime.datetime | None,
                  now: datetime.datetime) -> datetime.datetime | None:
    """When a process that finds a record of the operator's, sealed at `sealed`, without
    having written it (after a start, or a change of leader) is to confirm it; None: no
    need. Its writer may have owed a confirmation (`confirm_after`) that it can no longer
    make, and what the record superseded is not known: so any record sealed less than
    `SPACING` ago is confirmed once `SPACING` has passed since its seal (later than the
    writer's moment, which counted from the record before, and as good)."""
    if sealed is None:
        return None
    due = sealed + SPACING
    return due if now < due else None
