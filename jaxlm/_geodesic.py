"""Geodesic acceleration (Transtrum & Sethna 2012): the second-order correction of an LM
step along the velocity h, from the residual's second directional derivative in the
Jacobian's own autodiff mode.  See :func:`acceleration`."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def acceleration(linalg, alpha, flat_fun, user_jac_t, z, h, factor, diag, model, mode):
    """Half the geodesic acceleration, ``d = ½a`` with ``(A + μD) a = −Jᵀ r''[h, h]``
    (Transtrum & Sethna 2012), and whether it is finite but too large.

    ``r''[h, h]``, the second directional derivative of the residual along the
    velocity h, comes from two nested JVPs.  ``Jᵀ(·)`` is taken in the Jacobian's own
    mode (forward: the columns of J pushed through the same linearisation as h,
    :func:`forward_jt_rvv`; reverse: one VJP; a callable ``jac``: the caller's), so
    a residual that is finite in that mode gets a finite acceleration.  A residual without a
    forward mode (a
    ``jax.custom_vjp`` inside) gets Transtrum's finite difference instead,
    ``Jᵀr'' ≈ (2/δ)(Jᵀ(r(z + δh) − r(z))/δ − Ah)`` with δ = 0.1, from one VJP.  The
    solve reuses the step's factorisation.

    An acceleration that is not finite (a residual whose second derivative does not
    exist there, a failed solve) is not used: d = 0 and the step is the plain h; it
    is never a reason to reject h.  A finite one that is too large
    (``2‖a‖ > alpha·‖h‖`` in the D-norm) is reported so that the step rejects it.
    """
    residual = lambda w: flat_fun(w)[0]  # noqa: E731
    if mode == "rev_only":
        delta = jnp.asarray(0.1, z.dtype)
        r, vjp = jax.vjp(residual, z)
        a_h = linalg.model_product(model, h)
        jt_rvv = (2 / delta) * (vjp((residual(z + delta * h) - r) / delta)[0] - a_h)
    elif mode == "rev":
        (jt_rvv,) = jax.vjp(residual, z)[1](second_directional(residual, z, h))
    elif mode == "fwd":
        jt_rvv = forward_jt_rvv(residual, z, h)
    else:
        jt_rvv = user_jac_t(z) @ second_directional(residual, z, h)
    accel, ok = linalg.solve(factor, -jt_rvv)
    sqrt_d = jnp.sqrt(diag)
    small = 2 * jnp.linalg.norm(sqrt_d * accel) <= alpha * jnp.linalg.norm(sqrt_d * h)
    return jnp.where(ok & small, 0.5 * accel, 0), ok & ~small


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
