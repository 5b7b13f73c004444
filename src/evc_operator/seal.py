"""The operator's seal on the facts a claim's deadline rests on. Pure: no API, no clock.

A claim's status records its phase and when its last user ended (`unusedSince`): after a
restart or a change of leader, the countdown resumes from them. Anyone who may write
`ephemeralvolumeclaims/status` could write them too (`phase: Idle, unusedSince: 2000-...`).
So the operator stores, beside them, `status.seal`: an HMAC-SHA256 over the claim's uid and
those two facts, with a key only the operator holds (signingkey.py). A record whose seal
does not verify is not the operator's, and is taken the later way (lifecycle.believed).

The uid binds a seal to one claim: a record copied from another claim, or from an earlier
claim of the same name, does not verify.
"""

from __future__ import annotations

import datetime
import hashlib
import hmac

from evc_operator.timestamps import format_time

VERSION = "v1"


def _message(uid: str, phase: str | None, unused_since: datetime.datetime | None) -> bytes:
    since = format_time(unused_since) if unused_since is not None else ""
    return "\n".join(("evc-status", VERSION, uid, phase or "", since)).encode()


def seal(key: bytes, uid: str, phase: str | None,
         unused_since: datetime.datetime | None) -> str:
    """The seal of these facts of the claim with this uid."""
    digest = hmac.new(key, _message(uid, phase, unused_since), hashlib.sha256).hexdigest()
    return f"{VERSION}:{digest}"


def verify(key: bytes, uid: str, phase: str | None,
           unused_since: datetime.datetime | None, stored: str | None) -> bool:
    """Whether `stored` is the operator's seal of exactly these facts of this claim."""
    if not stored or phase is None:
        return False
    return hmac.compare_digest(seal(key, uid, phase, unused_since), stored)
