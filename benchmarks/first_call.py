"""First-call (compile) time: 10⁴ float32 1-D Gaussians, each call in a new process.

    python benchmarks/first_call.py            # results/first_call.{json,txt}

For ``least_squares_batch`` and ``fit("gaussian")``, with and without compaction, and
``curve_fit`` of one of the curves (its later calls each with a new length in the same
length bucket: 61, 57, 50 points after 64), in a fresh Python process each (so nothing
is compiled yet, and no persistent cache is on): the first call's time, the best of
three later calls, the XLA programs the first call compiled with their compile times
(from ``jax.log_compiles``), and how many the later calls compiled.  optimistix's first
call on the same batch is measured too when it is installed, and ``fit`` once more in a
process that finds JAX's persistent compilation cache filled by an earlier process
(``JAX_COMPILATION_CACHE_DIR``).
"""

from __future__ import annotations

import json
import logging
import os
import pathlib
import platform
import re
import subprocess
import sys
import tempfile
import time

RESULTS = pathlib.Path(__file__).parent / "results"
CASES = [
    ("least_squares_batch", True),
    ("least_squares_batch", False),
    ("fit", True),
    ("fit", False),
    ("optimistix", None),
    ("curve_fit", None),
]


def measure(kind: str, compact: bool | None) -> dict:
    """One case, in this process: must be the first JAX work the process does."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    import jaxlm

    compiles = []

    class Catch(logging.Handler):
        def emit(self, record):
            m = re.search(r"XLA compilation of (\S+) in ([0-9.e-]+) sec", record.getMessage())
            if m:
                compiles.append((m.group(1), float(m.group(2))))

    n, dt = 10_000, np.float32
    rng = np.random.default_rng(0)
    x = np.linspace(-5, 5, 64).astype(dt)
    true = np.stack(
        [rng.uniform(1, 3, n), rng.uniform(-1, 1, n), rng.uniform(0.5, 1.5, n), rng.uniform(0, 0.5, n)], 1
    ).astype(dt)
    # the data in numpy: nothing may compile before the measured call
    y = (true[:, :1] * np.exp(-0.5 * ((x - true[:, 1:2]) / true[:, 2:3]) ** 2) + true[:, 3:]).astype(dt)
    y = (y + 0.05 * rng.standard_normal(y.shape)).astype(dt)
    p0 = (true * (1 + 0.1 * rng.uniform(-1, 1, true.shape))).astype(dt)

    def residual(p, x, y):
        return p[0] * jnp.exp(-0.5 * ((x - p[1]) / p[2]) ** 2) + p[3] - y

    def gaussian(x, a, mu, sigma, c):
        return a * jnp.exp(-0.5 * ((x - mu) / sigma) ** 2) + c

    lengths = iter([64, 61, 57, 50])  # one curve; later calls: new lengths in the same bucket
    if kind == "curve_fit":

        def call():
            m = next(lengths)
            return jaxlm.curve_fit(gaussian, x[:m], y[0, :m], p0=p0[0])
    elif kind == "least_squares_batch":
        call = lambda: jaxlm.least_squares_batch(residual, p0, (x, y), in_axes=(None, 0), compact=compact)  # noqa: E731
    elif kind == "fit":
        call = lambda: jaxlm.fit("gaussian", x, y, compact=compact)  # noqa: E731
    else:
        import optimistix as optx

        solver = optx.LevenbergMarquardt(rtol=jaxlm.default_tolerance(dt), atol=jaxlm.default_tolerance(dt))
        one = lambda p, y: (
            optx.least_squares(  # noqa: E731
                lambda q, a: residual(q, x, a), solver, p, args=y, max_steps=200, throw=False
            ).value
        )
        batched = jax.jit(jax.vmap(one))
        call = lambda: batched(p0, y)  # noqa: E731
    logger = logging.getLogger("jax")
    logger.addHandler(Catch())
    with jax.log_compiles(True):
        t0 = time.perf_counter()
        jax.block_until_ready(call())
        first = time.perf_counter() - t0
    n_first = len(compiles)
    later = []
    with jax.log_compiles(True):
        for _ in range(3):
            t0 = time.perf_counter()
            jax.block_until_ready(call())
            later.append(time.perf_counter() - t0)
    later_programs = len(compiles) - n_first
    del compiles[n_first:]
    big = [(name, round(t, 3)) for name, t in compiles if t >= 0.05]
    return {
        "call": kind,
        "compact": compact,
        "first_s": first,
        "later_s": min(later),
        "programs_compiled": len(compiles),
        "later_programs": later_programs,
        "compile_s": sum(t for _, t in compiles),
        "largest": big,
    }


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "--case":
        kind, compact = sys.argv[2].split(":")
        print(json.dumps(measure(kind, None if compact == "None" else compact == "True")))
        return
    rows = []
    cache = tempfile.mkdtemp(prefix="jaxlm-xla-cache-")
    cached = {
        "JAX_COMPILATION_CACHE_DIR": cache,
        "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
        "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0",
    }
    for kind, compact, env, label in [*((k, c, {}, k) for k, c in CASES), ("fit", True, cached, None)]:
        if label is None:  # a first process fills the cache; the measured one reads it
            fill = [sys.executable, __file__, "--case", "fit:True"]
            subprocess.run(fill, env={**os.environ, **env}, check=True, capture_output=True)
            label = "fit, warm persistent cache"
        proc = subprocess.run(
            [sys.executable, __file__, "--case", f"{kind}:{compact}"],
            capture_output=True,
            text=True,
            env={**os.environ, **env},
        )
        if proc.returncode != 0:
            if kind == "optimistix" and "No module named 'optimistix'" in proc.stderr:
                continue
            raise RuntimeError(proc.stderr[-2000:])
        rows.append({**json.loads(proc.stdout.strip().splitlines()[-1]), "call": label})
        r = rows[-1]
        print(
            f"{r['call']:26s} compact={str(r['compact']):5s} first {r['first_s']:.2f} s, later "
            f"{1e3 * r['later_s']:.0f} ms; {r['programs_compiled']} programs, {r['compile_s']:.2f} s of XLA "
            f"compilation",
            flush=True,
        )
    import jax

    header = f"jax {jax.__version__}, {platform.machine()}, {jax.devices()[0].platform}, float32, 10⁴ fits"
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "first_call.json").write_text(json.dumps({"machine": header, "rows": rows}, indent=1))
    lines = [
        header,
        "",
        "| call | compact | first call | later calls | programs | XLA compile | compiled by later calls |",
    ]
    lines.append("|---|---|---:|---:|---:|---:|---:|")
    for r in rows:
        call = r["call"] + (" (1 curve; later: new lengths)" if r["call"] == "curve_fit" else "")
        lines.append(
            f"| {call} | {r['compact']} | {r['first_s']:.2f} s | {1e3 * r['later_s']:.0f} ms "
            f"| {r['programs_compiled']} | {r['compile_s']:.2f} s | {r['later_programs']} |"
        )
    (RESULTS / "first_call.txt").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
