"""The fit layer's covariance: a LAPACK-free SVD checked against numpy's, scipy's rank
rule, and a finishing program with no LAPACK call (the notebook-5 hang)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.optimize import OptimizeWarning

import jaxlm
from jaxlm._fitting._covariance import covariance, covariance_svd, jacobi_svd

SHAPES = [(68, 4), (10, 1), (5, 5), (30, 9), (3, 3), (2, 4), (40, 12)]
# the batches' LAPACK-free covariance, and LAPACK's SVD for one problem on its own
COVARIANCES = pytest.mark.parametrize("cov_fn", [covariance, covariance_svd], ids=["batched", "alone"])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", SHAPES)
def test_singular_values_and_vectors_match_numpy(dtype, shape):
    """Graded columns (1 … 1e-3): every singular value to a few ulps relative to itself,
    and the returned vectors make a·v orthogonal (the definition of an SVD)."""
    rng = np.random.default_rng(sum(shape))
    a = (rng.standard_normal(shape) * np.logspace(0, -3, shape[1])).astype(dtype)
    s, vt = jacobi_svd(jnp.asarray(a))
    assert s.dtype == dtype and vt.dtype == dtype
    ref = np.linalg.svd(a.astype(np.float64), compute_uv=False)
    got = np.sort(np.asarray(s, np.float64))[::-1][: ref.size]
    eps = np.finfo(dtype).eps
    np.testing.assert_allclose(got, ref, rtol=50 * eps, atol=50 * eps * ref[0])
    vt64 = np.asarray(vt, np.float64)
    np.testing.assert_allclose(vt64 @ vt64.T, np.eye(shape[1]), atol=20 * eps)
    b = a.astype(np.float64) @ vt64.T
    gram = b.T @ b
    off = gram - np.diag(np.diag(gram))
    assert np.max(np.abs(off)) <= 50 * eps * np.max(np.diag(gram))


@COVARIANCES
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_covariance_is_the_inverse_normal_matrix_under_vmap(dtype, cov_fn):
    rng = np.random.default_rng(1)
    jac = rng.standard_normal((200, 64, 4)) * np.array([1e3, 1.0, 1e-4, 10.0])  # units differ
    got = jax.jit(jax.vmap(cov_fn, in_axes=(0, None)))(jnp.asarray(jac, dtype), jnp.zeros(4, bool))
    scale = 1 / np.sqrt(np.sum(jac * jac, axis=1))  # the reference in unit columns too
    unit = jac * scale[:, None, :]
    ref = np.linalg.inv(np.einsum("bmi,bmj->bij", unit, unit)) * scale[:, :, None] * scale[:, None, :]
    # entries relative to √(Σᵢᵢ Σⱼⱼ): a correlation-scale error, whatever the units
    sd = np.sqrt(np.diagonal(ref, axis1=1, axis2=2))
    err = (np.asarray(got, np.float64) - ref) / (sd[:, :, None] * sd[:, None, :])
    assert np.max(np.abs(err)) <= 100 * np.finfo(dtype).eps


@COVARIANCES
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_rank_deficient_nonfinite_and_fixed(dtype, cov_fn):
    rng = np.random.default_rng(2)
    jac = rng.standard_normal((20, 3))
    dependent = jac.copy()
    dependent[:, 2] = dependent[:, 0] + 1e3 * dependent[:, 1]
    assert np.all(np.isinf(cov_fn(jnp.asarray(dependent, dtype), jnp.zeros(3, bool))))
    nonfinite = jac.copy()
    nonfinite[4, 1] = np.nan
    assert np.all(np.isinf(cov_fn(jnp.asarray(nonfinite, dtype), jnp.zeros(3, bool))))
    # a fixed parameter: its row and column are 0, the rest is the free block's inverse
    unused = jac.copy()
    unused[:, 1] = 0
    got = np.asarray(cov_fn(jnp.asarray(unused, dtype), jnp.array([False, True, False])), np.float64)
    free = unused[:, [0, 2]]
    np.testing.assert_allclose(got[np.ix_([0, 2], [0, 2])], np.linalg.inv(free.T @ free), rtol=1e-5)
    assert np.all(got[1] == 0) and np.all(got[:, 1] == 0)
    # ... and the same column left free: the data do not determine it
    assert np.all(np.isinf(cov_fn(jnp.asarray(unused, dtype), jnp.zeros(3, bool))))


def test_the_finishing_program_of_a_batched_fit_calls_no_lapack(monkeypatch):
    """jaxlib's batched CPU LAPACK kernels block an XLA pool thread while their tasks wait
    for a free one; a fit sharded over as many host devices as the pool has threads hung
    forever in the covariance SVD (notebook 5: 200 000 Gaussians on 4 host devices).  The
    programs the fit layer compiles must hold no LAPACK custom call at all."""
    from jaxlm._fitting import _run

    x = np.linspace(-5, 5, 32)
    y = np.exp(-0.5 * (x[None, :] - np.array([[0.1], [0.3]])) ** 2)
    seen = []
    original = _run._finish_batch

    def spy(*args):
        seen.append(original.lower(*args).as_text())
        return original(*args)

    monkeypatch.setattr(_run, "_finish_batch", spy)
    res = jaxlm.fit("gaussian", x, y, chunk_size=2)
    assert np.all(np.asarray(res.success))
    assert seen and not any("lapack" in text for text in seen)


@COVARIANCES
def test_derivatives_of_the_covariance_match_finite_differences(cov_fn):
    """Forward and reverse mode (perr is differentiable through fit) against central
    differences of the float64 inverse; a fixed column keeps zero rows and columns."""
    rng = np.random.default_rng(3)
    jac = jnp.asarray(rng.standard_normal((30, 3)))
    direction = jnp.asarray(rng.standard_normal((30, 3)))
    fixed = jnp.array([False, False, True])
    masked = jnp.where(fixed[None, :], 0, jac)

    def free_inverse(j):
        free = np.asarray(j)[:, :2]
        out = np.zeros((3, 3))
        out[:2, :2] = np.linalg.inv(free.T @ free)
        return out

    _, tangent = jax.jvp(lambda j: cov_fn(j, fixed), (masked,), (direction,))
    h = 1e-6
    fd = (free_inverse(masked + h * direction) - free_inverse(masked - h * direction)) / (2 * h)
    np.testing.assert_allclose(tangent, fd, rtol=1e-6, atol=1e-9 * np.max(np.abs(fd)))
    weights = jnp.asarray(rng.standard_normal((3, 3)))
    grad = jax.grad(lambda j: jnp.sum(weights * cov_fn(j, fixed)))(masked)
    np.testing.assert_allclose(jnp.vdot(grad, direction), jnp.sum(weights * tangent), rtol=1e-10)


@COVARIANCES
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_rank_rule_near_its_edge_is_scipys(dtype, cov_fn):
    """scipy's rule (smallest singular value ≤ eps·max(m, n)·largest, of the
    column-equilibrated J) on both sides of its edge, where the cheap bound
    κ ≤ ‖R‖_F‖R⁻¹‖_F ≤ n·κ cannot decide and the Jacobi SVD does: equal to numpy's
    decision for every condition number from 0.2 to 5 times the edge."""
    m, n = 20, 4
    rng = np.random.default_rng(4)
    eps = np.finfo(dtype).eps
    edge = 1 / (eps * m)
    u, _ = np.linalg.qr(rng.standard_normal((m, n)))
    v, _ = np.linalg.qr(rng.standard_normal((n, n)))
    decided, undecided_by_bound = [], []
    for factor in (0.2, 0.4, 0.7, 1.4, 2.5, 5.0):
        jac = ((u * np.array([1.0, 0.7, 0.4, 1 / (factor * edge)])) @ v.T).astype(dtype)
        unit = jac.astype(np.float64) / np.linalg.norm(jac.astype(np.float64), axis=0)
        s = np.linalg.svd(unit, compute_uv=False)
        expected = s[-1] <= eps * m * s[0]
        kappa_f = np.linalg.norm(unit) * np.linalg.norm(np.linalg.pinv(unit))
        got = cov_fn(jnp.asarray(jac), jnp.zeros(n, bool))
        assert bool(np.all(np.isinf(got))) == expected, (factor, s[0] / s[-1] / edge)
        decided.append(expected)
        undecided_by_bound.append(edge <= kappa_f < n * edge)
    assert any(decided) and not all(decided)  # both sides of the edge were tested
    assert sum(undecided_by_bound) >= 2  # ... and the Jacobi SVD decided some of them


def test_a_curve_alone_and_in_a_batch_get_the_same_covariance():
    """A single concrete fit finishes with numpy's SVD (``covariance_svd``), a batch
    without LAPACK: the same pcov to rounding (float64), with a fixed parameter and for
    a model the data do not determine (inf in both)."""
    x = np.linspace(-4, 4, 41)
    rng = np.random.default_rng(6)
    ys = np.stack([np.exp(-0.5 * (x - c) ** 2) + 0.01 * rng.standard_normal(x.size) for c in (0.2, -0.4)])

    def model(x, a, mu, s, c):
        return a * jnp.exp(-0.5 * ((x - mu) / s) ** 2) + c

    for kwargs in (dict(), dict(fixed=[False, False, False, True])):
        batch = jaxlm.fit(model, x, ys, [1.0, 0.0, 1.0, 0.0], **kwargs)
        for i in range(2):
            alone = jaxlm.fit(model, x, ys[i], [1.0, 0.0, 1.0, 0.0], **kwargs)
            assert bool(alone.success) and bool(batch.success[i])
            np.testing.assert_allclose(alone.params, batch.params[i], rtol=1e-9)
            np.testing.assert_allclose(alone.pcov, batch.pcov[i], rtol=1e-8)
    flat = lambda x, a, b: a + b + 0 * x  # noqa: E731  (only a + b is determined)
    with pytest.warns(OptimizeWarning, match="Covariance"):
        alone = jaxlm.fit(flat, x, ys[0], [1.0, 1.0])
    with pytest.warns(OptimizeWarning, match="Covariance"):
        batch = jaxlm.fit(flat, x, ys, [1.0, 1.0])
    assert np.all(np.isinf(alone.pcov)) and np.all(np.isinf(batch.pcov))
