"""Summaries of measurements. Pure."""

from __future__ import annotations

import math
from collections.abc import Sequence


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (0-100), nearest rank; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def bucket_percentile(counts: dict[float, float], q: float) -> float | None:
    """The q-th percentile (0-100) of a histogram's observations, from its cumulative
    counts by upper bound (Prometheus' `le`), interpolated linearly within the bucket it
    falls in, as Prometheus' `histogram_quantile` does; None for no observations. Beyond
    the last finite bound, that bound."""
    bounds = sorted(counts)
    total = counts[bounds[-1]] if bounds else 0
    if total <= 0:
        return None
    rank, lower, below = q / 100 * total, 0.0, 0.0
    for bound in bounds:
        if counts[bound] >= rank:
            if math.isinf(bound):
                return lower
            share = (rank - below) / (counts[bound] - below) if counts[bound] > below else 1
            return lower + (bound - lower) * share
        lower, below = bound, counts[bound]
    return lower


def summary(values: Sequence[float]) -> dict[str, float | int | None]:
    return {"count": len(values), "min": min(values) if values else None,
            "p50": percentile(values, 50), "p99": percentile(values, 99),
            "max": max(values) if values else None}


def slope(points: Sequence[tuple[float, float]]) -> float | None:
    """Least-squares slope of y over x; None with fewer than two distinct x."""
    if len(points) < 2:
        return None
    mean_x = sum(x for x, _ in points) / len(points)
    mean_y = sum(y for _, y in points) / len(points)
    spread = sum((x - mean_x) ** 2 for x, _ in points)
    if spread == 0:
        return None
    return sum((x - mean_x) * (y - mean_y) for x, y in points) / spread
