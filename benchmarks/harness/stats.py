"""Percentiles of measured samples."""

from __future__ import annotations

from collections.abc import Sequence


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0–100), linearly interpolated."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    pos = (len(ordered) - 1) * q / 100.0
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def nearest_rank(ordered: Sequence[float], q: float) -> float:
    """The q-th percentile (0–100) of sorted values, the sample at rank ``q% × n`` without
    interpolation (the Python load generator's, as it has always been computed)."""
    return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))]
