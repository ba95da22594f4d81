"""Throughput of the fitting layer: ``jaxlm.fit`` (pcov + bounds) vs plain ``least_squares``.

10⁴ noisy 1-D Gaussians (64 points, 4 parameters), in float32 and float64:

* ``jaxlm.fit`` with bounds on every parameter and the covariance (pcov, perr, chi2);
* ``jaxlm.least_squares`` under ``jax.vmap`` + ``jax.jit`` on the same residual (no
  bounds, no covariance): the cost of the fitting layer is the difference;
* ``scipy.optimize.curve_fit`` in a Python loop (float64, on 300 of the curves).

Times are the best of 3 calls after a first (compiling) call.

    python benchmarks/fit.py [--n 10000] [--out benchmarks/results/fit.json]
"""

from __future__ import annotations

import argparse
import json
import pathlib
import time

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import scipy.optimize  # noqa: E402
from _timing import timed  # noqa: E402

import jaxlm  # noqa: E402

M = 64


def gaussian(x, a, c, s, b):
    return a * jnp.exp(-0.5 * ((x - c) / s) ** 2) + b


def residual(p, x, y):
    return gaussian(x, p[0], p[1], p[2], p[3]) - y


def make_data(n, seed=0):
    rng = np.random.default_rng(seed)
    x = np.linspace(-5.0, 5.0, M)
    true = np.stack(
        [rng.uniform(1, 3, n), rng.uniform(-1, 1, n), rng.uniform(0.5, 1.5, n), rng.uniform(0, 0.5, n)], 1
    )
    y = true[:, :1] * np.exp(-0.5 * ((x - true[:, 1:2]) / true[:, 2:3]) ** 2) + true[:, 3:]
    y = y + 0.03 * rng.standard_normal(y.shape)
    p0 = np.asarray(jaxlm.models.gaussian.guess(jnp.asarray(x), jnp.asarray(y)))
    return x, y, p0


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--scipy", type=int, default=300)
    parser.add_argument("--out", default="benchmarks/results/fit.json")
    opts = parser.parse_args(argv)
    x, y, p0 = make_data(opts.n)
    lower = np.array([0.0, -5.0, 0.05, -1.0])
    upper = np.array([10.0, 5.0, 5.0, 1.0])
    rows = []
    for dtype in (jnp.float32, jnp.float64):
        xd, yd, p0d = (jnp.asarray(a, dtype) for a in (x, y, p0))
        # the lambdas run inside their own loop iteration (timed calls them at once)
        res, first_fit, t_fit = timed(lambda: jaxlm.fit(gaussian, xd, yd, p0d, bounds=(lower, upper)))  # noqa: B023
        solve = jax.jit(jax.vmap(lambda p, yy: jaxlm.least_squares(residual, p, args=(xd, yy))))  # noqa: B023
        sol, first_ls, t_ls = timed(lambda: solve(p0d, yd))  # noqa: B023
        rows.append(
            dict(
                dtype=jnp.dtype(dtype).name,
                n=opts.n,
                fit_fits_per_s=opts.n / t_fit,
                fit_first_call_s=first_fit,
                least_squares_fits_per_s=opts.n / t_ls,
                least_squares_first_call_s=first_ls,
                fit_converged=float(np.mean(res.success)),
                least_squares_converged=float(np.mean(sol.success)),
                max_param_diff=float(np.max(np.abs(np.asarray(res.params) - np.asarray(sol.params)))),
            )
        )
    k = min(opts.scipy, opts.n)
    t0 = time.perf_counter()
    for i in range(k):
        scipy.optimize.curve_fit(
            lambda xx, a, c, s, b: a * np.exp(-0.5 * ((xx - c) / s) ** 2) + b,
            x,
            y[i],
            p0[i],
            bounds=(lower, upper),
        )
    scipy_rate = k / (time.perf_counter() - t0)

    lines = [
        f"{opts.n} Gaussians x {M} points, 2-core CPU; "
        f"scipy curve_fit (trf, bounds) loop: {scipy_rate:,.0f} fits/s",
        f"{'dtype':>8} | {'fit (pcov+bounds)':>18} | {'least_squares vmap':>18} | {'fit/ls':>6} | "
        f"{'fit/scipy':>9} | {'first call fit / ls':>20} | converged",
    ]
    for r in rows:
        lines.append(
            f"{r['dtype']:>8} | {r['fit_fits_per_s']:>12,.0f} /s   | "
            f"{r['least_squares_fits_per_s']:>12,.0f} /s   | "
            f"{r['fit_fits_per_s'] / r['least_squares_fits_per_s']:>6.2f} | "
            f"{r['fit_fits_per_s'] / scipy_rate:>8.0f}x | "
            f"{r['fit_first_call_s']:>8.2f} s / {r['least_squares_first_call_s']:.2f} s | "
            f"{100 * r['fit_converged']:.1f}% / {100 * r['least_squares_converged']:.1f}%"
        )
    print("\n".join(lines))
    out = pathlib.Path(opts.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"rows": rows, "scipy_fits_per_s": scipy_rate}, indent=1))
    out.with_suffix(".txt").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
