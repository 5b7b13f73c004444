"""Python's cyclic garbage collector, kept from stalling the event loop; its pauses measured.

A pass of the collector stops the whole process: the one event loop that reacts to pods
waits for it. How often CPython makes a full pass (every object the operator holds) is
set by how many objects survive its young passes: with its default thresholds (a young
pass for every 700 objects more), objects that live a fraction of a second (a request in
flight, a claim's event being handled) survive young passes in numbers and are promoted
to the oldest generation, and once those promoted since the last full pass reach a
quarter of it, the next full pass comes. Measured at 10,000 claims and 50,000 pods
(docs/benchmarks.md): 65 full passes in the 74 s of the burst (5.9 s stopped), and in
the step where users end at 100 a second one every 10 s, 110 to 190 ms each.

A young pass every `YOUNG` objects more instead lets such objects die young, as most
do, before any pass sees them: objects freed by their last reference (nearly all)
leave the count, so only what lives on, or is cyclic garbage, makes the next pass come.
The cost is at most `YOUNG` objects of cyclic garbage held a while longer. The older
thresholds stay CPython's.

Every pass's pause is told to `observe(generation, seconds)` (the operator's metric
`evc_gc_pause_seconds`).
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable
from typing import Any

YOUNG = 20_000  # net new objects that make a young pass (CPython: 700)

Observe = Callable[[int, float], None]

_installed: list[Callable[[str, dict[str, Any]], None]] = []


def install(observe: Observe) -> None:
    """Set the young threshold, and time every pass (again: the last `observe` only)."""
    uninstall()
    _, middle, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG, middle, oldest)
    began = [0.0]

    def timed(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            began[0] = time.perf_counter()
        else:
            observe(int(info["generation"]), time.perf_counter() - began[0])

    gc.callbacks.append(timed)
    _installed.append(timed)


def uninstall() -> None:
    """Stop timing passes (the thresholds stay)."""
    while _installed:
        callback = _installed.pop()
        if callback in gc.callbacks:
            gc.callbacks.remove(callback)
