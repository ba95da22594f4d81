"""``pcov`` from the model's Jacobian at the solution, without LAPACK.

The singular values and right singular vectors come from a one-sided Jacobi SVD
(Hestenes' method, as LAPACK's ``gesvj``) written in :mod:`jax.numpy`: plane rotations
of column pairs until every pair is orthogonal to working precision.  It is as accurate
as the LAPACK SVD (singular values to high relative accuracy), costs a few sweeps of
``n(n−1)/2`` dot products for the handful of parameters a curve has, and, above all,
keeps LAPACK out of the finishing program.  jaxlib's batched CPU LAPACK kernels split a
large batch into tasks on XLA's intra-op thread pool and block the pool thread that
runs them until the tasks finish (``ParallelBatchMap``); when a batch is sharded over
as many host devices as the pool has threads, every pool thread blocks at once and the
process hangs forever (jaxlib 0.10.2: ``gdb`` shows all ``tf_XLAEigen`` threads in
``lapack_sgesdd_ffi`` → ``BlockingCounter::Wait``; notebook 5 at full size, 200 000
Gaussians on 4 host devices).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

MAX_SWEEPS = 30
"""LAPACK's ``gesvj`` limit; quadratic convergence needs 5–10 sweeps in practice."""


def jacobi_svd(a):
    """Singular values ``s`` and right singular vectors (rows of ``vt``) of ``a`` (m×n).

    ``a = u · diag(s) · vt`` with ``s`` unsorted.  The rows of ``w = aᵀ`` and of ``vt``
    are rotated together, pair by pair, each rotation zeroing one inner product; a sweep
    visits every pair, and sweeps repeat until no pair's cosine exceeds ``√m·eps``
    (``gesvj``'s test).  Non-finite input ends the loop at once (its output is
    non-finite, which the caller reports as ``inf``).
    """
    m, n = a.shape
    dtype = a.dtype
    if m > n:  # the same singular values and vectors, from n instead of m rows
        a, m = _householder_r(a), n
    tol = jnp.sqrt(jnp.asarray(m, dtype)) * jnp.finfo(dtype).eps
    w, vt = tuple(a.T), tuple(jnp.eye(n, dtype=dtype))  # rows, carried one by one

    def sweep(carry):
        w, vt, _, k = carry
        w, vt = list(w), list(vt)  # static rows: every rotation is elementwise work
        off = jnp.zeros((), dtype)
        for p in range(n):
            for q in range(p + 1, n):
                alpha, beta, gamma = w[p] @ w[p], w[q] @ w[q], w[p] @ w[q]
                norm = jnp.sqrt(alpha) * jnp.sqrt(beta)
                cosine = jnp.where(norm > 0, jnp.abs(gamma) / jnp.where(norm > 0, norm, 1), 0)
                act = cosine > tol
                zeta = (beta - alpha) / (2 * jnp.where(act, gamma, 1))
                t = jnp.where(zeta >= 0, 1, -1) / (jnp.abs(zeta) + jnp.sqrt(1 + zeta * zeta))
                c = 1 / jnp.sqrt(1 + t * t)
                s, c = jnp.where(act, c * t, 0), jnp.where(act, c, 1)
                for x in (w, vt):
                    x[p], x[q] = c * x[p] - s * x[q], s * x[p] + c * x[q]
                off = jnp.maximum(off, cosine)
        return tuple(w), tuple(vt), off, k + 1

    def again(carry):
        _, _, off, k = carry
        return (off > tol) & (k < MAX_SWEEPS)  # False for a NaN cosine: non-finite input stops

    w, vt, _, _ = lax.while_loop(again, sweep, (w, vt, jnp.asarray(jnp.inf, dtype), 0))
    w, vt = jnp.stack(w), jnp.stack(vt)
    return jnp.sqrt(jnp.sum(w * w, axis=1)), vt


def _householder_r(a):
    """The n×n triangular ``R`` of ``a = QR`` (m > n) by Householder reflections, column
    by column with static indices.  Backward stable, so R's singular values are a's to
    within ``eps·‖a‖``, as LAPACK's."""
    m, n = a.shape
    rows = jnp.arange(m)
    cols = [a[:, j] for j in range(n)]
    for k in range(n):
        x = jnp.where(rows >= k, cols[k], 0)
        norm = jnp.sqrt(x @ x)
        alpha = jnp.where(x[k] >= 0, -norm, norm)
        v = x.at[k].add(-alpha)
        vv = v @ v
        inv = jnp.where(vv > 0, 2 / jnp.where(vv > 0, vv, 1), 0)
        cols[k] = jnp.where(rows >= k, 0, cols[k]).at[k].set(alpha)
        for j in range(k + 1, n):
            cols[j] = cols[j] - v * (inv * (v @ cols[j]))
    return jnp.stack([c[:n] for c in cols], axis=1)


@jax.custom_jvp
def covariance(jac, fixed):
    """``(JᵀJ)⁻¹`` over the free parameters, 0 rows/columns for fixed ones.

    As scipy's ``curve_fit``: if the free columns of J are rank deficient (a parameter
    the data do not determine, or two that only act together) every free entry is
    ``inf``.  The SVD is of the column-equilibrated J, so the rank test does not depend
    on the parameters' units; fixed columns are replaced by unit columns orthogonal to
    the rest (extra identity rows), which leaves the free block's inverse unchanged.
    """
    m, n = jac.shape
    dtype = jac.dtype
    eps = jnp.finfo(dtype).eps
    norms = jnp.sqrt(jnp.sum(jac * jac, axis=0))
    zero = norms == 0
    scale = jnp.where(fixed | zero, 1, 1 / jnp.where(zero, 1, norms))
    j_eq = jnp.concatenate(
        [jnp.where(fixed[None, :], 0, jac * scale[None, :]), jnp.diag(fixed.astype(dtype))], axis=0
    )
    s, vt = jacobi_svd(j_eq)
    singular = jnp.min(s) <= eps * max(m, n) * jnp.max(s)
    s_safe = jnp.where(singular, 1, s)
    cov = (vt.T / s_safe[None, :] ** 2) @ vt * scale[:, None] * scale[None, :]
    cov = jnp.where(singular | ~jnp.all(jnp.isfinite(cov)), jnp.inf, cov)
    return jnp.where(fixed[:, None] | fixed[None, :], 0, cov)


@covariance.defjvp
def _covariance_jvp(primals, tangents):
    """``d(A⁻¹) = −A⁻¹ dA A⁻¹`` with ``dA = dJᵀJ + JᵀdJ`` (J's fixed columns are 0, and
    so are Σ's fixed rows and columns).  The Jacobi sweeps are a ``while_loop``, which
    reverse mode cannot cross; this rule is linear in ``dJ``, so it transposes.  Entries
    that are ``inf`` (no covariance) get a zero tangent, as a constant."""
    jac, fixed = primals
    d_jac = tangents[0]
    cov = covariance(jac, fixed)
    finite = jnp.isfinite(cov)
    safe = jnp.where(finite, cov, 0)
    d_a = d_jac.T @ jac + jac.T @ d_jac
    return cov, jnp.where(finite, -(safe @ d_a @ safe), 0)
