"""A residual evaluated a block of points at a time: one fit with 10⁷–10⁸ points in memory
proportional to the block, not to the whole Jacobian.

The solver only ever needs the n×n model of the linearisation (``JᵀJ`` and ``Jᵀr``, or
``R`` and ``Qᵀr``), the cost, ``‖r‖²``, ``Jᵀr''`` for the geodesic acceleration and, at
the start, the largest residual and Jacobian entries.  Every one is a sum (or a maximum)
over the points, so a :class:`Blocked` residual — ``fun`` evaluated on one block of the
points, with the blocked arguments stacked along a leading axis — gives them from a
``lax.scan`` over the blocks (:class:`BlockedEvaluation`), each block's Jacobian
compressed as soon as it is formed: for m points and n parameters the memory is
``O(block·n)`` on top of the data, instead of the ``m·n`` Jacobian (8·10⁸·n bytes at
m = 10⁸ in float64).

The arithmetic is the unblocked one; only the order of the sums over the points changes
(block by block), so the path and the answer agree with the unblocked solve to rounding.
``jaxlm.fit`` selects it for a single fit above :data:`jaxlm._fitting._blocked.MIN_POINTS`
points (:mod:`jaxlm._fitting._blocked`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp

from jaxlm import _geodesic, _units
from jaxlm._batch import batched as split
from jaxlm._batch import merge
from jaxlm._residual import Evaluation, Objective, jacobian_mode, linearise, normalised


@dataclasses.dataclass(frozen=True)
class Blocked:
    """The residual ``fun(params, *args)`` of one block of points, where the arguments
    whose ``axes`` entry is 0 hold every block stacked along a leading axis and the
    others (None) are shared by all blocks.  Hashable (a compiled-program key) when
    ``fun`` is.  The solver evaluates it block by block (:class:`BlockedEvaluation`);
    calling it gives the whole residual (blocks concatenated, Objective costs summed),
    for the code that must see it at once (``jax.eval_shape``, implicit derivatives)."""

    fun: Callable
    axes: tuple

    def __call__(self, params, *args):
        outs = jax.lax.map(
            lambda block: self.fun(params, *merge(self.axes, block, args)), split(self.axes, args)
        )
        flat = lambda r: jnp.reshape(r, (-1, *r.shape[2:]))  # noqa: E731
        if isinstance(outs, Objective):
            return Objective(jax.tree_util.tree_map(flat, outs.residual), jnp.sum(outs.cost))
        return jax.tree_util.tree_map(flat, outs)


class BlockedEvaluation(Evaluation):
    """:class:`jaxlm._residual.Evaluation` of a :class:`Blocked` residual: each quantity
    accumulated over the blocks by a ``lax.scan`` (the model by
    :meth:`~jaxlm._linalg.LinearSolver.combine`)."""

    def __init__(self, fun: Blocked, unravel, units, args, dtype, jac, z):
        self.fun, self.unravel, self.units, self.args, self.dtype, self.jac = (
            fun,
            unravel,
            units,
            args,
            dtype,
            jac,
        )
        self.blocks = split(fun.axes, args)
        first = jax.tree_util.tree_map(lambda a: a[0], self.blocks)
        self.mode = jacobian_mode(
            jac, normalised(fun.fun, unravel, units, self._args(first), dtype, jac)[0], z
        )

    def _args(self, block):
        return merge(self.fun.axes, block, self.args)

    def _scan(self, units, body, init):
        """``lax.scan`` of ``body(carry, flat_fun, user_jac_t)`` over the blocks."""

        def step(carry, block):
            flat_fun, user_jac_t = normalised(
                self.fun.fun, self.unravel, units, self._args(block), self.dtype, self.jac
            )
            return body(carry, flat_fun, user_jac_t), None

        return jax.lax.scan(step, init, self.blocks)[0]

    def start(self, linalg, x, objective: bool):
        n, dtype = x.shape[0], x.dtype

        def extremes(carry, flat_fun, user_jac_t):
            r_max, col_max = carry
            r, _, jac_t = linearise(flat_fun, user_jac_t, x, self.mode)
            return jnp.maximum(r_max, jnp.max(jnp.abs(r))), jnp.maximum(
                col_max, jnp.max(jnp.abs(jac_t), axis=1)
            )

        zero = jnp.zeros((), dtype)
        r_max, col_max = self._scan(self.units, extremes, (zero, jnp.zeros((n,), dtype)))
        units = _units.from_extremes(r_max, col_max, x)
        # a second pass, in the units just fixed (x / c is exact: powers of two)
        model, cost, rr = self._linearised(linalg, units, x / units.params)
        return units, model, cost, rr

    def linearised(self, linalg, z):
        return self._linearised(linalg, self.units, z)

    def _linearised(self, linalg, units, z):
        n, dtype = z.shape[0], z.dtype

        def accumulate(carry, flat_fun, user_jac_t):
            model, cost, rr = carry
            r, c, jac_t = linearise(flat_fun, user_jac_t, z, self.mode)
            return linalg.combine(model, linalg.compress(jac_t, r)), cost + c, rr + r @ r

        zero = jnp.zeros((), dtype)
        return self._scan(units, accumulate, (linalg.zero_model(n, dtype), zero, zero))

    def jt_rvv(self, linalg, model, z, h):
        def accumulate(total, flat_fun, user_jac_t):
            residual = lambda w: flat_fun(w)[0]  # noqa: E731
            return total + _geodesic.jt_rvv_term(residual, user_jac_t, z, h, self.mode)

        term = self._scan(self.units, accumulate, jnp.zeros_like(z))
        if self.mode == "rev_only":
            return _geodesic.finite_difference_jt_rvv(term, linalg.model_product(model, h))
        return term
