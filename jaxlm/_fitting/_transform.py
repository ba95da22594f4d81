"""Bounds by a change of variables (MINUIT/lmfit): the model's ``p = T(u)`` lies inside the
bounds for every free variable ``u``; fixed parameters stay at ``p0``.

Per parameter, ``T`` is one of

* ``"free"``:  ``p = u`` (no bound);
* ``"lower"``: ``p = lo − 1 + √(u² + 1)``;
* ``"upper"``: ``p = hi + 1 − √(u² + 1)``;
* ``"both"``:  ``p = lo + (hi − lo)(sin u + 1)/2``.

When the bounds and ``fixed`` are shared by every fit of a batch (and known before
tracing) the kind of each parameter is static (:class:`Transform`): a parameter without
bounds costs nothing, which matters because ``T`` and its derivative run at every
residual evaluation (an unbounded 4-parameter Gaussian fit evaluated the four branches
in every step: a third of the solver's time on a batch of 10⁴).  Bounds or ``fixed``
that differ per fit (or are traced) select the branch per member at run time; the
values are the same either way.
"""

from __future__ import annotations

from typing import NamedTuple

import jax.numpy as jnp
import numpy as np

KINDS = ("free", "lower", "upper", "both")


class Transform(NamedTuple):
    """The static change of variables of a fit whose bounds and ``fixed`` are shared
    (hashable: part of the fit's compiled-program key)."""

    kinds: tuple[str, ...]  # one of KINDS per parameter
    fixed: tuple[bool, ...]

    @classmethod
    def read(cls, lo, hi, fixed) -> Transform:
        """From concrete shared ``lo``, ``hi`` (n,) and ``fixed`` (n,)."""
        lo, hi, fixed = np.asarray(lo), np.asarray(hi), np.asarray(fixed)
        has_lo, has_hi = np.isfinite(lo), np.isfinite(hi)
        kinds = tuple(
            KINDS[int(a) + 2 * int(b)] for a, b in zip(has_lo.tolist(), has_hi.tolist(), strict=True)
        )
        return cls(kinds, tuple(bool(f) for f in fixed.tolist()))

    @property
    def identity(self) -> bool:
        return all(k == "free" for k in self.kinds) and not any(self.fixed)


def _lower(u, lo):
    return lo - 1 + jnp.sqrt(u * u + 1)


def _upper(u, hi):
    return hi + 1 - jnp.sqrt(u * u + 1)


def _both(u, lo, hi):
    return lo + (hi - lo) * (jnp.sin(u) + 1) / 2


def to_params(u, p0, lo, hi, fixed, transform: Transform | None = None):
    """T(u) into the bounds (see module docstring); fixed parameters stay at p0."""
    if transform is not None:
        return _static_params(u, p0, lo, hi, transform)
    has_lo, has_hi = jnp.isfinite(lo), jnp.isfinite(hi)
    lo_s = jnp.where(has_lo, lo, 0)  # finite stand-ins keep unselected branches finite
    hi_s = jnp.where(has_hi, hi, 1)
    p = jnp.where(
        has_lo & has_hi,
        _both(u, lo_s, hi_s),
        jnp.where(has_lo, _lower(u, lo_s), jnp.where(has_hi, _upper(u, hi_s), u)),
    )
    return jnp.where(fixed, p0, p)


def _static_params(u, p0, lo, hi, transform):
    if transform.identity:
        return u
    if all(k == "free" for k in transform.kinds):
        return jnp.where(np.asarray(transform.fixed), p0, u)
    parts = []
    for j, (kind, fix) in enumerate(zip(transform.kinds, transform.fixed, strict=True)):
        if fix:
            parts.append(p0[j])
        elif kind == "free":
            parts.append(u[j])
        elif kind == "lower":
            parts.append(_lower(u[j], lo[j]))
        elif kind == "upper":
            parts.append(_upper(u[j], hi[j]))
        else:
            parts.append(_both(u[j], lo[j], hi[j]))
    return jnp.stack(parts)


def to_free(p, lo, hi, transform: Transform | None = None):
    """Inverse of :func:`to_params` (p inside the bounds; a start on a bound is nudged)."""
    if transform is not None and all(k == "free" for k in transform.kinds):
        return p
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
