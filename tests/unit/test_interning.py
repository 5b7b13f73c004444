"""Interning: shared where the interpreter frees what it interned, kept as is on 3.12,
whose interned strings are immortal (interning.py)."""

from __future__ import annotations

import sys

from evc_operator import interning
from evc_operator.users import label_set


def test_strings_are_interned_except_on_python_3_12() -> None:
    assert interning.interning((3, 11)) is sys.intern
    assert interning.interning((3, 13)) is sys.intern
    as_is = interning.interning((3, 12))
    text = "".join(["controller-uid-", "1234"])
    assert as_is(text) is text
    assert interning.interned is interning.interning((sys.version_info[0],
                                                      sys.version_info[1]))


def test_label_sets_are_shared_whatever_the_interning() -> None:
    first = label_set({"job-name": "".join(["nightly", "-1"])})
    again = label_set({"job-name": "".join(["nightly", "-1"])})
    assert first is again
