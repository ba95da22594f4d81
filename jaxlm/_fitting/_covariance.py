"""``pcov`` from the model's Jacobian at the solution, without LAPACK in a batch.

``(JᵀJ)⁻¹ = R⁻¹R⁻ᵀ`` with ``R`` the triangular factor of the column-equilibrated J,
computed by modified Gram–Schmidt and inverted by back substitution, all in
:mod:`jax.numpy` with static loops over the few columns a curve has.  MGS's ``R`` is
backward stable (Björck & Paige 1992: MGS is Householder QR of ``[0; J]`` in exact
arithmetic and in rounding), so ``pcov`` is as accurate as from an SVD of J — and 3–4×
cheaper under a batch than the Householder + one-sided Jacobi SVD it replaces (which
ran a sweep ``while_loop`` over every member of the batch).

The rank rule is scipy's: J is rank deficient when its smallest singular value is at
most ``eps·max(m, n)`` times its largest.  ``κ_F = ‖R‖_F‖R⁻¹‖_F`` lies between the
2-norm condition number κ and ``n·κ``, which settles the rule for almost every fit; only
a member whose κ_F falls in between gets its singular values from a one-sided Jacobi
SVD of the n×n R (Hestenes' method, as LAPACK's ``gesvj``), and under ``vmap`` that
loop runs no sweep at all when no member needs it.

Why no LAPACK: jaxlib's batched CPU LAPACK kernels split a large batch into tasks on
XLA's intra-op thread pool and block the pool thread that runs them until the tasks
finish (``ParallelBatchMap``); when a batch is sharded over as many host devices as the
pool has threads, every pool thread blocks at once and the process hangs forever
(jaxlib 0.10.2: ``gdb`` shows all ``tf_XLAEigen`` threads in ``lapack_sgesdd_ffi`` →
``BlockingCounter::Wait``; notebook 5 at full size, 200 000 Gaussians on 4 host
devices).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxlm._fitting._host import on_host

MAX_SWEEPS = 30
"""LAPACK's ``gesvj`` limit; quadratic convergence needs 5–10 sweeps in practice."""


def jacobi_svd(a, active=True):
    """Singular values ``s`` and right singular vectors (rows of ``vt``) of ``a`` (m×n).

    ``a = u · diag(s) · vt`` with ``s`` unsorted.  The rows of ``w = aᵀ`` and of ``vt``
    are rotated together, pair by pair, each rotation zeroing one inner product; a sweep
    visits every pair, and sweeps repeat until no pair's cosine exceeds ``√m·eps``
    (``gesvj``'s test).  Non-finite input ends the loop at once (its output is
    non-finite, which the caller reports as ``inf``).  ``active=False`` runs no sweep
    (``s`` are then the column norms): under ``vmap`` the loop runs only while a member
    that asked for it has not converged.
    """
    m, n = a.shape
    dtype = a.dtype
    tol = jnp.sqrt(jnp.asarray(m, dtype)) * jnp.finfo(dtype).eps
    pairs = np.array([(p, q) for p in range(n) for q in range(p + 1, n)], np.int32).reshape(-1, 2)
    pairs = jnp.asarray(pairs)  # indexed by the loop's counter: a traced index

    def rotate(i, carry):
        """One rotation, of the rows ``pairs[i]``: a loop over the pairs rather than one
        unrolled copy per pair, for a program a sixth the size at n = 4 (the sweeps run
        only for the rare member whose rank is in doubt)."""
        w, vt, off = carry
        p, q = pairs[i, 0], pairs[i, 1]
        wp, wq = w[p], w[q]
        alpha, beta, gamma = wp @ wp, wq @ wq, wp @ wq
        norm = jnp.sqrt(alpha) * jnp.sqrt(beta)
        cosine = jnp.where(norm > 0, jnp.abs(gamma) / jnp.where(norm > 0, norm, 1), 0)
        act = cosine > tol
        zeta = (beta - alpha) / (2 * jnp.where(act, gamma, 1))
        t = jnp.where(zeta >= 0, 1, -1) / (jnp.abs(zeta) + jnp.sqrt(1 + zeta * zeta))
        c = 1 / jnp.sqrt(1 + t * t)
        s, c = jnp.where(act, c * t, 0), jnp.where(act, c, 1)
        vp, vq = vt[p], vt[q]
        w = w.at[p].set(c * wp - s * wq).at[q].set(s * wp + c * wq)
        vt = vt.at[p].set(c * vp - s * vq).at[q].set(s * vp + c * vq)
        return w, vt, jnp.maximum(off, cosine)

    def sweep(carry):
        w, vt, _, k = carry
        if len(pairs):
            w, vt, off = lax.fori_loop(0, len(pairs), rotate, (w, vt, jnp.zeros((), dtype)))
        else:  # one column: nothing to rotate
            off = jnp.zeros((), dtype)
        return w, vt, off, k + 1

    def again(carry):
        _, _, off, k = carry
        return active & (off > tol) & (k < MAX_SWEEPS)  # False for a NaN cosine

    start = (a.T, jnp.eye(n, dtype=dtype), jnp.asarray(jnp.inf, dtype), 0)
    w, vt, _, _ = lax.while_loop(again, sweep, start)
    return jnp.sqrt(jnp.sum(w * w, axis=1)), vt


def gram_schmidt_r(a, fixed):
    """The n×n upper-triangular ``R`` of ``[a; diag(fixed)]`` (m×n ``a`` whose fixed
    columns are 0) by modified Gram–Schmidt, column by column with static indices.

    A fixed column is the unit vector of its extra row, orthogonal to every other
    column, so its row and column of ``R`` are those of the identity.  A zero free
    column gives a zero pivot: ``R`` is singular, as J."""
    n = a.shape[1]
    zero = jnp.zeros((), a.dtype)
    cols = [a[:, j] for j in range(n)]
    r = [[zero] * n for _ in range(n)]
    for k in range(n):
        norm = jnp.sqrt(cols[k] @ cols[k])
        r[k][k] = jnp.where(fixed[k], 1, norm)
        q = cols[k] / jnp.where(norm > 0, norm, 1)
        for j in range(k + 1, n):
            r[k][j] = q @ cols[j]
            cols[j] = cols[j] - r[k][j] * q
    return jnp.stack([jnp.stack(row) for row in r])


def upper_inverse(r):
    """``R⁻¹`` of an upper-triangular ``r`` by back substitution, row by row (a zero
    pivot gives non-finite rows)."""
    n = r.shape[0]
    eye = jnp.eye(n, dtype=r.dtype)
    rows = [None] * n
    for i in reversed(range(n)):
        acc = eye[i]
        for k in range(i + 1, n):
            acc = acc - r[i, k] * rows[k]
        rows[i] = acc / r[i, i]
    return jnp.stack(rows)


def rank_deficient(r, r_inv, size):
    """scipy's rule, ``s_min ≤ eps·size·s_max`` for the singular values of ``r``: decided
    by ``κ_F = ‖R‖_F‖R⁻¹‖_F ∈ [κ, n·κ]`` where it can be, else by the Jacobi SVD."""
    n = r.shape[0]
    eps = jnp.finfo(r.dtype).eps
    limit = 1 / (eps * size)  # κ at the rule's edge
    kappa_f = jnp.sqrt(jnp.sum(r * r)) * jnp.sqrt(jnp.sum(r_inv * r_inv))
    regular = kappa_f < limit  # κ ≤ κ_F < limit
    singular = ~(kappa_f < n * limit)  # κ ≥ κ_F / n ≥ limit, or R⁻¹ not finite
    between = ~regular & ~singular
    s, _ = jacobi_svd(r, active=between)
    return jnp.where(between, jnp.min(s) <= eps * size * jnp.max(s), singular)


@jax.custom_jvp
def covariance(jac, fixed):
    """``(JᵀJ)⁻¹`` over the free parameters, 0 rows/columns for fixed ones.

    As scipy's ``curve_fit``: if the free columns of J are rank deficient (a parameter
    the data do not determine, or two that only act together) every free entry is
    ``inf``.  ``R`` is of the column-equilibrated J, so the rank test does not depend on
    the parameters' units; fixed columns are replaced by unit columns orthogonal to the
    rest, which leaves the free block's inverse unchanged.
    """
    m, n = jac.shape
    scale = equilibration(jnp.sum(jac * jac, axis=0), fixed)
    r = gram_schmidt_r(equilibrated(jac, scale, fixed), fixed)
    return from_r(r, scale, fixed, max(m, n))


def equilibration(squared_norms, fixed):
    """The column scaling that gives every free, nonzero column of J unit norm (1 for
    fixed and zero columns), from the columns' squared norms."""
    zero = squared_norms == 0
    return jnp.where(fixed | zero, 1, 1 / jnp.where(zero, 1, jnp.sqrt(squared_norms)))


def equilibrated(jac, scale, fixed):
    """J (or a block of its rows) scaled by column, fixed columns set to 0."""
    return jnp.where(fixed[None, :], 0, jac * scale[None, :])


def from_r(r, scale, fixed, size):
    """``pcov`` from the triangular factor ``r`` of the equilibrated J (``size``:
    ``max(m, n)`` of J, for the rank rule)."""
    r_inv = upper_inverse(r)
    singular = rank_deficient(r, r_inv, size)
    # R⁻¹R⁻ᵀ as one broadcast product: under vmap a batch of tiny matmuls is slower
    return _finished(jnp.sum(r_inv[:, None, :] * r_inv[None, :, :], axis=-1), scale, fixed, singular)


def _finished(inverse, scale, fixed, singular):
    """pcov from the equilibrated problem's inverse: scaled back, ``inf`` when rank
    deficient or not finite, 0 in the fixed rows and columns."""
    cov = inverse * scale[:, None] * scale[None, :]
    cov = jnp.where(singular | ~jnp.all(jnp.isfinite(cov)), jnp.inf, cov)
    return jnp.where(fixed[:, None] | fixed[None, :], 0, cov)


@jax.custom_jvp
def covariance_svd(jac, fixed):
    """:func:`covariance` from an SVD of the equilibrated J with a unit row per
    fixed column (the same matrix whose triangular factor :func:`covariance` builds),
    as scipy computes it: for a problem solved on its own, outside any ``vmap`` and
    sharding (the module docstring says why batches do without LAPACK), where it is one
    call instead of the unrolled factor, inverse and rank test — a program that compiles
    in 0.3 s less on 2 cores.  The same rank rule on the same singular values, and the
    same numbers to rounding.

    The SVD is numpy's (LAPACK's ``gesdd``, as scipy's), called back on the host
    (:func:`host_svd`): jaxlib's own LAPACK kernels import scipy.linalg when the first
    one is compiled, 0.13 s of a process's first ``curve_fit``."""
    m, n = jac.shape
    scale = equilibration(jnp.sum(jac * jac, axis=0), fixed)
    aug = jnp.concatenate([equilibrated(jac, scale, fixed), jnp.diag(fixed.astype(jac.dtype))])
    s, vt = host_svd(aug)
    eps = jnp.finfo(jac.dtype).eps
    # not finite: said outright, as XLA's CPU max/min reductions may drop a NaN
    singular = ~(jnp.min(s) > eps * max(m, n) * jnp.max(s)) | ~jnp.all(jnp.isfinite(s))
    return _finished((vt.T / (s * s)[None, :]) @ vt, scale, fixed, singular)


def host_svd(a):
    """Singular values and right singular vectors (rows of ``vt``) of an (m+n)×n ``a``
    from ``numpy.linalg.svd`` on the host (:func:`._host.on_host`: float64 stays float64
    with x64 off); NaN where ``a`` is not finite or the SVD did not converge (numpy
    raises there), which the caller reports as no covariance."""
    n = a.shape[1]

    def svd(a):
        failed = np.full((n + 1, n), np.nan, a.dtype)
        if not np.all(np.isfinite(a)):
            return failed
        try:
            _, s, vt = np.linalg.svd(a, full_matrices=False)
        except np.linalg.LinAlgError:
            return failed
        return np.concatenate([s[None, :], vt]).astype(a.dtype)

    # under vmap (never in jaxlm's own batches) one call per member: a bad member's NaN
    # stays its own
    out = on_host(svd, (n + 1, n), a.dtype, a)
    return out[0], out[1:]


@covariance.defjvp
def _covariance_jvp(primals, tangents):
    """``d(A⁻¹) = −A⁻¹ dA A⁻¹`` with ``dA = dJᵀJ + JᵀdJ`` (J's fixed columns are 0, and
    so are Σ's fixed rows and columns).  The rank test's Jacobi sweeps are a
    ``while_loop``, which reverse mode cannot cross; this rule is linear in ``dJ``, so
    it transposes.  Entries that are ``inf`` (no covariance) get a zero tangent, as a
    constant."""
    return _inverse_jvp(covariance(*primals), primals, tangents)


@covariance_svd.defjvp
def _covariance_svd_jvp(primals, tangents):
    """As :func:`_covariance_jvp`."""
    return _inverse_jvp(covariance_svd(*primals), primals, tangents)


def _inverse_jvp(cov, primals, tangents):
    jac, _ = primals
    d_jac = tangents[0]
    finite = jnp.isfinite(cov)
    safe = jnp.where(finite, cov, 0)
    d_a = d_jac.T @ jac + jac.T @ d_jac
    return cov, jnp.where(finite, -(safe @ d_a @ safe), 0)
