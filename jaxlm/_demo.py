"""``jaxlm demo``: fit many noisy 1-D Gaussians in one call and compare with scipy."""

from __future__ import annotations

import collections
import time

import jax
import jax.numpy as jnp
import numpy as np

import jaxlm

N_POINTS = 64


def gaussian(p, x):
    """amplitude · exp(−½((x − centre)/width)²) + offset"""
    return p[0] * jnp.exp(-0.5 * ((x - p[1]) / p[2]) ** 2) + p[3]


def residual(p, x, y):
    return gaussian(p, x) - y


def simulate(n: int, seed: int, dtype):
    """n curves on a shared grid: random amplitude, centre, width, offset; noise σ = 0.05."""
    rng = np.random.default_rng(seed)
    x = np.linspace(-5.0, 5.0, N_POINTS)
    true = np.stack(
        [
            rng.uniform(0.5, 2.0, n),
            rng.uniform(-2.0, 2.0, n),
            rng.uniform(0.4, 1.5, n),
            rng.uniform(-0.2, 0.2, n),
        ],
        axis=1,
    )
    clean = true[:, :1] * np.exp(-0.5 * ((x[None, :] - true[:, 1:2]) / true[:, 2:3]) ** 2) + true[:, 3:]
    y = clean + 0.05 * rng.standard_normal(clean.shape)
    return x.astype(dtype), y.astype(dtype), true


def guess(x, y):
    """Vectorised start from the data: offset = edge median, peak height and position,
    width from the area under the peak."""
    offset = np.median(np.concatenate([y[:, :5], y[:, -5:]], axis=1), axis=1)
    signal = y - offset[:, None]
    amp = signal.max(axis=1)
    centre = x[np.argmax(signal, axis=1)]
    dx = x[1] - x[0]
    area = np.clip(signal, 0, None).sum(axis=1) * dx
    width = np.clip(area / (np.sqrt(2 * np.pi) * np.maximum(amp, 1e-3)), 0.1, 5.0)
    return np.stack([amp, centre, width, offset], axis=1).astype(y.dtype)


_fit_batch = jax.jit(jax.vmap(lambda p, x, y: jaxlm.least_squares(residual, p, (x, y)), in_axes=(0, None, 0)))


def run(n: int = 100_000, n_scipy: int = 300, png: str | None = "jaxlm-demo.png", seed: int = 0) -> dict:
    dtype = np.dtype(jnp.result_type(float))  # float32 unless the caller enabled x64
    x, y, true = simulate(n, seed, dtype)
    p0 = guess(x, y)
    xj, yj, p0j = jnp.asarray(x), jnp.asarray(y), jnp.asarray(p0)

    t0 = time.perf_counter()
    sol = jax.block_until_ready(_fit_batch(p0j, xj, yj))
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    sol = jax.block_until_ready(_fit_batch(p0j, xj, yj))
    steady = time.perf_counter() - t0

    status = np.asarray(sol.status)
    steps = np.asarray(sol.n_steps)
    params = np.asarray(sol.params)
    print(
        f"jaxlm {jaxlm.__version__} on {jax.devices()[0].platform.upper()}, {dtype.name}: "
        f"{n:,} Gaussian fits of {N_POINTS} points, 4 parameters, in one call"
    )
    print(f"  first call (with compilation): {first:.2f} s")
    print(f"  second call: {steady:.2f} s  ->  {n / steady:,.0f} fits/s")
    print(
        f"  steps per fit: median {np.median(steps):.0f}, 99th percentile {np.percentile(steps, 99):.0f}, "
        f"max {steps.max()}"
    )
    print("  status:")
    for code, count in sorted(collections.Counter(status.tolist()).items()):
        print(f"    {jaxlm.Status(code).name:15s} {count:8,d}  ({100 * count / n:.2f} %)")

    report = {
        "n": n,
        "dtype": dtype.name,
        "first_call_s": first,
        "steady_s": steady,
        "fits_per_s": n / steady,
        "status": dict(collections.Counter(status.tolist())),
    }
    report.update(_compare_with_scipy(x, y, p0, params, status, n_scipy, steady / n))
    if png:
        _plot(png, x, y, params, steps, true)
        print(f"  figure: {png}")
    return report


def _compare_with_scipy(x, y, p0, params, status, n_scipy, our_time_per_fit):
    try:
        import scipy.optimize
    except ImportError:  # pragma: no cover - scipy is in the demo extra
        print("  (install scipy to compare with scipy.optimize.least_squares)")
        return {}
    x64 = x.astype(np.float64)

    def fun(p, yy):
        return p[0] * np.exp(-0.5 * ((x64 - p[1]) / p[2]) ** 2) + p[3] - yy

    def jac(p, yy):
        u = (x64 - p[1]) / p[2]
        e = np.exp(-0.5 * u * u)
        return np.stack([e, p[0] * e * u / p[2], p[0] * e * u * u / p[2], np.ones_like(x64)], axis=1)

    rel = []
    t0 = time.perf_counter()
    for i in range(n_scipy):
        res = scipy.optimize.least_squares(
            fun, p0[i].astype(np.float64), jac=jac, args=(y[i].astype(np.float64),), method="lm"
        )
        if status[i] in (1, 2, 3) and res.success:
            rel.append(np.max(np.abs(params[i] - res.x) / np.maximum(np.abs(res.x), 1e-2)))
    scipy_per_fit = (time.perf_counter() - t0) / n_scipy
    rel = np.asarray(rel)
    print(
        f"  agreement with scipy.optimize.least_squares(method='lm', float64) on {n_scipy} fits: "
        f"max relative difference median {np.median(rel):.1e}, worst {rel.max():.1e}"
    )
    print(
        f"  time per fit: scipy {1e6 * scipy_per_fit:.0f} µs, jaxlm {1e6 * our_time_per_fit:.2f} µs  "
        f"({scipy_per_fit / our_time_per_fit:,.0f}x)"
    )
    return {
        "scipy_fits": n_scipy,
        "scipy_median_rel_diff": float(np.median(rel)),
        "scipy_max_rel_diff": float(rel.max()),
        "scipy_s_per_fit": scipy_per_fit,
    }


def _plot(path, x, y, params, steps, true):
    """Five fits, their residuals, the steps per fit, and each recovered parameter
    against its true value (2 000 fits)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 4, figsize=(15, 7))
    xf = np.linspace(x[0], x[-1], 400)
    for i, colour in zip(range(5), ("C0", "C1", "C2", "C3", "C4"), strict=True):
        p = params[i].astype(np.float64)
        axes[0, 0].plot(x, y[i] + 1.5 * i, ".", color=colour, ms=3)
        axes[0, 0].plot(xf, np.asarray(gaussian(p, xf)) + 1.5 * i, "-", color=colour)
        axes[0, 1].plot(
            x, y[i] - np.asarray(gaussian(p, x.astype(np.float64))) + 0.25 * i, ".", color=colour, ms=3
        )
    axes[0, 0].set(title="five of the fits (shifted for clarity)", xlabel="x", ylabel="y")
    axes[0, 1].set(title="their residuals y − f (shifted; noise σ = 0.05)", xlabel="x", ylabel="y − f")
    axes[0, 2].hist(steps, bins=np.arange(0, steps.max() + 2) - 0.5, color="C0")
    axes[0, 2].set(
        title=f"steps per fit ({len(steps):,} fits)", xlabel="LM steps", ylabel="fits", yscale="log"
    )
    ok = np.all(np.isfinite(params), axis=1)
    shown = np.flatnonzero(ok)[:2000]
    names = ("amplitude", "centre", "width", "offset")
    for j, ax in enumerate([axes[0, 3], *axes[1, :3]]):
        ax.plot(true[shown, j], params[shown, j], ".", ms=2, alpha=0.5)
        lo, hi = true[:, j].min(), true[:, j].max()
        ax.plot([lo, hi], [lo, hi], "-", color="0.3", lw=0.8)
        ax.set(title=f"{names[j]}: recovered vs true", xlabel="true", ylabel="fitted")
    error = (params[ok] - true[ok]) / np.abs(true[ok]).clip(0.1)
    axes[1, 3].hist(np.abs(error).max(axis=1), bins=np.logspace(-4, 0, 60), color="C0")
    axes[1, 3].set(title="worst relative error per fit", xscale="log", xlabel="|fitted − true| / |true|")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
