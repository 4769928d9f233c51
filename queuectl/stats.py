"""Pure figures of run history: the fixed histogram buckets, and percentiles from them.

Durations and waits are counted in fixed log-scale buckets (the Renard R10 series: ten edges per
decade, 1, 1.25, 1.6, 2, 2.5, 3.15, 4, 5, 6.3, 8, each at most 28% above the one before, from
1 ms to 10^8 s), so per-minute aggregates stay small and percentiles cost the same at a million
runs as at ten. A percentile is the upper edge of the bucket that holds it, capped by the exact
maximum: never below the true value, and at most 28% above it.
"""
from __future__ import annotations

import math
from bisect import bisect_left
from typing import Mapping, NamedTuple, Optional

_R10 = ("1", "1.25", "1.6", "2", "2.5", "3.15", "4", "5", "6.3", "8")
# Built from decimal strings, so 0.25 is 0.25 and not 0.25000000000000006.
EDGES = tuple(float(f"{mantissa}e{exponent}") for exponent in range(-3, 8) for mantissa in _R10) + (1e8,)
OVERFLOW = len(EDGES)  # the bucket of values above the last edge
# The Prometheus histogram's `le` edges: a subset of EDGES, so its counts are exact sums.
PROMETHEUS_EDGES = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 25.0, 50.0, 100.0,
                    250.0, 500.0, 1000.0, 2500.0, 10000.0)


def bucket(seconds: float) -> int:
    """The index of the bucket that counts `seconds`: the first edge >= it (Prometheus's `le`)."""
    return bisect_left(EDGES, seconds)


def percentile(histogram: Mapping[int, int], p: float, maximum: float) -> Optional[float]:
    """The nearest-rank `p` percentile of the counted values, to the bucket (see module doc)."""
    total = sum(histogram.values())
    if total == 0:
        return None
    rank = max(1, math.ceil(p / 100 * total))
    seen = 0
    for index in sorted(histogram):
        seen += histogram[index]
        if seen >= rank:
            return maximum if index >= OVERFLOW else min(EDGES[index], maximum)
    return maximum


def cumulative(histogram: Mapping[int, int], edges: tuple = PROMETHEUS_EDGES) -> list:
    """[(edge, count of values <= edge)] for each edge, then (inf, total): a Prometheus histogram."""
    indexes = [EDGES.index(edge) for edge in edges]
    out = []
    for edge, limit in zip(edges, indexes):
        out.append((edge, sum(n for index, n in histogram.items() if index <= limit)))
    out.append((math.inf, sum(histogram.values())))
    return out


def merge(into: dict, histogram: Mapping) -> dict:
    """Add one stored histogram ({"12": 3, ...}, bucket index as text) into `into`."""
    for index, n in histogram.items():
        key = int(index)
        into[key] = into.get(key, 0) + n
    return into


class Window(NamedTuple):
    """The runs that ended in a window, summed from per-minute aggregates."""

    by_outcome: dict  # outcome -> runs
    durations: dict  # bucket -> runs
    duration_sum: float
    duration_max: float
    waits: dict
    wait_max: float


def summary(window: Window, minutes: float) -> dict:
    """The window's figures as `stats --json` shows them (durations in seconds)."""
    total = sum(window.by_outcome.values())
    rounded = (lambda x: None if x is None else round(x, 6))
    return {
        "total": total,
        "by_outcome": window.by_outcome,
        "per_minute": round(total / minutes, 3) if minutes else None,
        "duration_seconds": {
            "p50": rounded(percentile(window.durations, 50, window.duration_max)),
            "p95": rounded(percentile(window.durations, 95, window.duration_max)),
            "max": rounded(window.duration_max) if total else None,
            "mean": rounded(window.duration_sum / total) if total else None,
        },
        "wait_seconds": {
            "p50": rounded(percentile(window.waits, 50, window.wait_max)),
            "p95": rounded(percentile(window.waits, 95, window.wait_max)),
        },
    }


def human(seconds: Optional[float]) -> str:
    """`850 ms`, `12.5 s`, `4m 10s`, `2h 05m`, `3d 4h`: a duration for people."""
    if seconds is None:
        return "-"
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.1f} s" if seconds < 10 else f"{seconds:.0f} s"
    minutes, secs = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes}m {secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h {minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d {hours}h"
