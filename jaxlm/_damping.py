"""Damping: the scaling diagonal D, the starting μ, and the μ update rules.

The damped step solves ``(A + μD) h = −g`` with ``A = JᵀJ``.  The choice of ``D``:

``"levenberg"``   D = I.  Not scale invariant (a change of units of one parameter
                  changes the path); said to resist parameter evaporation
                  (Transtrum & Sethna 2012).
``"marquardt"``   D = diag(A) at the current point.  Scale invariant; singular where a
                  column of J vanishes, hence the floor below.
``"more"``        D = running maximum of diag(A) over the iterates (Moré 1978; MINPACK,
                  GSL's default, Gpufit since 2017).  Scale invariant, and D never
                  shrinks when a column of J temporarily becomes small — nor after a
                  far start whose curvature was enormous: MGH Chebyquad from 10·x0 starts
                  where diag A is ~10¹² times its value at the solution, and every later
                  step stays damped by that memory until the step limit.
``"relative"``    D = I in each parameter's *natural unit* u_j, fixed at the start:
                  D_j = 1/u_j² in the caller's units, with u_j = |x₀_j|, or for a
                  parameter started at 0 the change that moves the residual by its own
                  size (``max|r(x₀)| / max|∂r/∂x_j|``).  Identity damping — what makes
                  ``levenberg`` robust on problems posed in sensible units — made scale
                  invariant: u_j carries the parameter's unit, so a rescaled problem
                  follows the same path.  Not floored (D is fixed and positive).

``benchmarks/damping_study.py`` compares the four, and the *restart* combinations
(:class:`jaxlm.LevenbergMarquardt`'s ``restart``: a member that stops with MAX_STEPS or
NO_PROGRESS runs again from x₀ with a second damping, and the lower cost is kept), with
MINPACK, optimistix and jaxopt run for run (README, "Which damping?").

All four are applied in the solver's *normalised units* (see :mod:`jaxlm._units`):
the residual and every parameter are rescaled by powers of two fixed at the start, so
that r and each parameter are O(1).  That rescaling is exact in floating point, so
``more`` and ``marquardt`` follow the same path whatever the units of the data and the
parameters; ``levenberg`` keeps its meaning of identity damping *in the caller's
units* through ``D = (ρ·c)²`` (ρ the residual's factor, c the parameters'), and
``relative`` is ``(ρ·c/u)²`` (``Units.natural``), the same path for any rescaling up
to rounding (bit for bit when the factors are powers of two).

``more``'s and ``marquardt``'s D are floored so ``A + μD`` stays positive definite when a column of J is zero
or all but zero: ``D_i ≥ eps² · max_j D_j`` (D = 1 when every column is zero).  In the
normalised units a column measures what a *relative* change of its parameter does to the
relative residual, so this floor is unit free and couples only parameters whose relative
effect is below eps of the largest one's — not identifiable at the dtype's precision
(a rate whose exponential has saturated, an evaporated one).  Parameters in any units
(amperes at 1e-12, timestamps at 59 000) keep their own curvature.  (Applied in the
caller's units, as before issue 12, the same floor damped the centre of a Gaussian in
amperes as if it were 10¹⁰ times steeper and stopped the fit at its start.)

μ is dimensionless for ``marquardt``/``more`` and carries the units of A for
``levenberg`` and ``relative``.  The starting value ``μ₀ = τ · max_i(A_ii / D_i)`` (Nielsen 1999, Madsen,
Nielsen & Tingleff 2004) is therefore ``τ`` for the scale-invariant choices, which keeps
their whole path invariant under a rescaling of the parameters.

μ update rules, with gain ratio ρ = actual / predicted reduction:

``"nielsen"``     accept: μ ← μ·max(1/3, 1 − (2ρ − 1)³), ν ← 2;
                  reject: μ ← μ·ν, ν ← 2ν                      (Nielsen 1999)
``"marquardt"``   accept: μ ← μ/10;  reject: μ ← 10·μ           (Marquardt 1963; Gpufit)
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

DAMPINGS = ("levenberg", "marquardt", "more", "relative")
UPDATES = ("nielsen", "marquardt")


def floor_diag(diag: jax.Array) -> jax.Array:
    """Apply the relative floor ``eps² · max(diag)`` (1 where diag is all zero or not
    finite)."""
    eps = jnp.finfo(diag.dtype).eps
    dmax = jnp.max(jnp.where(jnp.isfinite(diag), diag, 0))
    usable = dmax > 0
    floored = jnp.maximum(jnp.where(jnp.isfinite(diag), diag, dmax), dmax * (eps * eps))
    return jnp.where(usable, floored, jnp.ones_like(diag))


def update_scale(scale: jax.Array | None, normal_diag: jax.Array) -> jax.Array:
    """The running maximum of diag(JᵀJ) in normalised units: MINPACK's scaling (squared).

    Kept in the state for every damping choice: it is ``D`` for ``"more"`` (after
    :func:`floor_diag`) and it scales the xtol test for all three, so that stopping is
    unit free even for ``levenberg``.  Zero columns stay zero here.
    """
    nd = jnp.where(jnp.isfinite(normal_diag), normal_diag, 0)
    return nd if scale is None else jnp.maximum(scale, nd)


def damping_diag(
    damping: str, scale: jax.Array, normal_diag: jax.Array, unit: jax.Array, natural: jax.Array
) -> jax.Array:
    """D for the current point from the running ``scale`` and diag(JᵀJ) there.

    ``unit`` is ``(ρ·c)²``, the caller's identity in normalised units (``levenberg``);
    ``natural`` the identity in the parameters' natural units (``relative``,
    :class:`jaxlm._units.Units`).
    """
    if damping == "relative":
        return jnp.where(jnp.isfinite(natural) & (natural > 0), natural, jnp.ones_like(natural))
    if damping == "levenberg":
        # (ρ·c)² may under- or overflow for extreme units; 1 (normalised) stands in there
        return jnp.where(jnp.isfinite(unit) & (unit > 0), unit, jnp.ones_like(unit))
    if damping == "marquardt":
        return floor_diag(normal_diag)
    if damping == "more":
        return floor_diag(scale)
    raise ValueError(f"damping must be one of {DAMPINGS}, got {damping!r}")


def initial_mu(tau: float, normal_diag: jax.Array, diag: jax.Array) -> jax.Array:
    """μ₀ = τ · max_i(A_ii / D_i), floored at the smallest normal number."""
    ratio = jnp.max(jnp.where(jnp.isfinite(diag) & (diag > 0), normal_diag / diag, 0))
    tiny = jnp.finfo(diag.dtype).tiny
    return jnp.maximum(jnp.asarray(tau, diag.dtype) * ratio, tiny)


def update_mu(
    update: str, accepted: jax.Array, rho: jax.Array, mu: jax.Array, nu: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """Return the next ``(μ, ν)`` after a step with gain ratio ``rho``.

    A rejected step always raises μ, whatever ``rho`` holds (it may be NaN there).
    μ is kept at or above the smallest normal number so it never underflows to zero.
    """
    tiny = jnp.finfo(mu.dtype).tiny
    two = jnp.asarray(2, nu.dtype)
    if update == "nielsen":
        safe_rho = jnp.where(accepted, rho, 1)
        shrink = jnp.maximum(1.0 / 3.0, 1 - (2 * safe_rho - 1) ** 3)
        mu_new = jnp.where(accepted, mu * shrink, mu * nu)
        nu_new = jnp.where(accepted, two, nu * 2)
    elif update == "marquardt":
        mu_new = jnp.where(accepted, mu / 10, mu * 10)
        nu_new = nu
    else:
        raise ValueError(f"update must be one of {UPDATES}, got {update!r}")
    return jnp.maximum(mu_new, tiny), nu_new
