"""success ⇒ a minimum: every trap residual (tests/traps.py), in float32 and float64,
under vmap and through the driver.  Each defect of issue 12 has its case here."""

import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxlm
from jaxlm import Status
from tests.traps import TRAPS, cases, stationary


def _starts(trap, dtype):
    x0 = np.asarray(trap.x0, np.float64)
    # the start itself and two nearby ones (a batch, so vmap and the driver have work)
    return jnp.asarray(np.stack([x0, x0 * (1 + trap.spread), x0 * (1 - trap.spread)]), dtype)


def _check(trap, sol, where, dtype):
    status = np.asarray(sol.status)
    success = np.asarray(sol.success)
    for i in range(status.shape[0]):
        if trap.best_cost is None:
            name = Status(int(status[i])).name
            assert not success[i], f"{where}: {trap.name} claims {name} without a minimum"
        if success[i]:
            ok, detail = stationary(trap, np.asarray(sol.params)[i], dtype)
            name = Status(int(status[i])).name
            assert ok, f"{where}: {trap.name} member {i} {name} at a non-minimum: {detail}"
    return status


@pytest.mark.parametrize("name,dtype", cases())
def test_success_means_a_minimum(name, dtype):
    trap = TRAPS[name]
    args = tuple(jnp.asarray(a, dtype) for a in trap.args)
    x0 = _starts(trap, dtype)

    solve = jax.vmap(lambda x: jaxlm.least_squares(trap.fun, x, args))
    vmapped = solve(x0)
    status_v = _check(trap, vmapped, "vmap", dtype)

    driven = jaxlm.least_squares_batch(trap.fun, x0, args, in_axes=None, chunk_size=2)
    status_d = _check(trap, driven, "driver", dtype)
    assert np.asarray(driven.params).dtype == np.dtype(dtype)

    # one concrete problem: its own small program (compiled with XLA's classic emitters)
    one = jaxlm.least_squares(trap.fun, x0[0], args)
    single = types.SimpleNamespace(
        status=one.status[None], success=one.success[None], params=one.params[None]
    )
    status_s = _check(trap, single, "single", dtype)

    if trap.best_cost is not None and dtype == "float64":
        # every trap with a reachable minimum is solved in float64, on every path
        for status in (status_v, status_d, status_s):
            assert np.all((status >= 1) & (status <= 3)), [Status(int(s)).name for s in status]


def test_geodesic_where_idiom_is_solved_not_converged_at_start():
    """Defect 1: the single-where idiom is NaN in reverse mode; the accelerated step used
    to be rejected and counted as convergence at x0 (cost 14.1 instead of ~0)."""
    trap = TRAPS["log_where"]
    for geodesic in (True, False):
        sol = jaxlm.least_squares(trap.fun, jnp.zeros(2), trap.args, geodesic=geodesic)
        assert bool(sol.success)
        np.testing.assert_allclose(np.asarray(sol.params), [1.5, 0.3], rtol=1e-8)
        assert float(sol.cost) < 1e-20


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_masked_point_at_extreme_x(dtype):
    """Defect 1 through fit: a masked point at x = −2000 overflows exp(−b·x); the fit
    used to return p0 as converged."""
    x = np.linspace(0.0, 3.0, 30)
    y = 2.0 * np.exp(-1.3 * x)
    x[5], y[5] = -2000.0, 1.0  # a masked point; the model overflows there
    mask = np.ones(30, bool)
    mask[5] = False
    res = jaxlm.fit(
        lambda x, a, b: a * jnp.exp(-b * x),
        jnp.asarray(x, dtype),
        jnp.asarray(y, dtype),
        p0=jnp.asarray([1.0, 1.0], dtype),
        mask=mask,
    )
    assert bool(res.success), Status(int(res.status))
    np.testing.assert_allclose(np.asarray(res.params), [2.0, 1.3], rtol=1e-4 if dtype == "float32" else 1e-10)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_rejections_outside_the_domain_are_not_convergence(dtype):
    """Defect 2: r = p − 2 + 0·log1p(−p) used to end CONVERGED_XTOL at p = 1 (gradient −1)."""
    sol = jaxlm.least_squares(TRAPS["log1p_domain"].fun, jnp.asarray([0.5], dtype))
    assert int(sol.status) == Status.NO_PROGRESS
    assert not bool(sol.success)
    assert float(sol.params[0]) <= 1.0  # never left the domain


@pytest.mark.parametrize(
    "dtype,scales",
    [
        ("float32", [2.0**k for k in range(-90, 91, 15)] + [1e-12, 1e-11, 3.7e9]),
        ("float64", [2.0**k for k in range(-480, 481, 60)] + [1e-200, 1e-150, 1e150, 3.7e9]),
    ],
)
def test_units_do_not_matter(dtype, scales):
    """Defect 3: s·y with amplitude s·a follows the same path for every s: bit for bit
    for powers of two, up to rounding otherwise (float32 used to stop after 1 step at
    1e-11; float64 at 0 steps for 1e-200 and after 1 step for 1e150)."""
    trap = TRAPS["gaussian_units_1e+12" if dtype == "float32" else "gaussian_units_1e+100"]
    x, y1 = trap.args
    y1 = y1 / (1e12 if dtype == "float32" else 1e100)

    def solve(s):
        return jaxlm.least_squares(
            trap.fun, jnp.asarray([s, 0.0, 1.0], dtype), (jnp.asarray(x, dtype), jnp.asarray(s * y1, dtype))
        )

    base = solve(1.0)
    assert bool(base.success)
    for s in scales:
        sol = solve(s)
        assert bool(sol.success), (s, Status(int(sol.status)))
        back = np.asarray(sol.params, np.float64) / np.array([s, 1, 1])
        if np.log2(s) == int(np.log2(s)):
            assert int(sol.n_steps) == int(base.n_steps), s
            np.testing.assert_array_equal(back, np.asarray(base.params, np.float64))
        else:
            assert abs(int(sol.n_steps) - int(base.n_steps)) <= 1, s
            tol = 1e-4 if dtype == "float32" else 1e-10
            np.testing.assert_allclose(back, np.asarray(base.params, np.float64), rtol=tol, atol=tol)


def test_parameters_in_other_units_follow_the_same_path():
    """Columns whose curvatures differ by far more than 1/eps² are not coupled by a
    floor: the amplitude in 1e-100 units and the centre in 1e+100 units."""
    trap = TRAPS["gaussian_units_1e+100"]
    x, y = trap.args
    y = y / 1e100
    base = jaxlm.least_squares(trap.fun, jnp.asarray([1.0, 0.0, 1.0]), (jnp.asarray(x), jnp.asarray(y)))
    unit = np.array([2.0**-330, 2.0**330, 1.0])

    def in_units(q, x, y):
        return trap.fun(q * unit, x, y)

    sol = jaxlm.least_squares(in_units, jnp.asarray([1.0, 0.0, 1.0]) / unit, (jnp.asarray(x), jnp.asarray(y)))
    assert bool(sol.success)
    assert int(sol.n_steps) == int(base.n_steps)
    np.testing.assert_array_equal(np.asarray(sol.params) * unit, np.asarray(base.params))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_nan_policy_omit_keeps_members_isolated(dtype):
    """Defect 4: one NaN point in one curve used to switch the whole batch to another
    program and change other curves' results."""
    rng = np.random.default_rng(3)
    x = np.linspace(-3, 3, 40)
    y = 2.0 * np.exp(-0.5 * ((x - rng.uniform(-0.5, 0.5, (300, 1))) / 0.8) ** 2)
    y = y + 0.05 * rng.standard_normal(y.shape)
    gauss = jaxlm.models.gaussian
    clean = jaxlm.fit(gauss, jnp.asarray(x, dtype), jnp.asarray(y, dtype), nan_policy="omit")
    dirty_y = y.copy()
    dirty_y[17, 5] = np.nan
    dirty = jaxlm.fit(gauss, jnp.asarray(x, dtype), jnp.asarray(dirty_y, dtype), nan_policy="omit")
    others = np.arange(300) != 17
    np.testing.assert_array_equal(np.asarray(dirty.params)[others], np.asarray(clean.params)[others])
    np.testing.assert_array_equal(np.asarray(dirty.status)[others], np.asarray(clean.status)[others])
    assert bool(dirty.success[17]) and int(dirty.dof[17]) == int(clean.dof[17]) - 1


@pytest.mark.parametrize("geodesic", [True, False])
@pytest.mark.parametrize("jac", ["fwd", "rev"])
def test_custom_vjp_residual(jac, geodesic):
    """Defect 5c: a residual with a jax.custom_vjp inside (no forward mode) is solved
    with every Jacobian mode, with and without geodesic acceleration."""
    trap = TRAPS["custom_vjp"]
    sol = jaxlm.least_squares(trap.fun, jnp.asarray(trap.x0), trap.args, jac=jac, geodesic=geodesic)
    assert bool(sol.success)
    np.testing.assert_allclose(np.asarray(sol.params), [1.3, -1.0], rtol=1e-8)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_a_start_too_small_for_its_column_counts_as_zero(dtype):
    """Found by hypothesis (test_properties): an offset started at 4e-277 got the unit
    2^-919, its normalised column underflowed to 0 in JᵀJ, and the fit claimed
    CONVERGED_XTOL with that parameter's cosine at 0.06.  Such a start is, to rounding, a
    start at 0, and must reach the same minimum — under vmap and through the driver."""
    t = np.linspace(0.0, 3.0, 25)
    y = np.exp(-t) + 0.02 * np.random.default_rng(0).standard_normal(t.shape)

    def decay(p, t, y):
        return p[0] * jnp.exp(-p[1] * t) + p[2] - y

    tiny = 4.054364281556156e-277 if dtype == "float64" else 1e-30
    x0 = jnp.asarray([[1.0, 1.0, 0.0], [1.0, 1.0, tiny], [1.0, 1.0, -tiny]], dtype)
    args = (jnp.asarray(t, dtype), jnp.asarray(y, dtype))
    vmapped = jax.vmap(lambda x: jaxlm.least_squares(decay, x, args))(x0)
    driven = jaxlm.least_squares_batch(decay, x0, args, in_axes=None, chunk_size=2)
    for sol in (vmapped, driven):
        assert np.all(np.asarray(sol.success)), [Status(int(s)).name for s in sol.status]
        p = np.asarray(sol.params, np.float64)
        r = np.asarray(decay(p[1], t, y))  # the judge: float64, from scratch
        jac = np.asarray(jax.jacfwd(decay)(jnp.asarray(p[1]), t, y))
        cosines = np.abs(jac.T @ r) / (np.linalg.norm(jac, axis=0) * np.linalg.norm(r))
        assert cosines.max() <= (1e-5 if dtype == "float64" else 3e-2), cosines
        np.testing.assert_allclose(p[1:], p[[0, 0]], rtol=1e-8 if dtype == "float64" else 1e-3, atol=1e-10)
