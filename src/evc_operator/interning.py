"""Strings that tens of thousands of projections repeat, stored once: `interned`.

`sys.intern` makes equal strings one object, and on Python 3.11 and 3.13 lets it go once
nothing holds it. On Python 3.12 every interned string is immortal (PEP 683): a string
interned once is never freed, so values that are new with each object (a Job's
controller-uid label, a controller's name) would pile up for as long as the operator runs
(35 MiB for 300,000 of them). There, `interned` keeps strings as they are: the tables that
share whole label sets and times (users.label_set, timestamps.shared_time) still share
what repeats most.
"""

from __future__ import annotations

import sys
from collections.abc import Callable


def _as_is(text: str) -> str:
    return text


def interning(version: tuple[int, int] = (sys.version_info[0], sys.version_info[1])
              ) -> Callable[[str], str]:
    """How strings are interned on this Python `version`."""
    return _as_is if version == (3, 12) else sys.intern


interned = interning()
