"""The normal equations, factored by Cholesky: the model is ``(JᵀJ, Jᵀr)``.

For the few parameters of a typical curve (n ≤ 12) the factorisation and the
substitutions are unrolled into scalar jnp operations: under ``vmap`` every scalar is a
vector over the batch, so a batch of tiny systems runs as a few hundred fused
elementwise operations instead of one LAPACK call per member
(``benchmarks/small_solve.py``).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxlm._linalg._model import GaussNewtonModel

GRAM_UNROLL_MAX_N = 5
"""Up to this many parameters JᵀJ is formed from unrolled column products: 2× faster
than a batched matmul inside the LM step for n = 4, 5 (fused with the Jacobian), slower
in isolation from n = 6 on (``benchmarks/small_solve.py``)."""

UNROLL_MAX_N = 12
"""Up to this many parameters the Cholesky solve is unrolled into elementwise jnp ops."""


class CholeskyFactor(NamedTuple):
    """``low``: the lower Cholesky factor of the equilibrated ``S(A + μD)S``; ``scale``:
    the equilibration ``S`` (n,); ``ok``: False when a pivot was not positive."""

    low: jax.Array
    scale: jax.Array
    ok: jax.Array


class Cholesky:
    """Factor ``A + μD`` itself: cheapest, squares the condition number of J."""

    name = "cholesky"

    def __init__(self, batched: bool = True):
        self.batched = batched

    def compress(self, jac_t: jax.Array, res: jax.Array) -> GaussNewtonModel:
        """``GaussNewtonModel(JᵀJ, Jᵀr)`` from Jᵀ (n, m) and r (m,): from unrolled column
        products for a problem run in a batch, from two matrix products for a problem
        run on its own (``batched=False``), where the unrolled products gain nothing and
        each costs XLA a kernel: one 64-point Gaussian's ``least_squares`` program
        compiles in 0.62-0.74 s instead of 0.95-1.01 s on 2 cores (docs/benchmarks.md)."""
        if self.batched and jac_t.shape[0] <= GRAM_UNROLL_MAX_N:
            return GaussNewtonModel(_unrolled_gram(jac_t), _unrolled_products(jac_t, res))
        return GaussNewtonModel(jac_t @ jac_t.T, jac_t @ res)

    def combine(self, a: GaussNewtonModel, b: GaussNewtonModel) -> GaussNewtonModel:
        """The model of two sets of points together: the sums."""
        return GaussNewtonModel(a.matrix + b.matrix, a.vector + b.vector)

    def zero_model(self, n: int, dtype) -> GaussNewtonModel:
        return GaussNewtonModel(jnp.zeros((n, n), dtype), jnp.zeros((n,), dtype))

    def normal_diag(self, model: GaussNewtonModel) -> jax.Array:
        return jnp.diagonal(model.matrix)

    def gradient(self, model: GaussNewtonModel) -> jax.Array:
        return model.vector

    def curvature(self, model: GaussNewtonModel, h: jax.Array) -> jax.Array:
        return h @ (model.matrix @ h)

    def model_product(self, model: GaussNewtonModel, h: jax.Array) -> jax.Array:
        return model.matrix @ h

    def scale_model(self, model: GaussNewtonModel, factor: jax.Array) -> GaussNewtonModel:
        return GaussNewtonModel(model.matrix * (factor * factor), model.vector * (factor * factor))

    def factor(self, model: GaussNewtonModel, mu: jax.Array, diag: jax.Array) -> CholeskyFactor:
        """Factor ``A + μD`` after symmetric equilibration ``S(A + μD)S`` with
        ``S = diag(A + μD)^-½``: it keeps the pivots O(1) whatever the units of the
        parameters and does not change the solution."""
        a = model.matrix + jnp.diag(mu * diag)
        d = jnp.diagonal(a)
        s = jnp.where(d > 0, jax.lax.rsqrt(jnp.where(d > 0, d, 1)), 1)
        a_s = a * s[:, None] * s[None, :]
        if a.shape[0] <= UNROLL_MAX_N:
            low, ok = _unrolled_cholesky(a_s)
        else:
            low = jnp.linalg.cholesky(a_s)
            ok = jnp.all(jnp.isfinite(low))
        return CholeskyFactor(low, s, ok)

    def step(self, model: GaussNewtonModel, factor: CholeskyFactor) -> tuple[jax.Array, jax.Array]:
        return self.solve(factor, -model.vector)

    def solve(self, factor: CholeskyFactor, rhs: jax.Array) -> tuple[jax.Array, jax.Array]:
        s = factor.scale
        if factor.low.shape[0] <= UNROLL_MAX_N:
            y = _unrolled_substitute(factor.low, rhs * s) * s
        else:
            y = jax.scipy.linalg.cho_solve((factor.low, True), rhs * s) * s
        return y, factor.ok & jnp.all(jnp.isfinite(y))


def _unrolled_gram(jac_t):
    """JᵀJ as n(n+1)/2 separate dot products of J's columns (rows of ``jac_t``).

    Under ``vmap`` each product is one fused multiply-reduce over the batch, which XLA's
    CPU backend runs 2× faster than a batch of tiny matrix products (and it computes
    each symmetric entry once).
    """
    n = jac_t.shape[0]
    entry = {}
    for i in range(n):
        for k in range(i + 1):
            entry[i, k] = jnp.sum(jac_t[i] * jac_t[k])
    return jnp.stack([jnp.stack([entry[max(i, k), min(i, k)] for k in range(n)]) for i in range(n)])


def _unrolled_products(jac_t, res):
    return jnp.stack([jnp.sum(jac_t[i] * res) for i in range(jac_t.shape[0])])


def _unrolled_cholesky(a):
    """Lower Cholesky factor of a small symmetric positive definite ``a``, unrolled into
    scalar jnp ops, and whether every pivot was positive.

    Besides fusing under ``vmap`` (module docstring), it avoids batched LAPACK custom
    calls, which can wedge XLA's CPU runtime on large batches inside a while loop with
    jaxlib 0.10.  A pivot ``≤ 0`` (not positive definite) is reported through ``ok``,
    never raised; the arithmetic stays finite by using 1 in its place.
    """
    n = a.shape[0]
    low = [[jnp.zeros_like(a[0, 0])] * n for _ in range(n)]  # a[i, j] may be a batch-minor vector
    ok = jnp.asarray(True)
    for j in range(n):
        pivot = a[j, j] - sum((low[j][k] * low[j][k] for k in range(j)), start=jnp.zeros((), a.dtype))
        good = pivot > 0
        ok = ok & good
        d = jnp.sqrt(jnp.where(good, pivot, 1))
        low[j][j] = d
        for i in range(j + 1, n):
            off = a[i, j] - sum((low[i][k] * low[j][k] for k in range(j)), start=jnp.zeros((), a.dtype))
            low[i][j] = off / d
    return jnp.stack([jnp.stack(row) for row in low]), ok


def _unrolled_substitute(low, b):
    """Solve ``L Lᵀ y = b`` by unrolled forward and back substitution."""
    n = low.shape[0]
    zero = jnp.zeros((), b.dtype)
    z = [None] * n
    for i in range(n):  # L z = b
        z[i] = (b[i] - sum((low[i, k] * z[k] for k in range(i)), start=zero)) / low[i, i]
    y = [None] * n
    for i in reversed(range(n)):  # Lᵀ y = z
        y[i] = (z[i] - sum((low[k, i] * y[k] for k in range(i + 1, n)), start=zero)) / low[i, i]
    return jnp.stack(y)


def _unrolled_cholesky_solve(a, b):
    """Solve ``a y = b`` (small, symmetric positive definite) with the unrolled factor
    and substitutions; returns ``(y, ok)`` (``benchmarks/small_solve.py`` times it)."""
    low, ok = _unrolled_cholesky(a)
    return _unrolled_substitute(low, b), ok
