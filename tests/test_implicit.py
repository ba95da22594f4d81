"""Implicit differentiation through ``least_squares``: against central finite differences
of the re-solved problem, against unrolled autodiff, under jit and vmap, for pytrees, and
the documented behaviour of members that did not converge."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxlm

T = jnp.linspace(0.0, 3.0, 40)
Y = 2.0 * jnp.exp(-1.3 * T) + 0.4 * jnp.exp(-3.0 * T) + 0.03 * jnp.sin(7.0 * T)  # not a model member
X0 = jnp.array([1.0, 1.0, 0.1])
# Finite differences of a re-solved problem are only as good as the solves: the default
# ftol leaves ~1e-8 in the parameters, which a step of 1e-4 would turn into 1e-4 noise.
TIGHT = dict(ftol=0.0, xtol=1e-15, gtol=1e-15)
H = 1e-4


def decay(p, t, y, w):
    """Two exponentials, the second rate ``w`` a hyperparameter (in ``args``)."""
    return p[0] * jnp.exp(-p[1] * t) + p[2] * jnp.exp(-w * t) - y


def solve(y, w, x0=X0, **options):
    return jaxlm.least_squares(decay, x0, args=(T, y, w), **{**TIGHT, **options})


def polished(y, w):
    """The solution of ``solve(y, w)`` refined by two Newton steps on ∇C = 0.

    LM stops where rounding in the cost hides further progress, which on this
    ill-conditioned problem leaves ~1e-10 of noise in the parameters: ~1e-6 in a finite
    difference with h = 1e-4.  Newton on the gradient pins the root to ~1e-14, so finite
    differences of polished solutions are a clean reference.
    """

    def cost(p):
        r = decay(p, T, y, w)
        return 0.5 * (r @ r)

    p = solve(y, w).params
    for _ in range(2):
        p = p - jnp.linalg.solve(jax.hessian(cost)(p), jax.grad(cost)(p))
    return p


def central_difference(f, x, direction, h):
    return (f(x + h * direction) - f(x - h * direction)) / (2 * h)


# Two different compiled programs (jit vs eager, vmap vs single, jacfwd vs jacrev) round
# differently and stop at slightly different final iterates: they agree to ~1e-9.
SAME = 1e-7


def assert_rel(actual, expected, rtol):
    actual, expected = np.asarray(actual), np.asarray(expected)
    scale = np.max(np.abs(expected))
    np.testing.assert_allclose(actual, expected, rtol=0, atol=rtol * scale)


@pytest.mark.parametrize("wrt", ["ydata", "hyperparameter"])
def test_jvp_and_vjp_match_finite_differences_of_the_resolved_problem(wrt):
    rng = np.random.default_rng(1)
    if wrt == "ydata":
        base, direction, h = Y, jnp.asarray(rng.standard_normal(Y.shape)), H

        def params(v):
            return solve(v, 3.0).params

        def reference(v):
            return polished(v, 3.0)
    else:
        base, direction, h = jnp.asarray(3.0), jnp.asarray(1.0), H

        def params(v):
            return solve(Y, v).params

        def reference(v):
            return polished(Y, v)

    sol = solve(Y, 3.0)
    assert bool(sol.success)
    fd = central_difference(reference, base, direction, h)
    _, jvp = jax.jvp(params, (base,), (direction,))
    assert_rel(jvp, fd, 1e-6)
    # reverse mode: <v, J d> computed from the VJP equals the JVP
    cot = jnp.asarray(rng.standard_normal(3))
    (vjp,) = jax.vjp(params, base)[1](cot)
    np.testing.assert_allclose(jnp.vdot(vjp, direction), jnp.vdot(cot, jvp), rtol=1e-10)


def test_gradient_of_the_cost_matches_finite_differences():
    def cost(w):
        return solve(Y, w).cost

    g = jax.grad(cost)(3.0)
    fd = central_difference(cost, 3.0, 1.0, H)
    assert_rel(g, fd, 1e-6)


def test_jacfwd_equals_jacrev_and_is_jit_compatible():
    def params(y):
        return solve(y, 3.0).params

    forward = jax.jacfwd(params)(Y)
    reverse = jax.jacrev(params)(Y)
    jitted = jax.jit(jax.jacrev(params))(Y)
    assert forward.shape == (3, Y.shape[0])
    assert_rel(forward, reverse, SAME)
    assert_rel(jitted, reverse, SAME)


def test_per_member_gradients_under_vmap_match_single_fits():
    rates = jnp.array([2.2, 3.0, 4.5, 6.0])

    def loss(w):
        return jnp.sum(solve(Y, w).params ** 2)

    batched = jax.jit(jax.vmap(jax.grad(loss)))(rates)
    for i, w in enumerate(rates):
        fd = central_difference(lambda v: jnp.sum(polished(Y, v) ** 2), w, 1.0, H)
        assert_rel(batched[i], fd, 1e-6)
        assert_rel(batched[i], jax.grad(loss)(w), SAME)


def test_gradient_with_respect_to_the_start_is_zero():
    g = jax.grad(lambda x0: jnp.sum(solve(Y, 3.0, x0=x0).params))(X0)
    np.testing.assert_array_equal(g, np.zeros(3))


def test_pytree_parameters_and_data():
    def fun(p, data):
        t, y = data["t"], data["y"]
        return p["amp"] * jnp.exp(-p["rate"] * t) + p["offset"] - y

    x0 = {"amp": jnp.asarray(1.0), "rate": jnp.asarray(1.0), "offset": jnp.zeros(())}
    y0 = Y

    def amp(y):
        return jaxlm.least_squares(fun, x0, args=({"t": T, "y": y},)).params["amp"]

    direction = jnp.asarray(np.random.default_rng(2).standard_normal(Y.shape))
    g = jax.grad(amp)(y0)
    fd = central_difference(amp, y0, direction, H)
    assert_rel(jnp.vdot(g, direction), fd, 1e-6)


@pytest.mark.parametrize("hessian", ["exact", "gauss_newton"])
def test_gauss_newton_hessian_is_exact_for_zero_residual_problems(hessian):
    y_exact = 2.0 * jnp.exp(-1.3 * T) + 0.4 * jnp.exp(-3.0 * T)  # the model reproduces it

    def params(y):
        return solve(y, 3.0, implicit_hessian=hessian).params

    direction = jnp.asarray(np.random.default_rng(3).standard_normal(T.shape))
    _, jvp = jax.jvp(params, (y_exact,), (direction,))
    assert_rel(jvp, central_difference(lambda y: polished(y, 3.0), y_exact, direction, H), 1e-6)


def test_gauss_newton_hessian_differs_when_residuals_are_large():
    """On a noisy problem the dropped Σ rᵢ∇²rᵢ terms matter: the exact option is needed."""
    noisy = Y + 0.2 * jnp.cos(11.0 * T)

    def params(y, hessian):
        return solve(y, 3.0, implicit_hessian=hessian).params

    direction = jnp.ones_like(T)
    exact = jax.jvp(lambda y: params(y, "exact"), (noisy,), (direction,))[1]
    gn = jax.jvp(lambda y: params(y, "gauss_newton"), (noisy,), (direction,))[1]
    fd = central_difference(lambda y: polished(y, 3.0), noisy, direction, H)
    assert_rel(exact, fd, 1e-6)
    assert np.max(np.abs(gn - fd)) > 1e-4 * np.max(np.abs(fd))


def _unrolled(y, w, n_steps):
    """The same solver stepped by hand in a lax.scan: autodiff through every iteration."""
    solver = jaxlm.LevenbergMarquardt()
    state = solver.init(decay, X0, T, y, w)
    state, _ = jax.lax.scan(lambda s, _: (solver.step(decay, s, T, y, w), None), state, None, n_steps)
    return state


def test_agrees_with_unrolled_autodiff_where_the_iteration_converges():
    state = _unrolled(Y, 3.0, 60)
    assert bool(jaxlm.is_success(state.status))
    implicit = jax.jacrev(lambda y, w: solve(y, w).params, argnums=(0, 1))(Y, 3.0)
    unrolled = jax.jacrev(lambda y, w: _unrolled(y, w, 60).params, argnums=(0, 1))(Y, 3.0)
    for a, b in zip(implicit, unrolled, strict=True):
        assert_rel(a, b, 1e-6)


def _batch_with_a_failed_member(failed=True):
    return jnp.stack([Y, Y.at[3].set(jnp.nan) if failed else 0.9 * Y, 1.1 * Y])


def _member_grads(mode, failed_grad, failed=True):
    ys = _batch_with_a_failed_member(failed)

    def amp(y, w):
        return solve(y, w, failed_grad=failed_grad).params[0]

    if mode == "forward":
        return jax.vmap(lambda y: jax.jvp(lambda w: amp(y, w), (3.0,), (1.0,))[1])(ys)
    return jax.vmap(lambda y: jax.grad(amp, argnums=1)(y, 3.0))(ys)


@pytest.mark.parametrize("failed_grad", ["nan", "zero"])
@pytest.mark.parametrize("mode", ["forward", "reverse"])
def test_failed_member_gets_the_documented_value_and_leaves_others_bit_for_bit(mode, failed_grad):
    sols = jax.vmap(lambda y: solve(y, 3.0))(_batch_with_a_failed_member())
    np.testing.assert_array_equal(np.asarray(sols.success), [True, False, True])
    grads = np.asarray(_member_grads(mode, failed_grad))
    clean = np.asarray(_member_grads(mode, failed_grad, failed=False))  # same program, all fine
    if failed_grad == "nan":
        assert np.isnan(grads[1])
    else:
        assert grads[1] == 0.0
    np.testing.assert_array_equal(grads[[0, 2]], clean[[0, 2]])
    assert np.all(np.isfinite(clean))


@pytest.mark.parametrize("mode", ["forward", "reverse"])
def test_failed_member_with_zero_option_drops_out_of_a_shared_gradient(mode):
    ys = _batch_with_a_failed_member()

    def total(w, failed_grad):
        sols = jax.vmap(lambda y: solve(y, w, failed_grad=failed_grad))(ys)
        return jnp.sum(jnp.where(sols.success, sols.params[:, 0], 0.0))

    if mode == "forward":
        g = jax.jvp(lambda w: total(w, "zero"), (3.0,), (1.0,))[1]
    else:
        g = jax.grad(total)(3.0, "zero")
    expected = sum(jax.grad(lambda w, y=y: solve(y, w).params[0])(3.0) for y in (ys[0], ys[2]))
    assert_rel(g, expected, SAME)
    assert np.isnan(jax.grad(total)(3.0, "nan"))


def test_ift_option_differentiates_a_member_stopped_by_max_steps():
    sol = solve(Y, 3.0, max_steps=3)
    assert int(sol.status) == jaxlm.Status.MAX_STEPS
    nan = jax.grad(lambda w: solve(Y, w, max_steps=3).params[0])(3.0)
    ift = jax.grad(lambda w: solve(Y, w, max_steps=3, failed_grad="ift").params[0])(3.0)
    assert np.isnan(nan) and np.isfinite(ift)


def test_bad_differentiation_options_are_rejected_by_name():
    with pytest.raises(ValueError, match="implicit_hessian"):
        solve(Y, 3.0, implicit_hessian="bfgs")
    with pytest.raises(ValueError, match="failed_grad"):
        solve(Y, 3.0, failed_grad="ignore")


# ------------------------------------------------------------------ issue 12: gradients that lied
def test_closed_over_values_get_their_true_derivative():
    """θ closed over by ``fun`` (not in ``args``) used to be a constant: grad 0.0, and
    jax.jacfwd raised.  ``fun`` is closure-converted; the derivative equals central
    differences of the re-solved problem, in every mode and under jit."""

    def solved(theta):
        fun = lambda p, t, y: decay(p, t, y, theta)  # noqa: E731
        return jaxlm.least_squares(fun, X0, args=(T, Y), **TIGHT).params

    fd = central_difference(solved, 3.0, 1.0, H)
    assert np.max(np.abs(np.asarray(fd))) > 1e-2  # a derivative that is not zero
    for jacobian in (jax.jacfwd(solved), jax.jacrev(solved), jax.jit(jax.jacrev(solved))):
        assert_rel(jacobian(3.0), fd, 1e-6)


def test_closed_over_values_do_not_recompile():
    """Closure conversion keeps one compiled program per function and shapes."""
    from tests.helpers import Compiles

    def fun(p, t, y):
        return decay(p, t, y, 3.0)

    jaxlm.least_squares(fun, X0, args=(T, Y))
    with Compiles() as c:
        jaxlm.least_squares(fun, X0, args=(T, Y))
    assert not c.lines, c.lines


@pytest.mark.parametrize("wrt", ["ydata", "sigma"])
def test_fixed_parameters_get_derivative_zero_and_the_rest_their_true_one(wrt):
    """jax.grad through fit(..., fixed=...) used to be NaN for every parameter although
    success was True."""
    x = jnp.linspace(0.0, 3.0, 30)
    y = 2.0 * jnp.exp(-1.3 * x) + 0.5 + 0.01 * jnp.sin(7 * x)
    sigma = 0.1 + 0.01 * x
    fixed = jnp.array([False, False, True])

    def params(v):
        yy, ss = (v, sigma) if wrt == "ydata" else (y, v)
        res = jaxlm.fit(
            lambda x, a, b, c: a * jnp.exp(-b * x) + c,
            x, yy, p0=jnp.array([1.0, 1.0, 0.5]), sigma=ss, fixed=fixed, **TIGHT,
        )  # fmt: skip
        return res.params

    def polished_free(v):
        """The fit's free parameters (a, b), refined by Newton on ∇C = 0 (see
        ``polished``: finite differences of unpolished fits carry ~1e-5 of noise)."""
        yy, ss = (v, sigma) if wrt == "ydata" else (y, v)

        def cost(ab):
            r = (ab[0] * jnp.exp(-ab[1] * x) + 0.5 - yy) / ss
            return 0.5 * (r @ r)

        ab = params(v)[:2]
        for _ in range(2):
            ab = ab - jnp.linalg.solve(jax.hessian(cost)(ab), jax.grad(cost)(ab))
        return ab

    v0 = y if wrt == "ydata" else sigma
    direction = jnp.cos(3 * x)
    jvp = jax.jvp(params, (v0,), (direction,))[1]
    vjp_row = jax.grad(lambda v: params(v)[1])(v0) @ direction
    fd = central_difference(polished_free, v0, direction, 1e-5)
    assert np.all(np.isfinite(np.asarray(jvp)))
    assert float(jvp[2]) == 0.0  # the fixed parameter does not move
    assert_rel(jvp[:2], fd, 1e-7)  # central differences: O(h²) truncation
    assert_rel(vjp_row, fd[1], 1e-7)


def test_rank_deficient_fit_differentiates_on_the_identifiable_part():
    """A residual that sees only a + b: the Hessian is singular.  The derivative is the
    minimum-norm one: the identifiable a + b gets its true derivative, a − b none."""

    def fun(p, t, y):
        return (p[0] + p[1]) * t - y

    t = jnp.linspace(0.0, 1.0, 10)

    def solved(y):
        return jaxlm.least_squares(fun, jnp.array([1.0, 0.5]), args=(t, y), **TIGHT).params

    y = 3.0 * t + 0.01 * jnp.sin(9 * t)
    direction = jnp.ones_like(t)
    dp = jax.jvp(solved, (y,), (direction,))[1]
    # d(a + b)/dy·1 = Σ t / Σ t², split evenly by the minimum-norm solution
    exact = float(jnp.sum(t) / jnp.sum(t * t))
    np.testing.assert_allclose(np.asarray(dp), [exact / 2, exact / 2], rtol=1e-10)
    g = jax.grad(lambda y: jnp.sum(solved(y)))(y)
    np.testing.assert_allclose(float(g @ direction), exact, rtol=1e-10)


def test_float32_gradients_match_float64_finite_differences():
    """The implicit derivative in float32 agrees with float64 central differences to
    float32 precision."""
    t32, y32 = T.astype(jnp.float32), Y.astype(jnp.float32)

    def solved32(w):
        return jaxlm.least_squares(decay, X0.astype(jnp.float32), args=(t32, y32, w)).params

    g32 = jax.jacfwd(solved32)(jnp.float32(3.0))
    assert g32.dtype == jnp.float32
    fd = central_difference(lambda w: polished(Y, w), 3.0, 1.0, H)
    assert_rel(g32.astype(jnp.float64), fd, 2e-2)


def test_custom_vjp_residual_is_solved_under_the_default_options():
    """A jax.custom_vjp inside the residual (no forward mode) used to raise
    NotImplementedError under the default geodesic acceleration."""
    from tests.traps import TRAPS

    trap = TRAPS["custom_vjp"]
    sol = jaxlm.least_squares(trap.fun, jnp.asarray(trap.x0), trap.args)
    assert bool(sol.success)
    np.testing.assert_allclose(np.asarray(sol.params), [1.3, -1.0], rtol=1e-8)
