"""The residual as the solver sees it: what ``fun`` may return (an array, a pytree or an
:class:`Objective`), the residual and cost in the solver's normalised units
(:mod:`jaxlm._units`), and the Jacobian in the chosen autodiff mode or from the caller's
``jac``, together with the residual in one pass."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

from jaxlm import _geodesic, _units


class Objective(NamedTuple):
    """What ``fun`` may return instead of a plain residual, for objectives that are not
    ``½‖r‖²`` but are minimised by the same Gauss–Newton-type model.

    The step is computed from ``residual`` (r̃) and its Jacobian J̃, i.e. from the model
    ``A = J̃ᵀJ̃``, ``g = J̃ᵀr̃``; the acceptance test, the gain ratio and ftol use ``cost``.
    For the model to be right, ``J̃ᵀr̃`` must equal the gradient of ``cost``; J̃ᵀJ̃ is
    whatever positive semi-definite curvature one chooses (its Fisher information, for a
    likelihood).  The fit layer builds these for robust losses (scipy's rescaling,
    Triggs et al. 2000) and for Poisson maximum likelihood; ``lax.stop_gradient`` on the
    weights makes autodiff return J̃ rather than the derivative of r̃'s value.

    Attributes:
      residual: r̃, an array or pytree of arrays.
      cost: the scalar objective (a cost of ``inf`` rejects the point).
    """

    residual: Any
    cost: jax.Array


def evaluate(fun: Callable, params, *args, rho=None):
    """``(r̃, cost)`` of ``fun`` at ``params``: r̃ flattened and multiplied by ``rho``
    (the normalised residual, :mod:`jaxlm._units`; 1 when omitted), cost ``½‖r̃‖²``, or
    the :class:`Objective`'s cost times ``rho²``."""
    out = fun(params, *args)
    residual = out.residual if isinstance(out, Objective) else out
    r = ravel_pytree(residual)[0]
    if rho is not None:
        r = r * rho.astype(r.dtype)
    if isinstance(out, Objective):
        cost = jnp.asarray(out.cost, r.dtype)
        return r, cost if rho is None else cost * rho * rho
    return r, 0.5 * (r @ r)


def normalised(fun, unravel, units: _units.Units, args, dtype, jac):
    """The residual and cost as functions of the normalised variables ``z = x / c``
    (both in normalised units, :mod:`jaxlm._units`), and for a callable ``jac`` the
    transposed Jacobian in the same units."""
    c, rho = units.params, units.residual

    def flat_fun(z):
        r, cost = evaluate(fun, unravel(z * c), *args, rho=rho)
        return r.astype(dtype), cost.astype(dtype)

    def user_jac_t(z):  # a callable jac returns ∂r/∂x in the caller's units
        j = jnp.asarray(jac(unravel(z * c), *args)).astype(dtype)
        m = j.size // z.shape[0]
        return jnp.reshape(j, (m, z.shape[0])).T * (c * rho)[:, None]

    return flat_fun, user_jac_t


def jacobian_mode(jac, flat_fun, z) -> str:
    """The autodiff mode of J: ``"custom"`` for a callable ``jac``; ``"rev_only"`` for
    a residual holding a ``jax.custom_vjp``, which has no forward mode at all (J in
    reverse mode, whatever ``jac`` says, and no nested JVPs for the acceleration);
    else ``jac`` as given.  Decided once per trace from the residual's jaxpr."""
    if callable(jac):
        return "custom"
    if _geodesic.has_custom_vjp(flat_fun, z):
        return "rev_only"
    return jac


def linearise(flat_fun, user_jac_t, z, mode):
    """Residual, cost and *transposed* Jacobian ``Jᵀ`` (n, m) at flat ``z``, one pass.

    Forward mode pushes the n unit tangents through one ``jax.linearize``; keeping
    them as the rows of ``Jᵀ`` (the order ``vmap`` produces them in) rather than
    transposing to J makes every column of J contiguous, which is what the normal
    equation products in :meth:`jaxlm._linalg.LinearSolver.compress` read (2× faster under a
    batch on CPU, ``benchmarks/small_solve.py``).
    """
    if mode == "custom":
        r, cost = flat_fun(z)
        return r, cost, user_jac_t(z)
    if mode == "fwd":
        (r, cost), push = jax.linearize(flat_fun, z)
        jac_t = jax.vmap(lambda t: push(t)[0])(jnp.eye(z.shape[0], dtype=z.dtype))
        return r, cost, jac_t

    def with_aux(w):
        r, cost = flat_fun(w)
        return r, (r, cost)

    jac, (r, cost) = jax.jacrev(with_aux, has_aux=True)(z)
    return r, cost, jac.T


class Evaluation:
    """The residual of one problem as one trace of ``init`` or ``step`` evaluates it: in
    the normalised units ``units`` (:mod:`jaxlm._units`), with its Jacobian in the mode
    :func:`jacobian_mode` decides, compressed at once to the n×n model of
    :mod:`jaxlm._linalg` (the solver never holds r or J beyond this).
    :class:`jaxlm._blocks.BlockedEvaluation` gives the same quantities for a residual
    evaluated a block of points at a time."""

    def __init__(self, fun, unravel, units, args, dtype, jac, z):
        self.fun, self.unravel, self.args, self.dtype, self.jac = fun, unravel, args, dtype, jac
        self.flat_fun, self.user_jac_t = normalised(fun, unravel, units, args, dtype, jac)
        self.mode = jacobian_mode(jac, self.flat_fun, z)

    def start(self, linalg, x, objective: bool):
        """At the start ``x`` (this evaluation in the caller's units, ``units`` = 1): the
        normalised units fixed there, and the model, cost and ‖r‖² in those units."""
        r_raw, cost_raw, jac_t_raw = linearise(self.flat_fun, self.user_jac_t, x, self.mode)
        units = _units.from_start(r_raw, jac_t_raw, x)
        r, jac_t = _units.normalise(units, r_raw, jac_t_raw)
        cost = cost_raw * units.residual * units.residual if objective else 0.5 * (r @ r)
        return units, linalg.compress(jac_t, r), cost, r @ r

    def linearised(self, linalg, z):
        """``(model, cost, ‖r‖²)`` at ``z`` (normalised units), one evaluation."""
        r, cost, jac_t = linearise(self.flat_fun, self.user_jac_t, z, self.mode)
        return linalg.compress(jac_t, r), cost, r @ r

    def jt_rvv(self, linalg, model, z, h):
        """``Jᵀ r''[h, h]`` at ``z`` (:func:`jaxlm._geodesic.jt_rvv_term`)."""
        residual = lambda w: self.flat_fun(w)[0]  # noqa: E731
        term = _geodesic.jt_rvv_term(residual, self.user_jac_t, z, h, self.mode)
        if self.mode == "rev_only":
            return _geodesic.finite_difference_jt_rvv(term, linalg.model_product(model, h))
        return term


def evaluation(fun, unravel, units, args, dtype, jac, z) -> Evaluation:
    """The :class:`Evaluation` of ``fun`` (a :class:`jaxlm._blocks.Blocked` residual
    gets its block-by-block one)."""
    from jaxlm import _blocks

    if isinstance(fun, _blocks.Blocked):
        return _blocks.BlockedEvaluation(fun, unravel, units, args, dtype, jac, z)
    return Evaluation(fun, unravel, units, args, dtype, jac, z)
