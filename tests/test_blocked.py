"""A residual evaluated a block of points at a time (jaxlm._blocks) and the fit of one
curve of millions of points (jaxlm._fitting._blocked): the same answers as the unblocked
solve and fit, to rounding, and memory that does not grow with m·n.

Small blocks (and a low threshold) keep the tests fast; the arithmetic is the same at
any size.  ``benchmarks/huge_fit.py`` runs m = 10⁶ … 10⁸."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxlm
from jaxlm._blocks import Blocked
from jaxlm._fitting import _blocked

RTOL = {np.float32: 1e-4, np.float64: 1e-10}  # path differences: the sums' order only


def decay(p, t, y):
    return p[0] * jnp.exp(-p[1] * t) + p[2] - y


@jax.custom_vjp
def _softplus(x):
    return jnp.logaddexp(x, 0.0)


_softplus.defvjp(lambda x: (_softplus(x), x), lambda x, g: (g * jax.nn.sigmoid(x),))


def soft_decay(p, t, y):  # a custom_vjp inside: no forward mode, finite-difference r''
    return _softplus(p[0] * jnp.exp(-p[1] * t)) + p[2] - y


def _data(m, dtype, seed=0):
    rng = np.random.default_rng(seed)
    t = np.linspace(0.0, 5.0, m)
    y = 2.5 * np.exp(-1.3 * t) + 0.4 + 0.01 * rng.standard_normal(m)
    return t.astype(dtype), y.astype(dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(
    "fun, options",
    [
        (decay, {}),
        (decay, {"linear_solver": "qr"}),
        (decay, {"geodesic": False, "restart": None}),
        (decay, {"jac": lambda p, t, y: jax.jacfwd(decay)(p, t, y)}),
        (soft_decay, {}),
    ],
    ids=["default", "qr", "plain", "callable-jac", "custom_vjp"],
)
def test_a_blocked_residual_follows_the_unblocked_path(dtype, fun, options):
    """Under jit, in float32 and float64, every Jacobian mode and both linear solves:
    the solution, cost, status and step count of the unblocked solve."""
    t, y = _data(6000, dtype)
    x0 = jnp.asarray([1.0, 0.5, 0.0], dtype)
    plain = jax.jit(lambda x0, t, y: jaxlm.least_squares(fun, x0, (t, y), **options))(x0, t, y)
    blocks = (t.reshape(10, 600), y.reshape(10, 600))
    blocked = jax.jit(lambda x0, t, y: jaxlm.least_squares(Blocked(fun, (0, 0)), x0, (t, y), **options))(
        x0, *blocks
    )
    assert bool(plain.success) and bool(blocked.success)
    np.testing.assert_allclose(blocked.params, plain.params, rtol=RTOL[dtype])
    np.testing.assert_allclose(blocked.cost, plain.cost, rtol=RTOL[dtype])
    if dtype == np.float64:
        assert int(blocked.n_steps) == int(plain.n_steps)


def test_a_blocked_residual_batches_under_vmap():
    """Three problems of 4000 points, blocks of 500, under vmap: each as solved alone."""
    t, y = _data(4000, np.float64)
    ys = np.stack([y, 1.5 * y, y + 0.2])
    fun = Blocked(decay, (0, 0))
    x0 = jnp.asarray([1.0, 0.5, 0.0])
    solve = lambda y: jaxlm.least_squares(fun, x0, (t.reshape(8, 500), y.reshape(8, 500)))  # noqa: E731
    batch = jax.vmap(solve)(jnp.asarray(ys))
    for i in range(3):
        alone = jaxlm.least_squares(decay, x0, (t, ys[i]))
        np.testing.assert_allclose(batch.params[i], alone.params, rtol=1e-10)


def _root_decay(p, t, y):  # √(c²) at c = 0: r finite, its derivative 0/0 = NaN
    return p[0] * jnp.exp(-p[1] * t) + jnp.sqrt(p[2] * p[2]) - y


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", ["nan_data", "nan_jacobian", "overflowing_normal_matrix"])
def test_a_blocked_start_that_is_not_finite_is_nonfinite_as_unblocked(dtype, case):
    """The start's finiteness comes from the accumulated n×n model (JᵀJ holds a NaN or an
    inf wherever any block's r or J does): NaN data in one block, a NaN Jacobian column, or
    a JᵀJ that overflows end NONFINITE at the start, blocked and unblocked, alone and under
    vmap beside a good problem, which is solved as on its own."""
    t, y = _data(4000, dtype)
    x0 = np.asarray([1.0, 0.5, 0.4], dtype)
    fun = _root_decay
    if case == "nan_data":
        y_bad = y.copy()
        y_bad[2345] = np.nan  # in the fifth of eight blocks
        x_bad = x0
    elif case == "nan_jacobian":
        y_bad, x_bad = y, np.asarray([1.0, 0.5, 0.0], dtype)
    else:
        big = 1e20 if dtype == np.float32 else 1e160
        y_bad, x_bad = y, x0
        fun = lambda p, t, y: _root_decay(p, t, y) + (p[2] - 0.4) * big  # noqa: E731
    blocked = Blocked(fun, (0, 0))
    blocks = lambda a: jnp.asarray(a).reshape(8, 500)  # noqa: E731
    for sol in (
        jaxlm.least_squares(fun, jnp.asarray(x_bad), (jnp.asarray(t), jnp.asarray(y_bad))),
        jaxlm.least_squares(blocked, jnp.asarray(x_bad), (blocks(t), blocks(y_bad))),
    ):
        assert int(sol.status) == jaxlm.Status.NONFINITE
        np.testing.assert_array_equal(np.asarray(sol.params), x_bad)
    both = jax.vmap(lambda p, y: jaxlm.least_squares(blocked, p, (blocks(t), y)))(
        jnp.asarray(np.stack([x_bad, x0])), jnp.stack([blocks(y_bad), blocks(y)])
    )
    good = jaxlm.least_squares(blocked, jnp.asarray(x0), (blocks(t), blocks(y)))
    assert int(both.status[0]) == jaxlm.Status.NONFINITE
    if case != "overflowing_normal_matrix":  # there the good problem's k is huge too
        assert bool(good.success)
        np.testing.assert_allclose(both.params[1], good.params, rtol=RTOL[dtype])


@pytest.fixture
def small_blocks(monkeypatch):
    """Fits of ≥ 3000 points go through the blocked path, in blocks of 1024 (so the last
    block is padded)."""
    monkeypatch.setattr(_blocked, "MIN_POINTS", 3000)
    monkeypatch.setattr(_blocked, "BLOCK", 1024)


def _same_fit(blocked, plain, dtype):
    """The same fit to rounding: the two paths stop where the same test is met on sums
    taken in another order, so the parameters agree to within what the stopping test
    resolves — a relative change ftol of a cost of about dof/2 moves a parameter by
    ~√(ftol·dof) of its error — and every statistic to a relative tolerance; the same
    verdict, dof and points (which converged code ends a float32 fit may change)."""
    perr = np.asarray(plain.perr, np.float64)
    resolved = np.sqrt(jaxlm.default_tolerance(dtype) * max(int(plain.dof), 1))
    diff = np.abs(np.asarray(blocked.params, np.float64) - np.asarray(plain.params, np.float64))
    assert np.all(diff <= resolved * np.where(perr > 0, perr, 1)), (diff, perr)
    rtol = np.sqrt(jaxlm.default_tolerance(dtype))  # statistics at points that far apart
    for name in ("perr", "chi2", "cost", "rsquared"):
        got, want = (np.asarray(getattr(r, name), np.float64) for r in (blocked, plain))
        np.testing.assert_allclose(got, want, rtol=rtol, atol=0, err_msg=name)
    # the covariance in correlation units: entries relative to √(Σᵢᵢ Σⱼⱼ)
    scale = np.where(perr > 0, perr, 1)
    got, want = (np.asarray(r.pcov, np.float64) / np.outer(scale, scale) for r in (blocked, plain))
    np.testing.assert_allclose(got, want, rtol=0, atol=rtol, err_msg="pcov")
    for name in ("success", "dof", "n_points"):
        assert int(getattr(blocked, name)) == int(getattr(plain, name)), name


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(
    "options",
    [
        {},
        {"sigma": "per point", "absolute_sigma": True},
        {"mask": "some", "bounds": ([0, 0, -1], [10, 10, 1])},
        {"fixed": [False, False, True], "loss": "soft_l1"},
        {"estimator": "poisson"},
    ],
    ids=["plain", "sigma", "mask-bounds", "fixed-loss", "poisson"],
)
def test_a_fit_of_many_points_is_blocked_and_equals_the_unblocked_fit(
    small_blocks, monkeypatch, dtype, options
):
    t, y = _data(5000, dtype, seed=1)
    kwargs = dict(options)
    if kwargs.get("sigma") == "per point":
        kwargs["sigma"] = (0.01 * (1 + np.linspace(0, 1, t.size))).astype(dtype)
    if kwargs.get("mask") == "some":
        mask = np.ones(t.size, bool)
        mask[::7] = False
        kwargs["mask"] = mask
    if kwargs.get("estimator") == "poisson":
        y = np.random.default_rng(2).poisson(200 * np.exp(-0.8 * t.astype(float)) + 5).astype(dtype)
    model = lambda t, a, k, c: a * jnp.exp(-k * t) + c  # noqa: E731
    p0 = np.array([100.0 if "estimator" in kwargs else 1.0, 0.5, 0.25], dtype)
    used = []
    original = _blocked.fit_blocked
    monkeypatch.setattr(_blocked, "fit_blocked", lambda *a: used.append(1) or original(*a))
    blocked = jaxlm.fit(model, t, y, p0, **kwargs)
    assert used, "the blocked path was not taken"
    monkeypatch.setattr(_blocked, "MIN_POINTS", 10**9)
    plain = jaxlm.fit(model, t, y, p0, **kwargs)
    assert bool(plain.success)
    _same_fit(blocked, plain, dtype)


def test_two_dimensional_points_are_blocked_along_the_points(small_blocks, monkeypatch):
    """A (2, m) pixel grid: the blocks cut the points axis, not the coordinates."""
    yy, xx = np.mgrid[0:60, 0:60]
    grid = np.stack([xx.ravel(), yy.ravel()]).astype(float)  # 3600 points
    truth = jaxlm.models.gaussian_2d(jnp.asarray(grid), 5.0, 30.2, 29.7, 6.0, 1.0)
    data = np.asarray(truth) + 0.05 * np.random.default_rng(3).standard_normal(grid.shape[1])
    blocked = jaxlm.fit("gaussian_2d", grid, data)
    monkeypatch.setattr(_blocked, "MIN_POINTS", 10**9)
    plain = jaxlm.fit("gaussian_2d", grid, data)
    _same_fit(blocked, plain, np.float64)


def test_the_blocked_solve_never_holds_the_jacobian():
    """XLA's plan for one blocked step at m = 2²⁰ points: its temporaries are far below
    the m×n Jacobian (and far below the unblocked step's)."""
    m, n, block = 2**20, 3, 2**12
    t, y = (jnp.zeros((m,)) for _ in range(2))
    solver = jaxlm.LevenbergMarquardt()
    fun = Blocked(decay, (0, 0))
    args = (t.reshape(-1, block), y.reshape(-1, block))
    state = jax.eval_shape(lambda: solver.init(fun, jnp.ones(n), *args))
    blocked = jax.jit(lambda s, *a: solver.step(fun, s, *a)).lower(state, *args).compile()
    plain = jax.jit(lambda s, *a: solver.step(decay, s, *a)).lower(state, t, y).compile()
    jacobian = m * n * 8
    assert blocked.memory_analysis().temp_size_in_bytes < jacobian / 20
    assert plain.memory_analysis().temp_size_in_bytes >= jacobian
