"""A registry of "trap" residuals: problems that once made a solver claim success at a
point that is not a minimum (issue 12), and their relatives.

Each trap is a residual ``fun(p, *args)`` with data made for a dtype, a start, and
what is known about it: the best cost (0 for exact data) or ``None`` when the problem
has no minimum the solver can reach (then it must end with a failure status).  The
check :func:`stationary` is independent of the solver: it recomputes r and J in float64
at the returned point.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np


@dataclass(frozen=True, eq=False)
class Trap:
    name: str
    fun: object
    x0: tuple  # the start, in the problem's own units
    args: tuple  # numpy data (float64), cast to the dtype under test
    best_cost: float | None  # None: no reachable minimum, a failure status is required
    dtypes: tuple = ("float32", "float64")
    spread: float = 1e-3  # relative spread of the extra starts around x0


# --------------------------------------------------------------------------- residuals
def _log_where(p, t, y):
    # the single-where idiom: finite in forward mode, NaN in reverse mode at t = 0
    return jnp.where(t > 0, p[0] * jnp.log(t) + p[1] - y, 0.0)


def _power_where(p, t, y):
    # t**p at t = 0: d/dp = 0·log 0 is NaN in reverse mode only
    return jnp.where(t > 0, t ** p[0], 0.0) * p[1] - y


def _log1p_domain(p):
    # minimum at p = 2 lies outside the domain p < 1: no reachable minimum
    return p - 2 + 0 * jnp.log1p(-p)


def _sqrt_edge(p, t, y):
    # sqrt near 0: the start sits next to the domain edge of the model
    return p[0] * jnp.sqrt(jnp.abs(t - p[1])) - y


def _gaussian(p, x, y):
    return p[0] * jnp.exp(-0.5 * ((x - p[1]) / p[2]) ** 2) - y


def _decay(p, t, y):
    return p[0] * jnp.exp(-p[1] * t) - y


def _unused_parameter(p, t, y):
    return p[0] * t - y + 0 * p[1]


@jax.custom_vjp
def _softplus(x):
    return jnp.logaddexp(x, 0.0)


_softplus.defvjp(lambda x: (_softplus(x), x), lambda x, g: (g * jax.nn.sigmoid(x),))


def _custom_vjp(p, t, y):
    return _softplus(p[0] * t + p[1]) - y


def _overflow_start(p, t, y):
    return jnp.exp(p[0] * t) - y


def _rosenbrock(p):
    return jnp.stack([10 * (p[1] - p[0] ** 2), 1 - p[0]])


# --------------------------------------------------------------------------- data
def _traps():
    t0 = np.linspace(0.0, 2.0, 21)  # includes 0
    y_log = 1.5 * np.log(np.where(t0 > 0, t0, 1.0)) + 0.3
    y_pow = 2.0 * np.where(t0 > 0, t0, 1.0) ** 1.7 * (t0 > 0)
    ts = np.linspace(0.5, 3.0, 30)
    y_sqrt = 1.3 * np.sqrt(ts - 0.2)
    xg = np.linspace(-3.0, 3.0, 64)
    gauss = np.array([1.7, 0.3, 0.8])
    y_gauss = gauss[0] * np.exp(-0.5 * ((xg - gauss[1]) / gauss[2]) ** 2)
    td = np.linspace(0.0, 4.0, 40)
    y_decay = 2.5 * np.exp(-1.3 * td)
    y_soft = np.logaddexp(1.3 * ts - 1.0, 0.0)
    traps = [
        Trap("log_where", _log_where, (0.0, 0.0), (t0, y_log), 0.0),
        Trap("power_where", _power_where, (1.0, 1.0), (t0, y_pow), 0.0),
        Trap("log1p_domain", _log1p_domain, (0.5,), (), None),
        Trap("sqrt_edge", _sqrt_edge, (1.0, 0.0), (ts, y_sqrt), 0.0),
        Trap("decay_zero_amplitude", _decay, (0.0, 1.0), (td, y_decay), 0.0),
        Trap("unused_parameter", _unused_parameter, (1.0, 5.0), (ts, 2 * ts), 0.0),
        Trap("custom_vjp", _custom_vjp, (1.0, 0.0), (ts, y_soft), 0.0),
        Trap("overflow_start", _overflow_start, (1000.0,), (ts, ts), None),
        Trap("rosenbrock", _rosenbrock, (-1.2, 1.0), (), 0.0),
    ]
    # the same Gaussian with data and amplitude in other units: s·y with amplitude s·a
    scales = {"float32": (1e-30, 1e-12, 1e12, 1e30), "float64": (1e-150, 1e-100, 1e100, 1e150)}
    for dtype, ss in scales.items():
        for s in ss:
            traps.append(
                Trap(
                    f"gaussian_units_{s:g}",
                    _gaussian,
                    (s * 1.0, 0.0, 1.0),
                    (xg, s * y_gauss),
                    0.0,
                    dtypes=(dtype,),
                )
            )
    # a time axis in days near MJD 59 000 with a peak 0.05 d wide: center and width
    # differ in scale by 10⁶ (float64 only: float32 cannot place the peak)
    mjd = 59000.0 + np.linspace(0.0, 1.0, 80)
    y_mjd = 3.0 * np.exp(-0.5 * ((mjd - 59000.4) / 0.05) ** 2)
    traps.append(Trap("mjd_peak", _gaussian, (2.0, 59000.38, 0.06), (mjd, y_mjd), 0.0, ("float64",), 1e-7))
    return {t.name: t for t in traps}


TRAPS = _traps()


def cases():
    """(trap name, dtype) pairs."""
    return [(name, dtype) for name, trap in TRAPS.items() for dtype in trap.dtypes]


def stationary(trap: Trap, params, dtype) -> tuple[bool, str]:
    """Whether ``params`` is a minimum of ``trap``, checked in float64 from scratch:
    the cost is within the dtype-free tolerance of the best known value (relative to
    the cost at the start) and the cosine between r and every column of J is small, or
    the residual vanishes to that tolerance.  Needs x64 (the test harness enables it)."""
    p = np.asarray(params, np.float64)
    # the data as the solver saw them (rounded to its dtype), evaluated in float64
    args = tuple(np.asarray(a, dtype).astype(np.float64) for a in trap.args)
    fun = lambda q: trap.fun(q, *args)  # noqa: E731
    r = np.asarray(fun(jnp.asarray(p)), np.float64)
    jac = np.asarray(jax.jacrev(fun)(jnp.asarray(p)), np.float64)  # custom_vjp traps: reverse mode
    r0 = np.asarray(fun(jnp.asarray(trap.x0, jnp.float64)), np.float64)
    # compare in units of the largest start residual (no over/underflow at 1e±150)
    unit = np.max(np.abs(r0)) or 1.0
    r, jac, r0 = r / unit, jac / unit, r0 / unit
    cost, cost0 = 0.5 * r @ r, 0.5 * r0 @ r0
    if not np.isfinite(cost):
        return False, "non-finite cost"
    near_best = cost <= 1e-5 * cost0 if trap.best_cost == 0.0 else True
    norms = np.linalg.norm(jac, axis=0)
    cosines = np.abs(jac.T @ r)[norms > 0] / norms[norms > 0]
    rnorm = np.linalg.norm(r)
    small_gradient = rnorm == 0 or not cosines.size or np.max(cosines) <= 1e-3 * rnorm
    ok = near_best and (small_gradient or cost <= 1e-10 * cost0)
    worst = np.max(cosines, initial=0) / (rnorm or 1)
    return bool(ok), f"cost {cost:.3g} (start {cost0:.3g}), max cosine/‖r‖ {worst:.3g}"
