"""Confidence intervals by profile likelihood (lmfit's ``conf_interval``), for one fit or
a whole batch at once.

For parameter j, level s and side ±, the interval's end is the value v where the profile
``χ²_j(v) = min over the other parameters of χ²(p | p_j = v)`` reaches the level's
threshold.  As lmfit, the threshold comes from the F-test with one parameter fixed,
``χ²_j(v) = χ²_min·(1 + F⁻¹(P_s; 1, dof)/dof)``; with ``absolute_sigma=True`` (σ known) or
the Poisson estimator it is the likelihood-ratio threshold ``χ²_min + χ²₁⁻¹(P_s)``
(``+ s²``).  ``P_s = erf(s/√2)``, or s itself for s < 1 (lmfit's convention).

All ends of all parameters of all fits are found together: every evaluation of the
profile is one batched :func:`jaxlm.fit` (the profiled parameter held, the others
re-fitted from the best fit), inside one compiled program reused by every iteration.
The root is bracketed by stepping out from the quadratic estimate (doubling), then found
by the Illinois variant of regula falsi.  An end beyond a bound is ``±inf`` (lmfit's
convention); one whose profile fits fail, or that is not bracketed, is NaN, with a status.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

FOUND, BEYOND_BOUND, FAILED = 0, 1, 2


class ConfidenceIntervals(NamedTuple):
    """Result of :func:`conf_interval`.

    Attributes:
      lower, upper: ``(..., n, k)``: the interval's ends for each parameter and each
        level of ``sigmas`` (NaN for a parameter not profiled; ``∓inf`` beyond a bound).
      best: ``(..., n)``: the best-fit parameters.
      sigmas, probabilities: the k levels and their coverage.
      status: ``(..., n, k, 2)``: 0 found, 1 beyond a bound, 2 failed (lower, upper).
      param_names: the parameters' names.
    """

    lower: np.ndarray
    upper: np.ndarray
    best: np.ndarray
    sigmas: tuple
    probabilities: tuple
    status: np.ndarray
    param_names: tuple

    def report(self, index=()) -> str:
        """lmfit's ``ci_report(ci, with_offset=False)`` for one fit (``index`` in a batch)."""
        lower, upper, best = self.lower[index], self.upper[index], self.best[index]
        if best.ndim != 1:
            raise ValueError("report() shows one fit: pass its index in the batch")
        heads = [f"{100 * p:.2f}%" for p in self.probabilities]
        width = max(map(len, self.param_names))
        lines = [" " * (width + 2) + "".join(h.rjust(11) for h in [*heads[::-1], "_BEST_", *heads])]
        for j, name in enumerate(self.param_names):
            if np.all(np.isnan(lower[j])):
                continue
            cells = [*lower[j][::-1], best[j], *upper[j]]
            lines.append(f" {name.ljust(width)}:" + "".join(f"{v:11.5g}" for v in cells))
        return "\n".join(lines)


def thresholds(chi2_min, dof, probabilities, f_test: bool):
    """χ² at each level's end: ``(..., k)``."""
    chi2_min = np.asarray(chi2_min, np.float64)[..., None]
    dof = np.maximum(np.asarray(dof), 1)[..., None]
    p = np.asarray(probabilities, np.float64)
    if not f_test:
        return chi2_min + _chi2_1_quantile(p)
    return chi2_min * (1 + _f1_quantile(p, dof) / dof)


def _chi2_1_quantile(p):
    """χ²₁⁻¹(p) = (√2·erf⁻¹(p))²."""
    with jax.enable_x64(True):
        return np.asarray(2 * jax.scipy.special.erfinv(jnp.asarray(p, jnp.float64)) ** 2)


def _f1_quantile(p, dof):
    """F⁻¹(p; 1, dof): the square of Student's t quantile, by bisection on the t CDF
    ``1 − ½ I_{d/(d+t²)}(d/2, ½)`` (float64, 200 halvings)."""
    p, dof = np.broadcast_arrays(np.asarray(p, np.float64), np.asarray(dof, np.float64))
    with jax.enable_x64(True):
        d = jnp.asarray(dof)
        target = jnp.asarray((1 + p) / 2)

        def cdf(t):
            return 1 - 0.5 * jax.scipy.special.betainc(d / 2, 0.5, d / (d + t * t))

        lo, hi = jnp.zeros_like(d), jnp.full_like(d, 1e8)
        for _ in range(200):
            mid = 0.5 * (lo + hi)
            below = cdf(mid) < target
            lo, hi = jnp.where(below, mid, lo), jnp.where(below, hi, mid)
        return np.asarray((0.5 * (lo + hi)) ** 2)


def levels(sigmas) -> tuple[tuple[float, ...], tuple[float, ...]]:
    sigmas = tuple(sorted(float(s) for s in np.atleast_1d(sigmas)))
    if not sigmas or any(not math.isfinite(s) or s <= 0 for s in sigmas):
        raise ValueError(f"sigmas must be positive numbers, got {sigmas}")
    return sigmas, tuple(s if s < 1 else math.erf(s / math.sqrt(2)) for s in sigmas)


def find_ends(profile, best, perr, lo, hi, chi2_min, target, scale, *, max_iter: int, rtol: float):
    """Solve ``profile(v) = target`` on every (fit, parameter, level, side) at once.

    Args:
      profile: ``v (P, ...) -> χ²`` of the profile fits (NaN where a fit failed), P the
        flattened (parameter, level, side) axis in front of the batch.
      best, perr, lo, hi, chi2_min, target, scale: per (P, ...): the best-fit value, its
        error, its bounds, χ²_min, the threshold and the quadratic model's χ² per perr².
    Returns:
      the ends ``(P, ...)`` and their statuses.
    """
    direction = np.where(np.arange(target.shape[0]) % 2 == 0, -1.0, 1.0)  # lower, upper, lower, …
    direction = direction.reshape((-1,) + (1,) * (target.ndim - 1))
    step = np.where(perr > 0, perr, np.maximum(np.abs(best) * 0.2, 1e-3))
    limit = np.where(direction < 0, lo, hi)

    def at(t):
        v = best + direction * t * step
        beyond = (v - limit) * direction >= 0
        return np.where(beyond, limit, v), beyond

    def h(t):
        v, beyond = at(t)
        return np.asarray(profile(v)) - target, beyond

    t_lo = np.zeros_like(target)
    h_lo = chi2_min - target
    t_hi = np.sqrt(np.maximum(target - chi2_min, 0) / np.where(scale > 0, scale, 1))
    t_hi = np.where(np.isfinite(t_hi) & (t_hi > 0), t_hi, 1.0)
    h_hi, beyond = h(t_hi)
    for _ in range(30):  # step out until the threshold is crossed or a bound is reached
        more = (h_hi < 0) & ~beyond
        if not np.any(more):
            break
        t_lo, h_lo = np.where(more, t_hi, t_lo), np.where(more, h_hi, h_lo)
        t_hi = np.where(more, 2 * t_hi, t_hi)
        h_new, beyond_new = h(t_hi)
        h_hi, beyond = np.where(more, h_new, h_hi), np.where(more, beyond_new, beyond)
    status = np.where(beyond & (h_hi < 0), BEYOND_BOUND, FOUND)
    status = np.where(~np.isfinite(h_hi) | ((h_hi < 0) & ~beyond), FAILED, status)
    active = status == FOUND
    side_kept = np.zeros(target.shape, int)  # Illinois: halve the h of a side kept twice
    for _ in range(max_iter):
        if not np.any(active & (t_hi - t_lo > rtol * t_hi)):
            break
        t_new = np.where(active, (t_lo * h_hi - t_hi * h_lo) / np.where(active, h_hi - h_lo, 1), t_lo)
        h_new, _ = h(t_new)
        failed = active & ~np.isfinite(h_new)
        status = np.where(failed, FAILED, status)
        active &= ~failed
        up = active & (h_new > 0)
        down = active & (h_new <= 0)
        t_hi, h_hi = np.where(up, t_new, t_hi), np.where(up, h_new, h_hi)
        t_lo, h_lo = np.where(down, t_new, t_lo), np.where(down, h_new, h_lo)
        h_lo = np.where(up & (side_kept == -1), 0.5 * h_lo, h_lo)
        h_hi = np.where(down & (side_kept == 1), 0.5 * h_hi, h_hi)
        side_kept = np.where(up, -1, np.where(down, 1, side_kept))
    t_root = np.where(
        h_hi - h_lo != 0, (t_lo * h_hi - t_hi * h_lo) / np.where(h_hi != h_lo, h_hi - h_lo, 1), t_hi
    )
    ends, _ = at(np.clip(t_root, t_lo, t_hi))
    ends = np.where(status == BEYOND_BOUND, direction * np.inf, ends)
    return np.where(status == FAILED, np.nan, ends), status


ARRAY_OPTIONS = ("sigma", "mask", "bounds")
DRIVER_OPTIONS = ("compact", "chunk_size", "progress", "devices")


def conf_interval(
    f, xdata, ydata, result, sigmas=(1, 2, 3), *, params=None, max_iter=60, rtol=1e-6, **fit_options
):
    """Confidence intervals by profile likelihood for one fit or a batch (lmfit's
    ``conf_interval``, batched): see the module docstring for the thresholds.

    Args:
      f, xdata, ydata, **fit_options: exactly what was passed to :func:`jaxlm.fit`
        (``sigma``, ``mask``, ``bounds``, ``fixed``, ``absolute_sigma``, ``loss``, …;
        ``p0`` and the driver's ``compact``, ``chunk_size``, ``progress``, ``devices`` are
        accepted and not needed: the profile fits start from the best fit, in one program).
      result: the :class:`FitResult` that fit returned.
      sigmas: levels in standard deviations (a value below 1 is a probability, as lmfit).
      params: names or indices of the parameters to profile (default: every free one).
      max_iter, rtol: regula falsi iterations and relative tolerance on each end.

    Returns:
      :class:`ConfidenceIntervals` (numpy arrays with the batch shape in front).
    """
    from jaxlm._fitting._precision import data_precision
    from jaxlm._fitting._result import FitResult

    if not isinstance(result, FitResult):
        raise TypeError(f"result must be the FitResult of jaxlm.fit, got {type(result).__name__}")
    sigmas, probabilities = levels(sigmas)
    best = np.asarray(result.params, np.float64)
    batch, n = best.shape[:-1], best.shape[-1]
    names = result.param_names or tuple(f"p{i}" for i in range(n))
    lo, hi, fixed = _limits(f, fit_options, batch + (n,))
    which = _which(params, names, fixed)
    f_test = not (
        fit_options.get("absolute_sigma", False) or fit_options.get("estimator", "lse") == "poisson"
    )
    k = len(sigmas)
    thr = thresholds(result.chi2, result.dof, probabilities, f_test)  # batch + (k,)
    usable = np.asarray(result.success) & (np.asarray(result.dof) > 0)

    # the (parameter, level, side) axis P in front of the batch
    j_of = np.repeat(which, 2 * k)
    take = lambda a: np.moveaxis(a[..., j_of], -1, 0)  # noqa: E731  batch + (n,) -> (P,) + batch
    target = np.moveaxis(np.repeat(thr, 2, axis=-1), -1, 0)
    target = np.tile(target, (len(which),) + (1,) * len(batch))
    chi2_min = np.broadcast_to(np.asarray(result.chi2, np.float64), target.shape)
    scale = chi2_min / np.maximum(np.asarray(result.dof), 1) if f_test else np.ones_like(chi2_min)
    held = fixed[None] | (np.arange(n) == j_of.reshape((-1,) + (1,) * len(batch) + (1,)))
    for key in ("p0", *DRIVER_OPTIONS):  # the profile fits start from the best fit, in one program
        fit_options.pop(key, None)
    arrays = {key: fit_options.pop(key) for key in ARRAY_OPTIONS if key in fit_options}
    arrays["bounds"] = (lo, hi)

    with data_precision(xdata, ydata, result.params):
        ends, status = find_ends(
            _profiler(f, xdata, ydata, fit_options, arrays, best, j_of, held),
            take(best),
            take(np.asarray(result.perr, np.float64)),
            take(lo),
            take(hi),
            chi2_min,
            target,
            scale,
            max_iter=max_iter,
            rtol=rtol,
        )
    status = np.where(usable[None], status, FAILED)
    lower, upper, full_status = _per_parameter(np.where(status == FAILED, np.nan, ends), status, which, k, n)
    return ConfidenceIntervals(lower, upper, best, sigmas, probabilities, full_status, tuple(names))


def _limits(f, fit_options, shape):
    """The fit's bounds and fixed mask (by name or array), broadcast to batch + (n,)."""
    from jaxlm._fitting._inputs import resolve_model
    from jaxlm._fitting._names import read_names

    model, fn = resolve_model(f)
    _, bounds, fixed = read_names(
        fn, model, None, fit_options.pop("bounds", (-np.inf, np.inf)), fit_options.pop("fixed", None)
    )
    fixed = np.broadcast_to(np.asarray(False if fixed is None else fixed, bool), shape)
    lo, hi = (np.broadcast_to(np.asarray(b, np.float64), shape) for b in bounds)
    return lo, hi, fixed


def _profiler(f, xdata, ydata, fit_options, arrays, best, j_of, held):
    """χ²(v): every member of the (P,) + batch axis refitted with its parameter
    ``j_of[P]`` held at ``v`` (one vmapped, jitted ``fit``; NaN where it failed)."""
    from jaxlm._fitting._api import fit

    solve = jax.jit(
        lambda p0, hold, x, y, arrays: jax.vmap(
            lambda p, h: _chi2(fit(f, x, y, p, fixed=h, **arrays, **fit_options))
        )(p0, hold)
    )
    start = np.broadcast_to(best, (len(j_of),) + best.shape).copy()
    depth = best.ndim  # batch axes + the parameter axis

    def profile(v):
        p0 = start.copy()
        index = np.broadcast_to(j_of.reshape((-1,) + (1,) * depth), v.shape + (1,))
        np.put_along_axis(p0, index, v[..., None], -1)
        return solve(p0, held, xdata, ydata, arrays)

    return profile


def _per_parameter(ends, status, which, k, n):
    """(P,) + batch ends and statuses as batch + (n, k) lower and upper ends and
    batch + (n, k, 2) statuses (parameters not profiled: NaN, FAILED)."""
    batch = ends.shape[1:]
    ends = np.moveaxis(ends.reshape((len(which), k, 2) + batch), (0, 1, 2), (-3, -2, -1))
    status = np.moveaxis(status.reshape((len(which), k, 2) + batch), (0, 1, 2), (-3, -2, -1))
    lower = np.full(batch + (n, k), np.nan)
    upper = np.full(batch + (n, k), np.nan)
    full_status = np.full(batch + (n, k, 2), FAILED)
    lower[..., which, :], upper[..., which, :] = ends[..., 0], ends[..., 1]
    full_status[..., which, :, :] = status
    return lower, upper, full_status


def _chi2(res):
    return jnp.where(res.success, res.chi2, jnp.nan)


def _which(params, names, fixed) -> np.ndarray:
    free = ~np.all(fixed.reshape(-1, fixed.shape[-1]), axis=0) if fixed.size else np.ones(len(names), bool)
    if params is None:
        return np.flatnonzero(free)
    index = []
    for p in [params] if isinstance(params, str | int) else params:
        if isinstance(p, str):
            if p not in names:
                raise ValueError(f"params: unknown parameter {p!r}; the parameters are {list(names)}")
            p = names.index(p)
        if not isinstance(p, int | np.integer) or not 0 <= p < len(names):
            raise ValueError(f"params: {p!r} is not a parameter index in [0, {len(names)})")
        index.append(int(p))
    return np.asarray(sorted(set(index)), int)
