"""Implicit differentiation of a least-squares solution (the implicit function theorem).

At a minimum ``p*(θ)`` of ``C(p, θ) = ½‖r(p, θ)‖²`` (or of the cost of an
:class:`jaxlm._residual.Objective`) the gradient vanishes, ``g(p*, θ) = ∇ₚC = Jᵀr = 0``.
Differentiating that identity in θ gives the tangent of the solution without looking
at how it was found::

    H ṗ = −∂θg · θ̇,        H = ∂ₚg = JᵀJ + Σᵢ rᵢ∇²rᵢ        ("exact", the default)

or, dropping the terms weighted by the residuals on both sides (exact when r = 0, and
the classical linearised error propagation of Gauss–Newton),::

    JᵀJ ṗ = −Jᵀ ∂θr · θ̇                                      ("gauss_newton")

So the backward pass costs one n×n solve per fit — independent of the number of LM
steps, and without storing any of them — plus a few JVPs/VJPs of the residual.  The rule
is a ``jax.custom_jvp`` whose tangent map is linear and built from transposable
operations, so JAX derives reverse mode (``grad``, ``jacrev``) from it as well as forward
mode (``jvp``, ``jacfwd``), and it batches under ``vmap``.

Where ``H`` is singular — a parameter that the data do not determine, or that the fit
layer holds ``fixed`` — the derivative of the solution exists only on the identifiable
subspace: ``ṗ`` is the solution of minimum (equilibrated) norm of ``H ṗ = −∂θg·θ̇``
(:func:`min_norm_solve`), so a fixed or undetermined direction gets derivative 0 and the
rest their true derivative.

The start ``x0`` does not influence a converged solution: its derivative is zero.  A
member that did *not* converge is not at a stationary point, so the theorem does not
apply there; ``failed_grad`` says what it gets instead (see :data:`FAILED_GRADS`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

from jaxlm._residual import evaluate
from jaxlm._solver import is_success

HESSIANS = ("exact", "gauss_newton")
FAILED_GRADS = ("nan", "zero", "ift")
"""What the derivative of a member that did not converge (``success`` False) is:

* ``"nan"`` (default): NaN, in forward and reverse mode alike — never silently wrong.
* ``"zero"``: zero, as if the member were a constant; use it to train through batches in
  which some fits may fail (their contribution to a shared gradient is dropped).
* ``"ift"``: the implicit-function formula evaluated at the returned point anyway (for
  members stopped by ``max_steps`` that are known to be close to converged).
"""


def min_norm_solve(matrix: jax.Array, rhs: jax.Array) -> jax.Array:
    """The minimum-norm solution of ``matrix · y = rhs`` for a symmetric ``matrix``.

    The matrix is first equilibrated, ``S·matrix·S`` with ``S = |diag|^-½`` (1 on a zero
    diagonal), so the rank decision does not depend on the parameters' units; eigenvalues
    below ``n·eps·max|λ|`` count as zero (the directions the data do not determine).
    For a nonsingular matrix this is the ordinary solution.
    """
    n = matrix.shape[0]
    eps = jnp.finfo(matrix.dtype).eps
    d = jnp.abs(jnp.diagonal(matrix))
    s = jnp.where(d > 0, jax.lax.rsqrt(jnp.where(d > 0, d, 1)), 1)
    lam, vec = jnp.linalg.eigh(matrix * s[:, None] * s[None, :])
    cut = n * eps * jnp.max(jnp.abs(lam))
    keep = jnp.abs(lam) > cut
    inv = jnp.where(keep, 1 / jnp.where(keep, lam, 1), 0)
    return s * (vec @ (inv * (vec.T @ (s * rhs))))


@functools.partial(jax.custom_jvp, nondiff_argnums=(0, 1, 2))
def attach(fun: Callable, hessian: str, failed_grad: str, params, cost, status, args):
    """Return ``(params, cost)`` unchanged, made differentiable in ``args`` implicitly.

    ``params``, ``cost`` and ``status`` come from a solve whose inputs were wrapped in
    ``lax.stop_gradient``; the JVP rule below gives them the implicit derivative.
    """
    del fun, hessian, failed_grad, status, args
    return params, cost


@attach.defjvp
def _attach_jvp(fun, hessian, failed_grad, primals, tangents):
    params, cost, status, args = primals
    *_, dargs = tangents  # the tangents of params, cost and status are ignored: see module doc
    ok = is_success(status)
    p, unravel = ravel_pytree(params)
    dtype = p.dtype

    # Tangents of integer args are float0 and carry nothing; floating ones are masked for
    # failed members so that forward and reverse mode agree (a `where` on the output
    # alone would lose the NaN when JAX transposes this rule).
    def mask(t):
        if t.dtype == jax.dtypes.float0:
            return t
        if failed_grad == "nan":
            return t * jnp.where(ok, 1, jnp.nan).astype(t.dtype)
        if failed_grad == "zero":
            return jnp.where(ok, t, jnp.zeros_like(t))
        return t

    dargs = jax.tree_util.tree_map(mask, dargs)

    def residual(z, a):
        return evaluate(fun, unravel(z), *a)[0].astype(dtype)

    def cost_fn(z, a):
        return evaluate(fun, unravel(z), *a)[1].astype(dtype)

    if hessian == "exact":
        grad_p = jax.grad(cost_fn)
        rhs = jax.jvp(lambda a: grad_p(p, a), (args,), (dargs,))[1]
        matrix = jax.jacfwd(grad_p)(p, args)
    else:
        dr = jax.jvp(lambda a: residual(p, a), (args,), (dargs,))[1]
        jac = jax.jacfwd(residual)(p, args)
        rhs = jac.T @ dr
        matrix = jac.T @ jac
    dp = -min_norm_solve(matrix, rhs)
    # d cost = ∇ₚC·ṗ + ∂θC·θ̇ (the first term vanishes at a minimum; kept for failed_grad="ift")
    dcost = jax.jvp(cost_fn, (p, args), (dp, dargs))[1]
    if failed_grad == "zero":
        dp = jnp.where(ok, dp, jnp.zeros_like(dp))
        dcost = jnp.where(ok, dcost, jnp.zeros_like(dcost))
    return (params, cost), (unravel(dp), dcost.astype(jnp.result_type(cost)))
