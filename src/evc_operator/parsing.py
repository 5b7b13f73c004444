"""JSON from the API server, parsed whatever its depth.

orjson parses fast but refuses objects nested deeper than 1,024 levels; the API server
takes them to 10,000 (Go's `encoding/json`), and a custom resource that keeps unknown
fields can be that deep (its `managedFields` as deep again). Refused in a watch or a list,
such an object stopped its kind's informer for good: every retry met it again, and the
proofs of its namespaces fell back to lists that lack what changed while the informer
lagged (docs/lifecycle.md, "What cannot be known"). Past orjson's limit, `loads` parses
with the standard library instead, its recursion limit raised for as long, on a thread of
its own with room to spare: its C scanner on Python 3.11, its pure-Python one from 3.12 on
(where the C scanner's depth no longer follows `setrecursionlimit`; near four times
slower). Rare, and slow only then (the event loop waits for it).
"""

from __future__ import annotations

import json
import json.scanner
import sys
import threading
from typing import Any

import orjson

# Go's encoding/json refuses deeper: the API server holds nothing deeper than this.
API_DEPTH = 10_000
# The C stack of the thread that parses a deep document: the standard library's parser
# takes a few hundred bytes a level.
DEEP_STACK = 64 * 2**20
_DEPTH_REFUSED = "depth limit exceeded"
_deep = threading.Lock()


def loads(data: bytes | str) -> Any:
    """`data` parsed: by orjson, or past its depth limit by the standard library."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as error:
        if _DEPTH_REFUSED not in str(error):
            raise
    return deep_loads(data)


def deep_loads(data: bytes | str) -> Any:
    """`data` parsed by the standard library on a thread with room for `API_DEPTH`
    levels. The recursion limit is raised for as long (it is the interpreter's);
    one at a time."""
    result: list[Any] = []
    failure: list[BaseException] = []

    def parse() -> None:
        try:
            decoder = json.JSONDecoder()
            if sys.version_info >= (3, 12):  # Python all the way down (three frames a
                # level): the C scanner's depth is no longer the recursion limit's there.
                # Below, the C scanner, near four times as fast (the loop waits meanwhile).
                decoder.scan_once = json.scanner.py_make_scanner(  # type: ignore[attr-defined]
                    decoder)
            text = data.decode() if isinstance(data, bytes) else data
            result.append(decoder.decode(text))
        except BaseException as error:  # handed to the caller's thread
            failure.append(error)

    with _deep:
        limit = sys.getrecursionlimit()
        stack = threading.stack_size()
        sys.setrecursionlimit(max(limit, API_DEPTH * 4 + 1000))
        try:
            threading.stack_size(DEEP_STACK)
            try:
                worker = threading.Thread(target=parse, name="deep-json")
            finally:
                threading.stack_size(stack)
            worker.start()
            worker.join()
        finally:
            sys.setrecursionlimit(limit)
    if failure:
        raise failure[0]
    return result[0]
