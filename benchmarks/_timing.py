"""Timing shared by the benchmark scripts (run as ``python benchmarks/<script>.py``)."""

from __future__ import annotations

import time

import jax
import numpy as np


def timed(fn, repeats=3):
    """``(out, first, best)``: ``fn()``'s result, the first call's seconds (compilation
    included) and the best of ``repeats`` further calls, each waited for on the device."""
    t0 = time.perf_counter()
    out = jax.block_until_ready(fn())
    first = time.perf_counter() - t0
    best = np.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = jax.block_until_ready(fn())
        best = min(best, time.perf_counter() - t0)
    return out, first, best
