"""Capacity and bursts (issue 16): what the operator sustains, beside what a bare client
gets from the same API server in the same run, so that runs on machines of different
speed compare.

- `stages`: the user pods finish in stages of rising pace (e.g. 50, 100, 200, 400 a
  second), each stage waiting until the claims of the one before are `Idle`; `capacity`
  is the highest pace whose reaction p99 stays within `RATIO` times the bare watch's p99
  of the same stage.
- `bare_creates`: how long a bare client takes to create as many PVCs as there are claims,
  at once, with the harness's concurrency: the floor for claims created at once reaching
  `Pending` with their PVC.
- `bare_status_patches`: how many status patches a second a bare client gets through: the
  floor for the operator's writes.
"""

from __future__ import annotations

import datetime
import time
from collections.abc import Mapping, Sequence
from typing import Any

from bench import stats, workload
from bench.client import MERGE_PATCH, Api

RATIO = 2.0  # the goal: reaction p99 at most twice the bare watch's p99
BARE_NAMESPACE = "bench-bare"  # no claim is ever made here: the operator never reads it

Key = tuple[str, str]


def stages(count: int, rates: Sequence[float]) -> list[tuple[float, int]]:
    """`count` user pods over the `rates`, as evenly as can be (earlier stages take one
    more where it does not divide): (pace per second, pods) for each stage."""
    size, extra = divmod(count, len(rates))
    return [(rate, size + (1 if number < extra else 0)) for number, rate in enumerate(rates)]


def finishing_seconds(count: int, rate: float, rates: Sequence[float]) -> float:
    """How long the user pods take to finish: at `rate`, or through the stages."""
    if not rates:
        return count / rate
    return sum(pods / pace for pace, pods in stages(count, rates))


def by_stage(reaction: Mapping[Key, float], floor: Mapping[Key, float],
             stage_of: Mapping[Key, float]) -> list[dict[str, Any]]:
    """Per stage (in order of pace): reaction and bare watch (ms) and their p99 ratio."""
    found = []
    for pace in sorted(set(stage_of.values())):
        keys = [key for key, rate in stage_of.items() if rate == pace]
        mine = [reaction[key] * 1000 for key in keys if key in reaction]
        bare = [floor[key] * 1000 for key in keys if key in floor]
        r99, f99 = stats.percentile(mine, 99), stats.percentile(bare, 99)
        found.append({"per_second": pace, "reaction_ms": stats.summary(mine),
                      "bare_watch_ms": stats.summary(bare),
                      "ratio_p99": round(r99 / f99, 2) if r99 and f99 else None})
    return found


def capacity(per_stage: Sequence[Mapping[str, Any]]) -> float | None:
    """The highest pace whose ratio is within RATIO, provided every slower one was too."""
    best = None
    for stage in per_stage:
        ratio = stage.get("ratio_p99")
        if ratio is None or ratio > RATIO:
            break
        best = stage["per_second"]
    return best


async def bare_creates(api: Api, count: int) -> dict[str, Any]:
    """Create `count` PVCs at once in BARE_NAMESPACE (kept: deleting them would have the
    PVC protection controller at work for minutes after); seconds from the first request
    to the last answer."""
    await api.request("POST", "/api/v1/namespaces", workload.namespace(BARE_NAMESPACE))
    start = time.monotonic()
    await api.each(range(count), lambda number: api.request(
        "POST", f"/api/v1/namespaces/{BARE_NAMESPACE}/persistentvolumeclaims",
        workload.bare_pvc(f"bare-{number:05d}")))
    seconds = time.monotonic() - start
    # Milliseconds kept: a small run's creates take less than 0.05 s, and the burst is
    # divided by them.
    return {"count": count, "seconds": round(seconds, 3),
            "per_second": round(count / max(seconds, 1e-9), 1)}


async def bare_status_patches(api: Api, pods: Sequence[Key]) -> dict[str, Any]:
    """Patch the status of each of `pods` once (a condition no one reads), as fast as the
    harness's concurrency allows: status patches a second."""
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    body = {"status": {"conditions": [{"type": "bench.zalando.org/Probe", "status": "True",
                                       "lastTransitionTime": now}]}}
    start = time.monotonic()
    await api.each(pods, lambda key: api.request(
        "PATCH", f"/api/v1/namespaces/{key[0]}/pods/{key[1]}/status", body,
        content_type=MERGE_PATCH))
    seconds = time.monotonic() - start
    return {"count": len(pods), "seconds": round(seconds, 1),
            "per_second": round(len(pods) / max(seconds, 1e-9), 1)}
