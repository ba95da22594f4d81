"""Bounds by a change of variables (MINUIT/lmfit): the model's ``p = T(u)`` lies inside the
bounds for every free variable ``u``; fixed parameters stay at ``p0``."""

from __future__ import annotations

import jax.numpy as jnp


def to_params(u, p0, lo, hi, fixed):
    """T(u) into the bounds (see module docstring); fixed parameters stay at p0."""
    has_lo, has_hi = jnp.isfinite(lo), jnp.isfinite(hi)
    lo_s = jnp.where(has_lo, lo, 0)  # finite stand-ins keep unselected branches finite
    hi_s = jnp.where(has_hi, hi, 1)
    both = lo_s + (hi_s - lo_s) * (jnp.sin(u) + 1) / 2
    root = jnp.sqrt(u * u + 1)
    p = jnp.where(
        has_lo & has_hi, both, jnp.where(has_lo, lo_s - 1 + root, jnp.where(has_hi, hi_s + 1 - root, u))
    )
    return jnp.where(fixed, p0, p)


def to_free(p, lo, hi):
    """Inverse of :func:`to_params` (p inside the bounds; a start on a bound is nudged)."""
    has_lo, has_hi = jnp.isfinite(lo), jnp.isfinite(hi)
    lo_s = jnp.where(has_lo, lo, 0)
    hi_s = jnp.where(has_hi, hi, 1)
    eps = jnp.finfo(p.dtype).eps
    t = jnp.clip(2 * (p - lo_s) / (hi_s - lo_s) - 1, -1 + 64 * eps, 1 - 64 * eps)
    both = jnp.arcsin(t)
    # u = 0 (p on its bound) would be a stationary point of T: start just inside
    below = jnp.maximum(jnp.sqrt(jnp.maximum((p - lo_s + 1) ** 2 - 1, 0)), jnp.sqrt(eps))
    above = jnp.maximum(jnp.sqrt(jnp.maximum((hi_s - p + 1) ** 2 - 1, 0)), jnp.sqrt(eps))
    return jnp.where(has_lo & has_hi, both, jnp.where(has_lo, below, jnp.where(has_hi, above, p)))
