"""The core engine: options, dtypes, batching, isolation of bad members, state shape."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.optimize

import jaxlm
from jaxlm import Status
from jaxlm.problems import mgh
from tests.helpers import PROBLEMS, SOLVER_CONFIGS, Compiles, as_args, config_id


def scipy_solution(problem):
    fun = jax.jit(lambda p: problem.fun(p, *as_args(problem)))
    jac = jax.jit(jax.jacfwd(lambda p: problem.fun(p, *as_args(problem))))
    res = scipy.optimize.least_squares(
        lambda p: np.asarray(fun(p)),
        problem.x0,
        jac=lambda p: np.asarray(jac(p)),
        method="lm",
        ftol=1e-14,
        xtol=1e-14,
        gtol=1e-14,
    )
    return res


@pytest.mark.parametrize("options", SOLVER_CONFIGS, ids=config_id)
@pytest.mark.parametrize("name", ["exp_decay_noisy", "rosenbrock", "gaussian"])
def test_every_option_reaches_scipy_minimum(name, options):
    problem = PROBLEMS[name]
    ref = scipy_solution(problem)
    sol = jaxlm.least_squares(problem.fun, jnp.asarray(problem.x0), as_args(problem), **options)
    assert bool(sol.success), Status(int(sol.status))
    np.testing.assert_allclose(np.asarray(sol.params), ref.x, rtol=1e-7, atol=1e-9)
    assert float(sol.cost) <= ref.cost * (1 + 1e-9) + 1e-20
    if problem.solution is not None:
        np.testing.assert_allclose(np.asarray(sol.params), problem.solution, rtol=1e-7)


def test_float32_stops_at_float32_precision():
    problem = PROBLEMS["exp_decay_noisy"]
    ref = scipy_solution(problem)
    sol = jaxlm.least_squares(
        problem.fun, jnp.asarray(problem.x0, jnp.float32), as_args(problem, jnp.float32)
    )
    assert sol.params.dtype == jnp.float32 and sol.cost.dtype == jnp.float32
    assert bool(sol.success), Status(int(sol.status))
    # float32 precision, found in a handful of steps rather than by running to max_steps
    np.testing.assert_allclose(np.asarray(sol.params), ref.x, rtol=2e-4, atol=2e-4)
    assert int(sol.n_steps) < 50


def test_tolerances_default_from_dtype():
    assert jaxlm.default_tolerance(jnp.float64) == pytest.approx(np.finfo(np.float64).eps ** 0.75)
    assert jaxlm.default_tolerance(jnp.float32) == pytest.approx(np.finfo(np.float32).eps ** 0.75)


@pytest.mark.parametrize("damping", ["more", "marquardt", "relative"])
@pytest.mark.parametrize("linear_solver", ["qr", "cholesky"])
def test_scale_invariance(damping, linear_solver):
    """Fitting c = b / s follows the same path for any positive diagonal s."""
    problem = PROBLEMS["exp_decay_noisy"]
    args = as_args(problem)
    s = jnp.array([1e-4, 1e3, 1e6])

    def scaled(c, *a):
        return problem.fun(c * s, *a)

    base = jaxlm.least_squares(
        problem.fun, jnp.asarray(problem.x0), args, damping=damping, linear_solver=linear_solver
    )
    resc = jaxlm.least_squares(
        scaled, jnp.asarray(problem.x0) / s, args, damping=damping, linear_solver=linear_solver
    )
    assert bool(base.success) and bool(resc.success)
    np.testing.assert_allclose(np.asarray(resc.params * s), np.asarray(base.params), rtol=1e-8)
    assert abs(int(resc.n_steps) - int(base.n_steps)) <= 1
    # the first steps are the same point, mapped back
    solver = jaxlm.LevenbergMarquardt(damping=damping, linear_solver=linear_solver)
    st_a = solver.init(problem.fun, jnp.asarray(problem.x0), *args)
    st_b = solver.init(scaled, jnp.asarray(problem.x0) / s, *args)
    for _ in range(3):
        st_a = solver.step(problem.fun, st_a, *args)
        st_b = solver.step(scaled, st_b, *args)
        np.testing.assert_allclose(np.asarray(st_b.params * s), np.asarray(st_a.params), rtol=1e-9)


def test_levenberg_is_not_scale_invariant():
    """The contrast to the test above: with D = I a rescaling changes the path."""
    problem = PROBLEMS["exp_decay_noisy"]
    args = as_args(problem)
    s = jnp.array([1e-4, 1e3, 1e6])
    solver = jaxlm.LevenbergMarquardt(damping="levenberg")
    st_a = solver.step(problem.fun, solver.init(problem.fun, jnp.asarray(problem.x0), *args), *args)
    scaled = lambda c, *a: problem.fun(c * s, *a)
    st_b = solver.step(scaled, solver.init(scaled, jnp.asarray(problem.x0) / s, *args), *args)
    assert not np.allclose(np.asarray(st_b.params * s), np.asarray(st_a.params), rtol=1e-3)


def _batch(n=6, seed=1):
    rng = np.random.default_rng(seed)
    t = jnp.linspace(0.0, 4.0, 30)
    true = np.stack([rng.uniform(1, 3, n), rng.uniform(0.5, 2, n), rng.uniform(-1, 1, n)], axis=1)
    y = (
        true[:, :1] * np.exp(-true[:, 1:2] * np.asarray(t))
        + true[:, 2:]
        + 0.01 * rng.standard_normal((n, 30))
    )
    x0 = np.tile(np.array([1.0, 1.0, 0.0]), (n, 1))
    return t, jnp.asarray(y), jnp.asarray(x0)


def _decay(p, t, y):
    return p[0] * jnp.exp(-p[1] * t) + p[2] - y


def test_vmap_equals_solo_fits():
    t, y, x0 = _batch()
    batched = jax.vmap(lambda p, yy: jaxlm.least_squares(_decay, p, (t, yy)))(x0, y)
    for i in range(y.shape[0]):
        solo = jaxlm.least_squares(_decay, x0[i], (t, y[i]))
        assert int(batched.status[i]) == int(solo.status)
        np.testing.assert_allclose(np.asarray(batched.params[i]), np.asarray(solo.params), rtol=1e-10)
        assert abs(int(batched.n_steps[i]) - int(solo.n_steps)) <= 1


def test_a_problem_alone_has_its_own_solver_and_the_same_options():
    """``least_squares`` on one concrete problem runs ``solver.alone()``: the same options,
    its own programs (a distinct cache key), and JᵀJ from matrix products, not the
    unrolled column products a batch uses, on the same numbers to rounding."""
    solver = jaxlm.LevenbergMarquardt(damping="relative", max_steps=50, geodesic=False)
    alone = solver.alone()
    names = [f.name for f in dataclasses.fields(solver)]
    assert [getattr(alone, k) for k in names] == [getattr(solver, k) for k in names]
    assert alone != solver and alone.alone() is alone
    assert solver.linalg.batched and not alone.linalg.batched
    jac_t = jnp.asarray(np.random.default_rng(1).standard_normal((4, 50)))
    res = jnp.asarray(np.random.default_rng(2).standard_normal(50))
    a, b = solver.linalg.compress(jac_t, res), alone.linalg.compress(jac_t, res)
    np.testing.assert_allclose(a.matrix, b.matrix, rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(a.vector, b.vector, rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(a.matrix, jac_t @ jac_t.T, rtol=1e-13, atol=1e-13)
    t, y, x0 = _batch(2)
    from jaxlm import _programs

    jaxlm.least_squares(_decay, x0[0], (t, y[0]), solver=solver)
    first_attempt = dataclasses.replace(alone, restart=None)  # it converges: no restart
    assert any(first_attempt in key[1] for key in _programs._cache)


def _solve_whole(solver, fun, x0, args):
    """One problem through the whole program (both attempts in its loop), as
    ``least_squares`` ran it before the restart moved to the host."""
    from jaxlm._least_squares import _solve

    return _solve(solver.alone(), fun, "exact", "nan", x0, args)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
def test_one_problem_runs_the_restart_from_the_host_with_the_whole_programs_answer(dtype):
    """``least_squares`` of one concrete problem runs the first attempt's program alone,
    and the whole program (both attempts) only after a failed first attempt: a decay that
    converges compiles no restart at all; a Rosenbrock start stopped at the step limit
    tries again.  Either way the answer is the whole program's (here bit for bit: status,
    step and evaluation counts, parameters, cost); under ``jax.vmap`` the restart stays
    in the batched program, which agrees."""
    from jaxlm import _programs

    t, y, x0 = _batch(3)
    t, y, x0 = t.astype(dtype), y.astype(dtype), x0.astype(dtype)
    rosen = mgh.BY_NAME["Rosenbrock"].fun
    cases = [
        (_decay, x0[0], (t, y[0]), {}, False),
        (rosen, jnp.asarray([-1.2, 1.0], dtype), (), {"max_steps": 4}, True),
    ]
    for fun, start, args, options, retried in cases:
        solver = jaxlm.LevenbergMarquardt(**options)
        _programs._cache.clear()
        sol = jaxlm.least_squares(fun, start, args, **options)
        assert any(solver.alone() in key[1] for key in _programs._cache) == retried
        assert int(sol.state.attempt) == int(retried)
        ref = _solve_whole(solver, fun, start, args)
        for name in ("status", "n_steps", "n_fev", "params", "cost"):
            np.testing.assert_array_equal(np.asarray(getattr(sol, name)), np.asarray(getattr(ref, name)))
        mapped = jax.vmap(lambda p, f=fun, a=args, o=options: jaxlm.least_squares(f, p, a, **o))(start[None])
        assert int(mapped.status[0]) == int(sol.status) and int(mapped.n_steps[0]) == int(sol.n_steps)
        np.testing.assert_allclose(np.asarray(mapped.params[0]), np.asarray(sol.params), rtol=1e-5)


def test_bad_members_are_isolated_bit_for_bit():
    t, y, x0 = _batch(6)
    y_bad = y.at[1].set(y[1].at[3].set(jnp.nan))  # NaN data
    x0_bad = x0.at[2].set(jnp.array([jnp.inf, 1.0, 0.0]))  # infinite start
    y_bad = y_bad.at[3].set(jnp.zeros(30))  # all-zero data: fine, but a different problem
    x0_bad = x0_bad.at[4].set(jnp.array([0.0, 1.0, 0.0]))  # b1 = 0: zero Jacobian column for b2
    fit = jax.jit(jax.vmap(lambda p, yy: jaxlm.least_squares(_decay, p, (t, yy))))
    good = fit(x0, y)
    bad = fit(x0_bad, y_bad)
    for i in (0, 5):
        for field in ("params", "cost", "status", "n_steps", "n_fev"):
            np.testing.assert_array_equal(
                np.asarray(getattr(bad, field)[i]), np.asarray(getattr(good, field)[i])
            )
    assert int(bad.status[1]) == Status.NONFINITE
    assert int(bad.status[2]) == Status.NONFINITE
    np.testing.assert_array_equal(np.asarray(bad.params[2]), np.asarray(x0_bad[2]))  # input kept
    # all-zero data: a = c = 0 is the minimum and b is then undetermined (its column
    # vanishes as a → 0).  The fit reaches it; it may say so (CONVERGED) or stop with
    # NO_PROGRESS, but it never claims success anywhere else.
    assert int(bad.status[3]) in (
        Status.CONVERGED_FTOL,
        Status.CONVERGED_XTOL,
        Status.CONVERGED_GTOL,
        Status.NO_PROGRESS,
    )
    np.testing.assert_allclose(np.asarray(bad.params[3])[[0, 2]], 0.0, atol=1e-8)
    # the zero column at the start is floored, and the fit still finds the minimum
    assert bool(bad.success[4])
    np.testing.assert_allclose(np.asarray(bad.params[4]), np.asarray(good.params[4]), rtol=1e-6)


def test_singular_system_and_unused_parameter():
    """A parameter the residual ignores gives a zero column everywhere: no NaN, it stays put."""
    t, y, _ = _batch(1)

    def fun(p, t, y):
        return _decay(p[:3], t, y) + 0.0 * p[3]

    sol = jaxlm.least_squares(fun, jnp.array([1.0, 1.0, 0.0, 5.0]), (t, y[0]))
    ref = jaxlm.least_squares(_decay, jnp.array([1.0, 1.0, 0.0]), (t, y[0]))
    assert bool(sol.success)
    assert float(sol.params[3]) == 5.0
    np.testing.assert_allclose(np.asarray(sol.params[:3]), np.asarray(ref.params), rtol=1e-8)


def test_converged_member_is_frozen():
    t, y, x0 = _batch(2)
    solver = jaxlm.LevenbergMarquardt()
    step = jax.jit(jax.vmap(lambda s, yy: solver.step(_decay, s, t, yy)))
    state = jax.vmap(lambda p, yy: solver.init(_decay, p, t, yy))(x0, y)
    # member 0 starts at its solution's neighbourhood and stops early; member 1 far away
    for _ in range(200):
        prev = state
        state = step(state, y)
        done = np.asarray(prev.status) != Status.RUNNING
        for leaf_new, leaf_old in zip(jax.tree.leaves(state), jax.tree.leaves(prev), strict=True):
            np.testing.assert_array_equal(np.asarray(leaf_new)[done], np.asarray(leaf_old)[done])
        if not np.any(np.asarray(state.status) == Status.RUNNING):
            break
    assert np.all(np.asarray(state.status) != Status.RUNNING)


def test_max_steps_status():
    """The limit is per attempt: by default a member stopped by it runs once more."""
    problem = PROBLEMS["rosenbrock"]
    sol = jaxlm.least_squares(problem.fun, jnp.asarray(problem.x0), max_steps=3, restart=None)
    assert int(sol.status) == Status.MAX_STEPS and int(sol.n_steps) == 3 and not bool(sol.success)
    sol = jaxlm.least_squares(problem.fun, jnp.asarray(problem.x0), max_steps=3)
    assert int(sol.status) == Status.MAX_STEPS and int(sol.n_steps) == 6 and not bool(sol.success)


def test_nonfinite_model_value_at_start():
    sol = jaxlm.least_squares(lambda p: jnp.log(p) - 1.0, jnp.array([-1.0, 2.0]))
    assert int(sol.status) == Status.NONFINITE


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_a_start_whose_jacobian_is_nan_or_whose_normal_matrix_overflows_is_nonfinite(dtype):
    """r finite at the start but J not (√(b²) at b = 0 has the derivative 0/0), or J
    finite but JᵀJ overflowing (k moves the relative residual by ~1e20 in float32, ~1e160
    in float64): NONFINITE alone, under vmap and through the driver, in a batch large
    enough that XLA's CPU reductions to a maximum drop NaNs (so max|J| could not tell),
    and every other member's fit is the one it has without the bad members, bit for bit."""
    big = 1e20 if dtype == np.float32 else 1e160
    t = np.linspace(0.5, 1.5, 64).astype(dtype)

    def fun(p, t, y, s):  # p = (a, b, k); s scales k's effect
        return p[0] * jnp.exp(-s * (p[2] - 1)) * t + jnp.sqrt(p[1] * p[1]) - y

    n = 4096
    rng = np.random.default_rng(0)
    y = (rng.uniform(1, 2, (n, 1)) * t + 0.5 + 0.01 * rng.standard_normal((n, 64))).astype(dtype)
    x0 = np.tile(np.array([1.0, 0.4, 1.0], dtype), (n, 1))
    scale = np.ones(n, dtype)
    nan_j, huge = np.arange(3, n, 97), np.arange(5, n, 89)
    bad_x0, bad_scale = x0.copy(), scale.copy()
    bad_x0[nan_j, 1] = 0.0
    bad_scale[huge] = big
    bad = np.union1d(nan_j, huge)
    ok = np.setdiff1d(np.arange(n), bad)

    vmapped = jax.jit(jax.vmap(lambda p, yy, s: jaxlm.least_squares(fun, p, (t, yy, s))))
    mixed = vmapped(bad_x0, y, bad_scale)
    driven = jaxlm.least_squares_batch(fun, bad_x0, (t, y, bad_scale), in_axes=(None, 0, 0))
    for sol in (mixed, driven):
        assert np.all(np.asarray(sol.status)[bad] == Status.NONFINITE), np.unique(np.asarray(sol.status)[bad])
        np.testing.assert_array_equal(np.asarray(sol.params)[bad], bad_x0[bad])  # the start, kept
    for i in (nan_j[0], huge[0]):
        alone = jaxlm.least_squares(fun, bad_x0[i], (t, y[i], bad_scale[i]))
        assert int(alone.status) == Status.NONFINITE
    clean = vmapped(x0, y, scale)
    assert np.all(np.asarray(clean.success)[ok])
    for field in ("params", "cost", "status", "n_steps"):
        got, want = np.asarray(getattr(mixed, field)), np.asarray(getattr(clean, field))
        np.testing.assert_array_equal(got[ok], want[ok])


def test_trial_points_outside_the_domain_are_rejected_not_fatal():
    # log(p) is NaN for p < 0: a full Gauss–Newton step from near 0 overshoots into it
    sol = jaxlm.least_squares(lambda p: jnp.log(p) - jnp.array([3.0, -3.0]), jnp.array([1e-3, 5.0]))
    assert bool(sol.success)
    np.testing.assert_allclose(np.asarray(sol.params), np.exp([3.0, -3.0]), rtol=1e-10)


def test_pytree_params_and_residuals():
    t, y, _ = _batch(1)

    def fun(p, t, y):
        r = p["amp"] * jnp.exp(-p["rate"] * t) + p["offset"][0] - y
        return {"main": r, "prior": 1e-8 * (p["offset"] - 0.0)}

    x0 = {"amp": jnp.array(1.0), "rate": jnp.array(1.0), "offset": jnp.array([0.0])}
    sol = jaxlm.least_squares(fun, x0, (t, y[0]))
    flat = jaxlm.least_squares(_decay, jnp.array([1.0, 1.0, 0.0]), (t, y[0]))
    assert jax.tree.structure(sol.params) == jax.tree.structure(x0)
    np.testing.assert_allclose(float(sol.params["rate"]), float(flat.params[1]), rtol=1e-6)


@pytest.mark.parametrize("jac", ["fwd", "rev", "user"])
def test_jacobian_choices_agree(jac):
    problem = PROBLEMS["gaussian"]
    args = as_args(problem)
    if jac == "user":

        def jac(p, x, y):  # analytic Jacobian of the Gaussian residual
            e = jnp.exp(-0.5 * ((x - p[1]) / p[2]) ** 2)
            u = (x - p[1]) / p[2]
            return jnp.stack([e, p[0] * e * u / p[2], p[0] * e * u**2 / p[2]], axis=1)

    sol = jaxlm.least_squares(problem.fun, jnp.asarray(problem.x0), args, jac=jac)
    np.testing.assert_allclose(np.asarray(sol.params), problem.solution, rtol=1e-9)


def test_init_and_step_states_have_identical_structure():
    problem = PROBLEMS["exp_decay_noisy"]
    args = as_args(problem)
    for dtype in (jnp.float32, jnp.float64):
        solver = jaxlm.LevenbergMarquardt()
        s0 = solver.init(problem.fun, jnp.asarray(problem.x0, dtype), *[a.astype(dtype) for a in args])
        s1 = solver.step(problem.fun, s0, *[a.astype(dtype) for a in args])
        assert jax.tree.structure(s0) == jax.tree.structure(s1)
        for a, b in zip(jax.tree.leaves(s0), jax.tree.leaves(s1), strict=True):
            assert a.shape == b.shape and a.dtype == b.dtype
            assert a.weak_type == b.weak_type
        assert s0.params.dtype == dtype and s0.cost.dtype == dtype and s0.status.dtype == jnp.int32


def test_no_recompilation_on_second_call():
    t, y, x0 = _batch(3)
    jaxlm.least_squares(_decay, x0[0], (t, y[0]))
    with Compiles() as second:
        jaxlm.least_squares(_decay, x0[1], (t, y[1]))
    assert not second.lines, second.lines


def test_works_under_jit():
    t, y, x0 = _batch(2)
    f = jax.jit(lambda p, yy: jaxlm.least_squares(_decay, p, (t, yy)).params)
    np.testing.assert_allclose(
        np.asarray(f(x0[0], y[0])),
        np.asarray(jaxlm.least_squares(_decay, x0[0], (t, y[0])).params),
        rtol=1e-12,
    )


@pytest.mark.parametrize(
    "kwargs, exc, word",
    [
        (dict(damping="identity"), ValueError, "damping"),
        (dict(update="gsl"), ValueError, "update"),
        (dict(linear_solver="lu"), ValueError, "linear_solver"),
        (dict(jac="central"), ValueError, "jac"),
        (dict(ftol=-1.0), ValueError, "ftol"),
        (dict(max_steps=-2), ValueError, "max_steps"),
        (dict(tau=0.0), ValueError, "tau"),
        (dict(restart="yes"), ValueError, "restart"),
        (dict(restart=True), ValueError, "restart"),
    ],
)
def test_bad_options_raise_naming_the_argument(kwargs, exc, word):
    with pytest.raises(exc, match=word):
        jaxlm.least_squares(_decay, jnp.ones(3), (jnp.ones(4), jnp.ones(4)), **kwargs)


def test_bad_inputs_raise_naming_the_argument():
    with pytest.raises(TypeError, match="fun"):
        jaxlm.least_squares("not a function", jnp.ones(3))
    with pytest.raises(TypeError, match="args"):
        jaxlm.least_squares(_decay, jnp.ones(3), [jnp.ones(4), jnp.ones(4)])
    with pytest.raises(ValueError, match="x0"):
        jaxlm.least_squares(_decay, jnp.ones(0), (jnp.ones(4), jnp.ones(4)))
    with pytest.raises(TypeError, match="x0"):
        jaxlm.least_squares(_decay, np.array(["a", "b"]), (jnp.ones(4), jnp.ones(4)))
    with pytest.raises(ValueError, match="residual"):
        jaxlm.least_squares(lambda p: jnp.zeros(0), jnp.ones(2))


def test_integer_start_is_promoted_and_input_untouched():
    x0 = np.array([1, 1, 0])
    t, y, _ = _batch(1)
    sol = jaxlm.least_squares(_decay, x0, (t, y[0]))
    assert jnp.issubdtype(sol.params.dtype, jnp.floating)
    np.testing.assert_array_equal(x0, [1, 1, 0])
    assert bool(sol.success)


# --- damping="relative" and restart= (the damping study's candidates) ----------------
def _mgh_run(name, factor, dtype=jnp.float64, **options):
    problem = mgh.BY_NAME[name]
    x0 = jnp.asarray(mgh.starts(problem, (factor,))[0], dtype)
    sol = jaxlm.least_squares(problem.fun, x0, **options)
    r = np.asarray(problem.fun(sol.params), np.float64)
    return problem, sol, float(r @ r)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
def test_relative_damping_is_not_stuck_at_the_curvature_of_a_far_start(dtype):
    """Chebyquad (n = 8) from 10·x0: the start's curvature is ~10¹² times the solution's
    in the largest parameters.  Moré's running maximum keeps D there for ever and
    crawls to the step limit; identity damping in the parameters' natural units (their
    start's size) does not remember it and reaches the paper's f*."""
    problem, more, f_more = _mgh_run("Chebyquad8", 10.0, dtype, damping="more", restart=None)
    assert Status(int(more.status)) == Status.MAX_STEPS and f_more > 1e3
    problem, rel, f_rel = _mgh_run("Chebyquad8", 10.0, dtype, damping="relative", restart=None)
    assert bool(rel.success)
    rtol = 1e-6 if dtype == jnp.float64 else 1e-3
    assert mgh.solved(problem, f_rel, rtol=rtol), f_rel


def test_restart_runs_failed_members_again_with_the_other_damping():
    """MGH Osborne 1 from 100·x0: relative damping stops with NO_PROGRESS at RSS 0.0245;
    with ``restart="more"`` the member runs again from x₀ with Moré's scaling and
    reaches f*.  Counts are totals over both attempts; a batch, where the other member
    succeeds on its first attempt, gives each member the answer of ``jax.vmap`` (the
    batched program; a call on one problem alone compiles an unbatched one, whose
    rounding may differ, and on this 280-step path the step count with it)."""
    problem, first, f_first = _mgh_run("Osborne1", 100.0, damping="relative", restart=None)
    assert Status(int(first.status)) == Status.NO_PROGRESS and not mgh.solved(problem, f_first)
    _, again, f_again = _mgh_run("Osborne1", 100.0, damping="relative", restart="more")
    assert bool(again.success) and mgh.solved(problem, f_again)
    _, second, _ = _mgh_run("Osborne1", 100.0, damping="more", restart=None)
    assert int(again.n_steps) == int(first.n_steps) + int(second.n_steps)
    np.testing.assert_allclose(np.asarray(again.params), np.asarray(second.params), rtol=1e-9)

    x0 = jnp.asarray(np.stack([mgh.starts(problem, (100.0,))[0], problem.x0]))
    batch = jaxlm.least_squares_batch(problem.fun, x0, damping="relative", restart="more")
    mapped = jax.vmap(lambda p: jaxlm.least_squares(problem.fun, p, damping="relative", restart="more"))(x0)
    assert int(mapped.status[0]) == int(again.status)
    assert [int(s) for s in batch.status] == [int(s) for s in mapped.status]
    assert [int(s) for s in batch.n_steps] == [int(s) for s in mapped.n_steps]
    np.testing.assert_allclose(np.asarray(batch.params), np.asarray(mapped.params), rtol=1e-7)
    np.testing.assert_allclose(np.asarray(batch.params[0]), np.asarray(again.params), rtol=1e-7)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
def test_restart_keeps_the_better_attempt_with_its_status(dtype):
    """Rosenbrock with max_steps = 4: both attempts stop at the step limit; the result is
    the lower of their two costs, with its parameters, and says MAX_STEPS."""
    x0 = jnp.asarray([-1.2, 1.0], dtype)
    fun = mgh.BY_NAME["Rosenbrock"].fun
    runs = {
        d: jaxlm.least_squares(fun, x0, damping=d, restart=None, max_steps=4) for d in ("more", "levenberg")
    }
    for first, second in (("more", "levenberg"), ("levenberg", "more")):
        sol = jaxlm.least_squares(fun, x0, damping=first, restart=second, max_steps=4)
        best = min(runs.values(), key=lambda s: float(s.cost))
        assert Status(int(sol.status)) == Status.MAX_STEPS and int(sol.n_steps) == 8
        assert float(sol.cost) == pytest.approx(float(best.cost), rel=1e-5)
        np.testing.assert_allclose(np.asarray(sol.params), np.asarray(best.params), rtol=1e-5)


def test_an_objective_minimises_its_own_cost_poisson_likelihood():
    """``jaxlm.Objective``: a Poisson likelihood written by hand (step from the
    Fisher-weighted residual, acceptance on the deviance) reaches the maximum-likelihood
    point scipy's minimize finds, and the fit layer's Poisson estimator agrees."""
    t = np.linspace(0, 4, 40)
    counts = np.random.default_rng(5).poisson(30 * np.exp(-0.7 * t) + 2).astype(float)

    def mean(p):
        return p[0] * jnp.exp(-p[1] * t) + p[2]

    def objective(p):
        mu = mean(p)
        deviance_half = jnp.sum(mu - counts + jnp.where(counts > 0, counts * jnp.log(counts / mu), 0))
        return jaxlm.Objective(
            residual=(mu - counts) * jax.lax.stop_gradient(1 / jnp.sqrt(mu)), cost=deviance_half
        )

    tight = dict(ftol=1e-15, xtol=1e-15, gtol=1e-12)  # BFGS below stops at a gradient of 1e-10
    sol = jaxlm.least_squares(objective, jnp.array([20.0, 1.0, 1.0]), **tight)
    assert sol.success
    ref = scipy.optimize.minimize(
        lambda p: float(objective(jnp.asarray(p)).cost),
        [20.0, 1.0, 1.0],
        jac=lambda p: np.asarray(jax.grad(lambda q: objective(q).cost)(jnp.asarray(p))),
        method="BFGS",
        options={"gtol": 1e-10},
    )
    np.testing.assert_allclose(sol.params, ref.x, rtol=1e-6)
    via_fit = jaxlm.fit(
        lambda x, a, k, c: a * jnp.exp(-k * x) + c, t, counts, [20.0, 1.0, 1.0], estimator="poisson", **tight
    )
    # a stop on the cost resolves a flat direction to ~√eps of its scale: here 1.5e-7 in c
    np.testing.assert_allclose(sol.params, via_fit.params, rtol=1e-6)
