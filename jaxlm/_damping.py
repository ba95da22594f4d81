"""Damping: the scaling diagonal D, the starting μ, and the μ update rules.

The damped step solves ``(A + μD) h = −g`` with ``A = JᵀJ``.  The choice of ``D``:

``"levenberg"``   D = I.  Not scale invariant (a change of units of one parameter
                  changes the path); said to resist parameter evaporation
                  (Transtrum & Sethna 2012).
``"marquardt"``   D = diag(A) at the current point.  Scale invariant; singular where a
                  column of J vanishes, hence the floor below.
``"more"``        D = running maximum of diag(A) over the iterates (Moré 1978; MINPACK,
                  GSL's default, Gpufit since 2017; jaxlm's default).  Scale invariant,
                  and D never shrinks when a column of J temporarily becomes small.

``benchmarks/damping_study.py`` compares the three (README, "Which damping?").

Every ``D`` is floored so ``A + μD`` stays positive definite when a column of J is zero:
``D_i ≥ floor · max_j D_j`` with ``floor = eps²`` of the dtype.  The floor is relative,
hence unit free, and tiny enough that parameters whose scales differ by up to ~1/eps
still see their own curvature.  If every column is zero (J = 0) D falls back to I.

μ is dimensionless for ``marquardt``/``more`` and carries the units of A for
``levenberg``.  The starting value ``μ₀ = τ · max_i(A_ii / D_i)`` (Nielsen 1999, Madsen,
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

DAMPINGS = ("levenberg", "marquardt", "more")
UPDATES = ("nielsen", "marquardt")


def floor_diag(diag: jax.Array) -> jax.Array:
    """Apply the relative floor ``eps² · max(diag)`` (D = I when diag is all zero)."""
    eps = jnp.finfo(diag.dtype).eps
    dmax = jnp.max(diag)
    finite_max = jnp.isfinite(dmax) & (dmax > 0)
    floor = jnp.where(finite_max, dmax * (eps * eps), 1)
    return jnp.where(finite_max, jnp.maximum(diag, floor), jnp.ones_like(diag))


def update_scale(scale: jax.Array | None, normal_diag: jax.Array) -> jax.Array:
    """The running maximum of diag(JᵀJ), floored: MINPACK's scaling (squared).

    Kept in the state for every damping choice: it is ``D`` for ``"more"`` and it scales
    the xtol test for all three, so that stopping is unit free even for ``levenberg``.
    """
    if scale is None:
        return floor_diag(normal_diag)
    return floor_diag(jnp.maximum(scale, normal_diag))


def damping_diag(damping: str, scale: jax.Array, normal_diag: jax.Array) -> jax.Array:
    """D for the current point from the running ``scale`` and diag(JᵀJ) there."""
    if damping == "levenberg":
        return jnp.ones_like(scale)
    if damping == "marquardt":
        return floor_diag(normal_diag)
    if damping == "more":
        return scale
    raise ValueError(f"damping must be one of {DAMPINGS}, got {damping!r}")


def initial_mu(tau: float, normal_diag: jax.Array, diag: jax.Array) -> jax.Array:
    """μ₀ = τ · max_i(A_ii / D_i), floored at the smallest normal number."""
    ratio = jnp.max(normal_diag / diag)
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
