"""Geodesic acceleration (Transtrum & Sethna 2012): the second-order correction of an LM
step along the velocity h, from the residual's second directional derivative in the
Jacobian's own autodiff mode.  See :func:`acceleration`."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def acceleration(linalg, alpha, jt_rvv, h, factor, diag):
    """Half the geodesic acceleration, ``d = ½a`` with ``(A + μD) a = −Jᵀ r''[h, h]``
    (Transtrum & Sethna 2012), and whether it is finite but too large.

    ``jt_rvv`` is ``Jᵀ r''[h, h]`` (:meth:`jaxlm._residual.Evaluation.jt_rvv`, from
    :func:`jt_rvv_term`): ``r''[h, h]``, the second directional derivative of the
    residual along the velocity h, from two nested JVPs, and ``Jᵀ(·)`` in the Jacobian's
    own mode, so that a residual that is finite in that mode gets a finite acceleration.
    The solve reuses the step's factorisation.

    An acceleration that is not finite (a residual whose second derivative does not
    exist there, a failed solve) is not used: d = 0 and the step is the plain h; it
    is never a reason to reject h.  A finite one that is too large
    (``2‖a‖ > alpha·‖h‖`` in the D-norm) is reported so that the step rejects it.
    """
    accel, ok = linalg.solve(factor, -jt_rvv)
    sqrt_d = jnp.sqrt(diag)
    small = 2 * jnp.linalg.norm(sqrt_d * accel) <= alpha * jnp.linalg.norm(sqrt_d * h)
    return jnp.where(ok & small, 0.5 * accel, 0), ok & ~small


FD_STEP = 0.1
"""Transtrum's δ for the finite-difference ``r''`` of a residual without forward mode."""


def jt_rvv_term(residual, user_jac_t, z, h, mode):
    """``Jᵀ r''[h, h]`` of ``residual`` (one problem, or one block of its points) in the
    Jacobian's mode (forward: the columns of J pushed through the same linearisation as
    h, :func:`forward_jt_rvv`; reverse: one VJP; a callable ``jac``: the caller's).  For
    a residual without a forward mode (``mode == "rev_only"``: a ``jax.custom_vjp``
    inside) Transtrum's finite difference
    ``Jᵀr'' ≈ (2/δ)(Jᵀ(r(z + δh) − r(z))/δ − Ah)`` is used, and this returns only its
    first term, ``Jᵀ(r(z + δh) − r(z))/δ`` from one VJP: the caller, who holds A, adds
    the rest (:func:`finite_difference_jt_rvv`)."""
    if mode == "rev_only":
        delta = jnp.asarray(FD_STEP, z.dtype)
        r, vjp = jax.vjp(residual, z)
        return vjp((residual(z + delta * h) - r) / delta)[0]
    if mode == "rev":
        (jt_rvv,) = jax.vjp(residual, z)[1](second_directional(residual, z, h))
        return jt_rvv
    if mode == "fwd":
        return forward_jt_rvv(residual, z, h)
    return user_jac_t(z) @ second_directional(residual, z, h)


def finite_difference_jt_rvv(term, a_h):
    """``(2/δ)(term − Ah)``: Transtrum's finite-difference ``Jᵀr''`` from
    :func:`jt_rvv_term`'s first term and ``A·h``."""
    delta = jnp.asarray(FD_STEP, term.dtype)
    return (2 / delta) * (term - a_h)


def forward_jt_rvv(residual, z, h):
    """``Jᵀ r''[h, h]`` in forward mode from one linearisation of ``w ↦ (r(w), J(w)h)`` at
    z: pushing the unit tangents gives the columns of J, pushing h gives ``r''[h, h]``,
    all from one evaluation of the residual's primal (separately, the rows of Jᵀ and the
    nested JVPs each evaluate it: 3-5 % of a step on a batch of 100-point decays)."""
    n = z.shape[0]
    _, push = jax.linearize(lambda w: jax.jvp(residual, (w,), (h,)), z)
    tangents = jnp.concatenate([jnp.eye(n, dtype=z.dtype), h[None]])
    columns, second = jax.vmap(push)(tangents)
    return columns[:n] @ second[n]


def second_directional(residual, z, h):
    """``r''[h, h]`` by two nested JVPs."""
    return jax.jvp(lambda w: jax.jvp(residual, (w,), (h,))[1], (z,), (h,))[1]


def has_custom_vjp(fn, *example) -> bool:
    """Whether ``fn``'s jaxpr holds a ``jax.custom_vjp`` call (at any depth)."""

    def walk(jaxpr):
        for eqn in jaxpr.eqns:
            if eqn.primitive.name.startswith("custom_vjp"):
                return True
            for param in eqn.params.values():
                for sub in param if isinstance(param, tuple | list) else (param,):
                    inner = getattr(sub, "jaxpr", sub)
                    if hasattr(inner, "eqns") and walk(inner):
                        return True
        return False

    return walk(jax.make_jaxpr(fn)(*example).jaxpr)
