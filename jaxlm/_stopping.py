"""The stopping tests of one LM step, MINPACK style, relative and unit free.

Each ``CONVERGED_*`` status is a stationarity claim: ftol and xtol count only an
*informative* step (solve succeeded, trial point finite, and in every direction either
``μD_j ≤ A_jj`` or, for a rejected step, the point is stationary on that parameter's
scale); gtol is the cosine between r and every column of J.  See :func:`status`.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxlm._status import Status


def default_tolerance(dtype) -> float:
    """``eps^(3/4)`` of the dtype: 1.8e-12 for float64, 6.4e-6 for float32.

    Tight enough for NIST-certified accuracy in float64, loose enough that a float32
    fit stops once float32 precision is reached instead of running to ``max_steps``.
    """
    return float(jnp.finfo(dtype).eps) ** 0.75


def tolerances(solver, dtype):
    tol = default_tolerance(dtype)
    return tuple(tol if t is None else t for t in (solver.ftol, solver.xtol, solver.gtol))


def gtol_test(linalg, model, rr, gtol):
    """The scaled-gradient (stationarity) test: the cosine between r and every
    nonzero column of J is at most gtol, or r is zero (``rr = ‖r‖²``, from the pass
    over r that computes the cost: another pass over a batch of residuals costs more
    than this whole test)."""
    g = linalg.gradient(model)
    nd = linalg.normal_diag(model)
    colnorm = jnp.sqrt(jnp.where(nd > 0, nd, 1))
    cosines = jnp.where(nd > 0, jnp.abs(g) / colnorm, 0)
    return (rr == 0) | (jnp.max(cosines) <= gtol * jnp.sqrt(rr))


def scaled_gradient(linalg, model, cost, scale):
    """``|g_j| / (√S_j·‖r‖)`` for every parameter j: the gradient measured against the
    largest column norm the parameter has had (S, the running max of diag A), with
    ``‖r‖ = √(2C)``; 0 for columns never seen and for a zero cost.  Unlike the gtol
    cosine it vanishes where a column of J has shrunk to nothing at a minimum."""
    g = linalg.gradient(model)
    seen = scale > 0
    ratio = jnp.where(seen, jnp.abs(g) / jnp.sqrt(jnp.where(seen, scale, 1)), 0)
    rnorm = jnp.sqrt(2 * cost)
    return jnp.where(rnorm > 0, ratio / jnp.where(rnorm > 0, rnorm, 1), 0)


def status(solver, t, mu, mu_new, diag, model, scale, scale_new, model_sel, model_new, rr_new, n_steps):
    """The status after a step (``t``: its :class:`Trial`; ``rr_new``: ‖r‖² at the trial).

    All tests are relative (unit free).  Only an *informative* step may count for
    ftol/xtol, so that each of them is a stationarity claim: its solve succeeded, its
    trial point was finite, and in every direction the residual sees either the step
    was decided by the model, not by μ (``μD_j ≤ A_jj``), or — for a rejected step —
    the point is stationary on that parameter's scale (:func:`scaled_gradient` ≤
    eps^(3/8), whatever tolerances the caller chose: a direction whose Gauss–Newton
    curvature vanishes at the minimum, such as a parameter held at a bound by the fit
    layer's transform, or one that the data no longer determine, is damped there).  A
    damped direction elsewhere has a short step, and predicts a small reduction, only
    because μ is large: at the edge of the residual's domain (the minimum lies beyond
    it) μ grows without bound while the gradient stays.  A rejected informative step
    counts for xtol as in MINPACK (failing even at relative size xtol means no better
    point is within reach of the model).  Every other rejection (a failed solve, a
    non-finite trial point, a too-large acceleration) says nothing about the current
    point; such steps shrink until they are below machine precision and end as
    NO_PROGRESS.
    """
    dtype = t.cost.dtype
    ftol, xtol, gtol = tolerances(solver, dtype)
    nd = solver.linalg.normal_diag(model)
    undamped = (mu * diag <= nd) | (nd == 0)
    stationary = scaled_gradient(solver.linalg, model_sel, t.cost_sel, scale_new) <= jnp.sqrt(
        default_tolerance(dtype)
    )
    informative = t.solved_finite & jnp.all(undamped | (~t.accepted & stationary))
    sqrt_s = jnp.sqrt(scale)
    step_norm = jnp.linalg.norm(sqrt_s * t.step)
    x_norm = jnp.linalg.norm(sqrt_s * t.z_sel)
    ftol_met = (
        informative & (jnp.abs(t.actual) <= ftol * t.cost) & (t.predicted <= ftol * t.cost) & (t.rho <= 2)
    )
    xtol_met = informative & (step_norm <= xtol * x_norm)
    gtol_met = t.accepted & gtol_test(solver.linalg, model_new, rr_new, gtol)
    eps = jnp.finfo(dtype).eps
    stuck = ~t.accepted & ((step_norm <= eps * x_norm) | ~jnp.isfinite(mu_new))

    status = jnp.where(n_steps >= solver.max_steps, Status.MAX_STEPS, Status.RUNNING)
    status = jnp.where(stuck, Status.NO_PROGRESS, status)
    status = jnp.where(gtol_met, Status.CONVERGED_GTOL, status)
    status = jnp.where(xtol_met, Status.CONVERGED_XTOL, status)
    return jnp.where(ftol_met, Status.CONVERGED_FTOL, status)


class Trial(NamedTuple):
    """What the stopping tests need to know about one trial step (normalised units)."""

    step: jax.Array  # the step taken, h (+ d)
    z_sel: jax.Array  # the point kept: the trial if accepted, else the current one
    cost: jax.Array  # the cost before the step
    cost_sel: jax.Array  # the cost kept
    actual: jax.Array  # actual reduction C − C(trial)
    predicted: jax.Array  # reduction predicted for h
    rho: jax.Array  # gain ratio actual / predicted
    accepted: jax.Array
    solved_finite: jax.Array  # the solve succeeded and the trial point is finite


def finite_model(model):
    """Whether the residual and Jacobian behind ``model`` are finite, judged through the
    n×n model (JᵀJ and Jᵀr, or R and Qᵀr): it holds a NaN or an inf wherever r or J does
    (0·NaN and 0·inf are NaN), at a cost of O(n²) instead of two more passes over the
    m×n Jacobian of every member (a quarter of a step's time on a batch of 100-point
    decays).  It also fails a JᵀJ that overflows, which no step could use.  (Not from
    ``max|J|``: XLA's CPU reductions to a maximum drop NaNs on large arrays.)"""
    return jnp.all(jnp.isfinite(model.matrix)) & jnp.all(jnp.isfinite(model.vector))


def finite_trial(trial, cost_new, model_new):
    """Whether a trial point can be compared at all: point, residual, cost and Jacobian
    finite (:func:`finite_model`), and the cost not (nearly) underflowed — a residual
    that fell by about the dtype's range below the start's counts as non-finite, unless
    it is zero."""
    eps = jnp.finfo(cost_new.dtype).eps
    return (
        jnp.all(jnp.isfinite(trial))
        & jnp.isfinite(cost_new)
        & finite_model(model_new)
        & ((cost_new >= jnp.finfo(cost_new.dtype).tiny / eps) | (cost_new == 0))
    )
