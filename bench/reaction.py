"""How soon the operator reacts to a user's end, against the floors of the same run.

Reaction is the time from the harness's PATCH that ends a user pod to the claim's `Idle`,
as the harness's watch of claims sees it. The floors are what no operator can beat: the
bare watch (the same PATCH to the pod's `Succeeded`, as the harness's watch of pods sees
it) and, with Jobs, the Job floor (the same PATCH to the Job's `Complete`): what is left
over the Job floor is the operator's own share.
"""

from __future__ import annotations

from typing import Any

from bench import capacity, stats
from bench.observe import Key


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 1)


def summary_ms(values: list[float]) -> dict[str, Any]:
    """`stats.summary` of seconds, in milliseconds (the count as it is)."""
    return {k: _ms(v) if k != "count" else v for k, v in stats.summary(values).items()}


def _ratio(value: float | None, floor: float | None) -> float | None:
    return round(value / floor, 2) if value and floor else None


def reaction(sent: dict[Key, float], idle: dict[Key, float], succeeded: dict[Key, float],
             stage_of: dict[Key, float] | None = None,
             complete: dict[Key, float] | None = None) -> dict[str, Any]:
    """The result's reaction figures. `sent`: when each claim's user was ended; `idle`:
    when each claim was seen `Idle`; `succeeded`: when its user pod was seen `Succeeded`
    (all by claim). With `stage_of` (the pace each user ended at: `--steps`), by stage and
    the capacity; with `complete` (when each claim's Job was seen `Complete`: `--jobs`),
    against the Job floor too."""
    reaction = [idle[key] - at for key, at in sent.items()]
    floor = [succeeded[key] - at for key, at in sent.items() if key in succeeded]
    r99 = stats.percentile(reaction, 99)
    result: dict[str, Any] = {
        "reaction_ms": summary_ms(reaction), "bare_watch_ms": summary_ms(floor),
        "reaction_ratio_p99": _ratio(r99, stats.percentile(floor, 99))}
    if stage_of:
        result["stages"] = stages = capacity.by_stage(
            {key: idle[key] - at for key, at in sent.items()},
            {key: succeeded[key] - at for key, at in sent.items() if key in succeeded},
            stage_of)
        result["capacity_per_second"] = capacity.capacity(stages)
    if complete is not None:
        job_floor = [complete[key] - at for key, at in sent.items() if key in complete]
        result["job_floor_ms"] = summary_ms(job_floor)
        result["reaction_over_job_floor_ms"] = summary_ms(
            [idle[key] - complete[key] for key in sent if key in complete])
        result["reaction_ratio_job_floor_p99"] = _ratio(r99, stats.percentile(job_floor, 99))
    return result


def own_share(before: dict[float, float], after: dict[float, float]) -> dict[str, Any]:
    """The operator's own share of the reaction, from its `evc_reaction_seconds` read
    before and after the users ended: from its noticing a change (a claim put in its work
    queue) until it had acted (status written), slots waited for included; the pod's way
    to the operator is not in it. Percentiles interpolated within the buckets. (Any of
    its histograms between two reads: `before` empty for all it observed.)"""
    counts = {bound: count - before.get(bound, 0.0) for bound, count in after.items()}
    return {"count": int(max(counts.values(), default=0)),
            **{name: _ms(stats.bucket_percentile(counts, q))
               for name, q in (("p50", 50), ("p90", 90), ("p99", 99))}}
