"""The damped linear solve at the heart of every Levenberg–Marquardt step.

Each step solves

    (A + μ D) h = −g,        A = JᵀJ,  g = Jᵀr,  D diagonal, positive,

which is the normal-equation form of the augmented least-squares problem

    min_h ‖ [J; √μ D^½] h + [r; 0] ‖²

(expand the square: the gradient in h is JᵀJh + Jᵀr + μDh).  Two ways to solve it are
offered:

``"cholesky"``
    Factor the n×n matrix ``A + μD`` (after symmetric diagonal equilibration).  Cheapest;
    squares the condition number of J.
``"qr"``
    Work with the triangular factor of ``J = QR`` and solve the 2n×n augmented problem
    ``[R; √μ D^½] h ≈ [−Qᵀr; 0]`` by a second QR, as MINPACK's ``lmpar``/``qrsolv`` do.
    Never forms JᵀJ, so it keeps the accuracy of J.

Both only ever hold an n×n *model* of the linearisation, never the m×n Jacobian, so the
solver state stays small whatever the number of data points:

* cholesky: ``matrix = JᵀJ``, ``vector = Jᵀr``;
* qr:       ``matrix = R`` (upper triangular, ``RᵀR = JᵀJ``), ``vector = Qᵀr``.

Everything the solver needs from the model — ``diag(A)``, ``g``, the predicted reduction
and the damped step — is derived here from ``(matrix, vector)`` so the rest of the code
does not care which method is in use.  A failed factorisation is *reported* (``ok`` is
False), never raised, so one singular member of a batch cannot disturb the others.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.scipy.linalg import solve_triangular

LINEAR_SOLVERS = ("cholesky", "qr")


class GaussNewtonModel(NamedTuple):
    """The linearisation r(x + h) ≈ r + Jh, compressed to n×n (see module docstring)."""

    matrix: jax.Array
    vector: jax.Array


def compress(method: str, jac_t: jax.Array, res: jax.Array) -> GaussNewtonModel:
    """Compress the Jacobian and the residual ``res`` into an n×n model.

    Args:
      method: ``"cholesky"`` or ``"qr"``.
      jac_t: the *transposed* Jacobian Jᵀ, shape (n, m): row j is ∂r/∂x_j.
      res: residual vector, shape (m,).

    Returns:
      ``GaussNewtonModel(JᵀJ, Jᵀr)`` for cholesky; ``GaussNewtonModel(R, Qᵀr)`` for qr,
      where ``J = QR``.  For qr with m < n the factor is zero-padded to n×n.
    """
    if method == "cholesky":
        if jac_t.shape[0] <= GRAM_UNROLL_MAX_N:
            return GaussNewtonModel(_unrolled_gram(jac_t), _unrolled_products(jac_t, res))
        return GaussNewtonModel(jac_t @ jac_t.T, jac_t @ res)
    if method == "qr":
        n, m = jac_t.shape
        # One QR of [J | r]: its last column above the diagonal is Qᵀr.
        aug = jnp.concatenate([jac_t.T, res[:, None]], axis=1)
        if m < n + 1:
            aug = jnp.concatenate([aug, jnp.zeros((n + 1 - m, n + 1), aug.dtype)], axis=0)
        r_aug = jnp.linalg.qr(aug, mode="r")
        return GaussNewtonModel(r_aug[:n, :n], r_aug[:n, n])
    raise ValueError(f"linear_solver must be one of {LINEAR_SOLVERS}, got {method!r}")


GRAM_UNROLL_MAX_N = 5
"""Up to this many parameters JᵀJ is formed from unrolled column products: 2× faster
than a batched matmul inside the LM step for n = 4, 5 (fused with the Jacobian), slower
in isolation from n = 6 on (``benchmarks/small_solve.py``)."""


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


def normal_diag(method: str, model: GaussNewtonModel) -> jax.Array:
    """diag(JᵀJ): the squared column norms of J."""
    if method == "cholesky":
        return jnp.diagonal(model.matrix)
    return jnp.sum(model.matrix * model.matrix, axis=0)


def gradient(method: str, model: GaussNewtonModel) -> jax.Array:
    """g = Jᵀr, the gradient of ½‖r‖²."""
    if method == "cholesky":
        return model.vector
    return model.matrix.T @ model.vector


def curvature(method: str, model: GaussNewtonModel, h: jax.Array) -> jax.Array:
    """hᵀJᵀJh = ‖Jh‖²."""
    if method == "cholesky":
        return h @ (model.matrix @ h)
    rh = model.matrix @ h
    return rh @ rh


def scale_model(method: str, model: GaussNewtonModel, factor: jax.Array) -> GaussNewtonModel:
    """The model of the residual ``factor·r`` (``factor`` a power of two: exact)."""
    if method == "cholesky":
        return GaussNewtonModel(model.matrix * (factor * factor), model.vector * (factor * factor))
    return GaussNewtonModel(model.matrix * factor, model.vector * factor)


def model_product(method: str, model: GaussNewtonModel, h: jax.Array) -> jax.Array:
    """``JᵀJ h``."""
    if method == "cholesky":
        return model.matrix @ h
    return model.matrix.T @ (model.matrix @ h)


class DampedFactor(NamedTuple):
    """A factorisation of ``A + μD`` for one step, shared by every solve of that step
    (the step itself and the geodesic acceleration's second solve).

    * cholesky: ``low`` is the lower Cholesky factor of the equilibrated ``S(A + μD)S``,
      ``aux`` the equilibration ``S`` (n,);
    * qr: ``low`` is the upper triangular ``R₂`` of ``[R; √μD^½] = Q₂R₂`` (so
      ``R₂ᵀR₂ = A + μD``), ``aux`` the ``Q₂`` (2n, n) the step's least-squares solve needs.

    ``ok`` is False when the factorisation failed (a pivot ≤ 0, a zero diagonal of R₂).
    """

    low: jax.Array
    aux: jax.Array
    ok: jax.Array


def damped_factor(method: str, model: GaussNewtonModel, mu: jax.Array, diag: jax.Array) -> DampedFactor:
    """Factor ``A + μD`` (``A = JᵀJ`` from ``model``, ``D = diag``) once for a step.

    Args:
      method: ``"cholesky"`` or ``"qr"``.
      model: the compressed linearisation from :func:`compress`.
      mu: damping parameter μ ≥ 0 (scalar).
      diag: the positive scaling diagonal D, shape (n,).

    Returns:
      A :class:`DampedFactor`; failure is reported in its ``ok``, never raised.
    """
    if method == "cholesky":
        a = model.matrix + jnp.diag(mu * diag)
        # Symmetric equilibration S(A + μD)S with S = diag(A + μD)^-½ keeps the pivots
        # O(1) whatever the units of the parameters; it does not change the solution.
        d = jnp.diagonal(a)
        s = jnp.where(d > 0, jax.lax.rsqrt(jnp.where(d > 0, d, 1)), 1)
        a_s = a * s[:, None] * s[None, :]
        if a.shape[0] <= UNROLL_MAX_N:
            low, ok = _unrolled_cholesky(a_s)
        else:
            low = jnp.linalg.cholesky(a_s)
            ok = jnp.all(jnp.isfinite(low))
        return DampedFactor(low, s, ok)
    if method == "qr":
        aug = jnp.concatenate([model.matrix, jnp.diag(jnp.sqrt(mu * diag))], axis=0)
        q, r = jnp.linalg.qr(aug, mode="reduced")
        return DampedFactor(r, q, _nonsingular(r))
    raise ValueError(f"linear_solver must be one of {LINEAR_SOLVERS}, got {method!r}")


def damped_step(method: str, model: GaussNewtonModel, factor: DampedFactor) -> tuple[jax.Array, jax.Array]:
    """The LM step: solve ``(JᵀJ + μ·diag(D)) h = −Jᵀr`` with the step's ``factor``.

    The qr method solves the augmented least-squares problem
    ``[R; √μD^½] h ≈ [−Qᵀr; 0]`` through ``Q₂``, never forming ``JᵀJ``.

    Returns:
      ``(h, ok)``: the step and a boolean scalar that is False when the factorisation
      failed or produced a non-finite step.  Never raises.
    """
    if method == "cholesky":
        return damped_solve(method, factor, -model.vector)
    if method == "qr":
        n = factor.low.shape[0]
        rhs = jnp.concatenate([-model.vector, jnp.zeros((n,), model.vector.dtype)])
        h = solve_triangular(factor.low, factor.aux.T @ rhs, lower=False)
        return h, factor.ok & jnp.all(jnp.isfinite(h))
    raise ValueError(f"linear_solver must be one of {LINEAR_SOLVERS}, got {method!r}")


def damped_solve(method: str, factor: DampedFactor, rhs: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Solve ``(JᵀJ + μ·diag(D)) y = rhs`` for any right-hand side with the step's
    ``factor`` (the geodesic acceleration's solve).  Returns ``(y, ok)``."""
    if method == "cholesky":
        s = factor.aux
        if factor.low.shape[0] <= UNROLL_MAX_N:
            y = _unrolled_substitute(factor.low, rhs * s) * s
        else:
            y = jax.scipy.linalg.cho_solve((factor.low, True), rhs * s) * s
        return y, factor.ok & jnp.all(jnp.isfinite(y))
    z = solve_triangular(factor.low, rhs, lower=False, trans="T")
    y = solve_triangular(factor.low, z, lower=False)
    return y, factor.ok & jnp.all(jnp.isfinite(y))


UNROLL_MAX_N = 12
"""Up to this many parameters the Cholesky solve is unrolled into elementwise jnp ops."""


def _unrolled_cholesky(a):
    """Lower Cholesky factor of a small symmetric positive definite ``a``, unrolled into
    scalar jnp ops, and whether every pivot was positive.

    Under ``vmap`` every scalar becomes a vector over the batch, so a batch of tiny
    systems runs as a few hundred fused elementwise operations instead of one LAPACK
    call per member (and it avoids batched LAPACK custom calls, which can wedge XLA's
    CPU runtime on large batches inside a while loop with jaxlib 0.10).  A pivot
    ``≤ 0`` (not positive definite) is reported through ``ok``, never raised; the
    arithmetic stays finite by using 1 in its place.
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


def _nonsingular(r):
    # A zero pivot means [R; √μD^½] is rank deficient: report instead of dividing by it.
    return jnp.all(jnp.abs(jnp.diagonal(r)) > jnp.finfo(r.dtype).tiny)
