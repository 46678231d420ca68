"""Percentiles of latency samples."""

from __future__ import annotations

import math
from typing import Any


def percentiles(samples: list[float], digits: int = 3) -> dict[str, Any]:
    """p50/p95/p99 (nearest rank), mean, min, max of `samples` (ms in, ms out)."""
    if not samples:
        return {"n": 0}
    ordered = sorted(samples)
    n = len(ordered)

    def rank(p: float) -> float:
        return ordered[min(n - 1, max(0, math.ceil(p / 100 * n) - 1))]

    return {
        "n": n,
        "p50": round(rank(50), digits),
        "p95": round(rank(95), digits),
        "p99": round(rank(99), digits),
        "mean": round(sum(ordered) / n, digits),
        "min": round(ordered[0], digits),
        "max": round(ordered[-1], digits),
    }
