"""Timing helper shared by the benchmark scripts."""
from __future__ import annotations

import statistics
import time


def median_seconds(call, repeats: int) -> float:
    """Median wall time of `repeats` calls, after one untimed warm-up call (first-call allocations everywhere)."""
    call()
    runs = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        runs.append(time.perf_counter() - start)
    return statistics.median(runs)
