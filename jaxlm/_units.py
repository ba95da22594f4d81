"""Normalised units: the solver's own, exact, rescaling of the residual and the parameters.

A fit in physical units — amperes (1e-12), molar concentrations, timestamps near 59 000 —
has residuals and Jacobian columns whose sizes differ from 1, and from each other, by
many orders of magnitude.  Forming ``JᵀJ`` and ``½‖r‖²`` from them squares those sizes:
in float32 a residual of 1e-20 already underflows, and a relative floor on ``D`` couples
columns whose curvatures legitimately differ.  So the solver never works in the caller's
units.  At the start it picks

* ``ρ = 2^-e``, with ``max|r(x₀)| ∈ [2^(e-1), 2^e)``, and divides every residual by it;
* ``c_j``, a power of two per parameter: the magnitude of its start ``|x₀_j|``, or, for a
  parameter started at 0, the unit that puts its normalised Jacobian column
  ``ρ·c_j·∂r/∂x_j`` in ``[½, 1)`` (1 when that column is zero too); a start so small
  that its normalised column would underflow in ``JᵀJ`` counts as a start at 0;

and iterates on ``z = x / c`` with the residual ``ρ·r(c·z)``.  Multiplying by a power of
two is exact in binary floating point (short of overflow or underflow), so:

* the path is the caller's path, exactly: every quantity is the caller's one times a
  power of two, and every test (gain ratio, ftol, xtol, gtol) is a ratio;
* a problem whose data or parameters are rescaled by powers of two follows a
  bit-identical path, and any other rescaling the same path up to rounding, over the
  whole range where the residual and the Jacobian themselves are finite.

In these units a column of J measures what a *relative* change of its parameter does to
the relative residual — a unit-free quantity — so the damping's floor
(:mod:`jaxlm._damping`) can be relative without coupling parameters whose units differ.

The factors are fixed at the start (a pure function of ``r(x₀)``, ``J(x₀)`` and ``x₀``)
and carried in the state as :class:`Units`.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp


class Units(NamedTuple):
    """The exact rescaling of one problem (arrays only; batched under vmap).

    Attributes:
      residual: ρ, a scalar power of two; the solver's residual is ``ρ·r``.
      params: c, shape (n,), powers of two; the solver's variables are ``z = x / c``.
      natural: shape (n,), the identity in each parameter's *natural unit* ``u_j``,
        expressed in normalised units: ``(ρ·c_j / u_j)²`` relative to the start's ρ
        (the D of ``damping="relative"``, :mod:`jaxlm._damping`).  ``u_j = |x₀_j|``,
        or for a parameter started at 0 the change that moves the residual by its own
        size, ``max|r(x₀)| / max|∂r/∂x_j|``; 1 where neither exists.  Not a power of
        two: it transforms with the units of the data and parameters, so the path it
        gives is the same for any rescaling, up to rounding.
    """

    residual: jax.Array
    params: jax.Array
    natural: jax.Array


def identity(n: int, dtype) -> Units:
    """No rescaling (ρ = 1, c = 1)."""
    return Units(jnp.ones((), dtype), jnp.ones((n,), dtype), jnp.ones((n,), dtype))


def power_of_two(exponent: jax.Array, dtype) -> jax.Array:
    """``2**exponent`` exactly, built from its bits; the exponent is clipped to the
    dtype's normal range so the result is always a finite positive normal number."""
    info = jnp.finfo(dtype)
    bits = info.bits
    mantissa = info.nmant
    bias = info.maxexp - 1
    int_type = jnp.int64 if bits == 64 else jnp.int32
    e = jnp.clip(exponent, info.minexp, info.maxexp - 1).astype(int_type)
    return jax.lax.bitcast_convert_type((e + bias) << mantissa, dtype)


def exponent(v: jax.Array) -> jax.Array:
    """``e`` with ``v ∈ [2^(e-1), 2^e)`` for positive normal v; 0 elsewhere (zero,
    negative, non-finite; XLA flushes subnormals to zero).  Read from the bits: ``jnp.frexp``
    computes the same but compiles to several times the code, and this runs in every step."""
    info = jnp.finfo(v.dtype)
    int_type = jnp.int64 if info.bits == 64 else jnp.int32
    good = jnp.isfinite(v) & (v >= info.tiny)
    bits = jax.lax.bitcast_convert_type(jnp.where(good, v, 1), int_type)
    return jnp.where(good, (bits >> info.nmant) - (info.maxexp - 2), 0)


def from_start(res: jax.Array, jac_t: jax.Array, x: jax.Array) -> Units:
    """The units of a problem from its residual ``res`` (m,), transposed Jacobian
    ``jac_t`` (n, m) and flat parameters ``x`` (n,) at the start (caller's units)."""
    return from_extremes(jnp.max(jnp.abs(res)), jnp.max(jnp.abs(jac_t), axis=1), x)


def from_extremes(r_max: jax.Array, col_max: jax.Array, x: jax.Array) -> Units:
    """The units from the start's largest residual ``max|r|``, each Jacobian column's
    largest entry ``col_max`` (n,) and the flat start ``x`` (all in the caller's units):
    all :func:`from_start` needs, which a residual evaluated in blocks gives without
    holding r or J."""
    dtype = r_max.dtype
    e_r = exponent(r_max)
    # a parameter's unit is its start's magnitude; a parameter started at 0 takes the
    # unit that puts its Jacobian column's largest entry in [½, 1) (ρ·c_j = 2^(-e_j))
    from_value = exponent(jnp.abs(x))
    from_column = e_r - exponent(col_max)
    valued = jnp.isfinite(x) & (x != 0)
    seen = jnp.isfinite(col_max) & (col_max > 0)
    # A start so small that its normalised column would underflow once squared in JᵀJ
    # (below 2^(minexp/2): 1e-154 in float64, 2e-19 in float32) is, to rounding, a start
    # at 0 and takes the column's unit: kept, its column would look zero (an offset
    # started at 4e-277 in float64 was "converged" with its cosine at 0.06).  A wider rule
    # (below eps) also caught saturated parameters far from the data and lost MGH Box3D
    # from 100·x0 (RSS 1.2e7 instead of 0.0756); a start between the two thresholds sits
    # below the damping's floor and ends NO_PROGRESS (an honest failure).
    negligible = seen & (from_value < from_column + jnp.finfo(dtype).minexp // 2)
    valued = valued & ~negligible
    k = jnp.where(valued, from_value, jnp.where(seen, from_column, 0))
    rho, c = power_of_two(-e_r, dtype), power_of_two(k, dtype)
    # c_j/u_j from normalised quantities (never overflows): 1/|z₀_j|, or the normalised
    # column's size over the normalised residual's, both in [½, 1) up to rounding
    r_norm = r_max * rho
    r_norm = jnp.where(jnp.isfinite(r_norm) & (r_norm > 0), r_norm, 1)
    ratio = jnp.where(
        valued, c / jnp.where(valued, jnp.abs(x), 1), jnp.where(seen, col_max * (rho * c) / r_norm, 1)
    )
    return Units(rho, c, jnp.square(ratio))


def normalise(units: Units, res: jax.Array, jac_t: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``(ρ·r, ρ·Jᵀ·diag(c))`` from the caller's residual and transposed Jacobian."""
    return res * units.residual, jac_t * (units.params * units.residual)[:, None]


@jax.jit  # one dispatch when the driver calls it on a finished batch, not nine
def caller_cost(units: Units, cost: jax.Array) -> jax.Array:
    """A normalised cost back in the caller's units, ``cost / ρ²`` (it may under- or
    overflow there: that is the true value's rounding, the fit itself is unaffected)."""
    half = power_of_two(1 - exponent(units.residual), cost.dtype)  # 1/ρ, exact (ρ = 2^(e-1))
    return cost * half * half  # never forms 1/ρ² on its own, which may overflow
