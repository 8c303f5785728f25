"""Timing: the one place the package measures wall time."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable


def median_latency(fn: Callable[[], object], warmup: int = 10, repeats: int = 50) -> float:
    """Median wall time of fn() in seconds, after warm-up calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        tic = time.perf_counter()
        fn()
        times.append(time.perf_counter() - tic)
    return statistics.median(times)
