"""Property-based tests on random well-posed problems (hypothesis)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

import jaxlm
from jaxlm import Status

T = jnp.linspace(0.0, 3.0, 25)


def decay(p, t, y):
    return p[0] * jnp.exp(-p[1] * t) + p[2] - y


# An offset within ~1e-24 of 0 but not 0 (its column's scale is ~5), started there, is a
# start far below its scale: test_a_start_far_below_its_scale_is_an_honest_failure records
# what it does (hypothesis drew 1.9e-45 once the filter stood at 1e-100, and a start of
# 0 + 6.3e-33).  The strategies keep the truth and the start at 0 or above eps.
_offset = st.floats(-1.0, 1.0).filter(lambda v: v == 0.0 or abs(v) > 1e-16)
params = st.tuples(
    st.floats(0.5, 3.0),
    st.floats(0.3, 3.0),
    _offset,  # truth
    st.floats(0.5, 1.5),
    st.floats(0.5, 1.5),
    st.floats(-0.5, 0.5),  # start = truth * f (+ off)
    st.integers(0, 2**31 - 1),
).filter(lambda d: d[2] + d[5] == 0.0 or abs(d[2] + d[5]) > 1e-16)  # the offset's start, likewise
configs = st.sampled_from(
    [
        dict(damping=d, update=u, geodesic=g)
        for d in ("levenberg", "marquardt", "more", "relative")
        for u in ("nielsen", "marquardt")
        for g in (False, True)
    ]
)


def _problem(draw):
    a, b, c, fa, fb, off, seed = draw
    rng = np.random.default_rng(seed)
    y = a * np.exp(-b * np.asarray(T)) + c + 0.02 * rng.standard_normal(T.shape)
    x0 = jnp.array([a * fa, b * fb, c + off])
    return x0, jnp.asarray(y)


@settings(max_examples=30, deadline=None)
@given(params, configs)
def test_accepted_steps_never_increase_cost(draw, options):
    x0, y = _problem(draw)
    solver = jaxlm.LevenbergMarquardt(**options)
    step = _stepper(solver)
    state = solver.init(decay, x0, T, y)
    costs = [float(state.cost)]
    for _ in range(60):
        state = step(state, y)
        costs.append(float(state.cost))
        if int(state.status) != Status.RUNNING:
            break
    assert np.all(np.diff(costs) <= 0.0), costs


_STEPPERS = {}


def _stepper(solver):
    if solver not in _STEPPERS:
        _STEPPERS[solver] = jax.jit(lambda s, y: solver.step(decay, s, T, y))
    return _STEPPERS[solver]


@settings(max_examples=30, deadline=None)
@given(params)
def test_converged_point_satisfies_the_gradient_test(draw):
    x0, y = _problem(draw)
    sol = jaxlm.least_squares(decay, x0, (T, y))
    assert bool(sol.success), Status(int(sol.status))
    r = decay(sol.params, T, y)
    jac = jax.jacfwd(decay)(sol.params, T, y)
    g = jac.T @ r
    cosines = jnp.abs(g) / (jnp.linalg.norm(jac, axis=0) * jnp.linalg.norm(r))
    assert float(jnp.max(cosines)) <= 1e-5
    # and it is the least-squares minimum: no nearby point is better
    for direction in np.eye(3):
        for h in (1e-4, -1e-4):
            bumped = sol.params + h * jnp.asarray(direction) * jnp.maximum(jnp.abs(sol.params), 1.0)
            assert float(0.5 * jnp.sum(decay(bumped, T, y) ** 2)) >= float(sol.cost)


# ------------------------------------------------------------------ issue 12: at every scale
scales = st.tuples(
    st.integers(-100, 100),  # data (and amplitude, offset) scaled by 2^k
    st.integers(-60, 60),  # the rate's unit: the solver sees q = b·2^j
    st.sampled_from(["float32", "float64"]),
    st.sampled_from(["more", "marquardt", "relative"]),
)


def _scaled(p, t, y, unit):
    return decay(p * unit, t, y)


# the first attempt ends NO_PROGRESS and the restart's ties it to a few ulps: the better of
# the two was chosen by a rounded comparison, which the data's scale could flip
_NEAR_TIE = (1.75, 2.5, 2.220446049250313e-16, 1.0, 1.5, 0.0, 1)


@settings(max_examples=25, deadline=None)
@given(params, scales)
@example(_NEAR_TIE, (-2, 0, "float32", "more"))
def test_success_means_stationary_and_units_do_not_change_the_path(draw, scale):
    """Random well-posed problems in random units (data ×2^k, a parameter ×2^j):
    success ⇒ the gradient test holds at the returned point, and the path is the
    unscaled one bit for bit (`more`, `marquardt`, `relative`: scale invariant; powers
    of two: exact), so the step count, status and parameters are identical."""
    k, j, dtype, damping = scale
    if dtype == "float32":  # keep every Jacobian entry a normal float32 number
        k, j = max(-50, min(50, k)), max(-50, min(50, j))
    x0, y = _problem(draw)
    s = 2.0**k
    unit = jnp.asarray([s, 2.0**j, s], dtype)  # amplitude and offset carry the data's unit
    # the same function (hence the same compiled program) with unit 1: different programs
    # may round differently, which says nothing about units
    ones = jnp.ones(3, dtype)
    args = (T.astype(dtype), y.astype(dtype), ones)
    base = jaxlm.least_squares(_scaled, x0.astype(dtype), args, damping=damping)
    yy = (y * s).astype(dtype)
    q0 = (x0.astype(dtype) * jnp.asarray([s, 1.0, s], dtype)) / unit
    sol = jaxlm.least_squares(_scaled, q0, (T.astype(dtype), yy, unit), damping=damping)
    assert int(sol.status) == int(base.status) and int(sol.n_steps) == int(base.n_steps)
    back = np.asarray(sol.params * unit, np.float64) / np.array([s, 1.0, s])
    np.testing.assert_array_equal(back, np.asarray(base.params, np.float64))
    if bool(sol.success):
        p = jnp.asarray(base.params, jnp.float64)
        t64, y64 = T, y.astype(dtype).astype(jnp.float64)
        r = decay(p, t64, y64)
        jac = jax.jacfwd(decay)(p, t64, y64)
        cosines = jnp.abs(jac.T @ r) / (jnp.linalg.norm(jac, axis=0) * jnp.linalg.norm(r))
        assert float(jnp.max(cosines)) <= (1e-5 if dtype == "float64" else 3e-2)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_the_better_attempt_does_not_depend_on_the_data_scale(dtype):
    """The near tie hypothesis found (float32): data ×2^k for k in −8…8 give the same
    status, step count and parameters, bit for bit, alone, under ``jax.vmap`` and in
    the batch driver (which runs the second attempt as a separate pass).  Each path
    against itself: the three compile different programs, which may round differently."""
    x0, y = _problem(_NEAR_TIE)
    t, x0, y = T.astype(dtype), x0.astype(dtype), y.astype(dtype)
    ks = np.arange(-8, 9)
    s = jnp.asarray(2.0**ks, dtype)
    ys = y[None, :] * s[:, None]
    starts = x0[None, :] * jnp.stack([s, jnp.ones_like(s), s], axis=1)
    unit = np.stack([s, np.ones_like(s), s], axis=1).astype(np.float64)

    def same_path(status, n_steps, params):
        base = list(ks).index(0)
        assert (np.asarray(status) == int(status[base])).all(), status
        assert (np.asarray(n_steps) == int(n_steps[base])).all(), n_steps
        back = np.asarray(params, np.float64) / unit
        np.testing.assert_array_equal(back, np.broadcast_to(back[base], back.shape))

    solo = [jaxlm.least_squares(decay, starts[i], (t, ys[i])) for i in range(len(ks))]
    same_path([s.status for s in solo], [s.n_steps for s in solo], np.stack([s.params for s in solo]))
    mapped = jax.vmap(lambda p, yy: jaxlm.least_squares(decay, p, (t, yy)))(starts, ys)
    batch = jaxlm.least_squares_batch(decay, starts, (t, ys), in_axes=(None, 0))
    for sol in (mapped, batch):
        same_path(sol.status, sol.n_steps, sol.params)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_the_attempts_costs_are_compared_exactly(dtype):
    """``_restart.lower_caller_cost`` orders ½‖r‖² in the caller's units (C/ρ²) as exact
    rational arithmetic does, for costs a few ulps apart under residual factors ρ
    from 2^-60 to 2^60, negative, zero and non-finite costs included."""
    from fractions import Fraction

    from jaxlm import _restart, _units

    rng = np.random.default_rng(0)
    n = 4000
    base = rng.uniform(0.5, 4.0, n).astype(dtype)
    ulps = rng.integers(-3, 4, n)
    near = base.copy()
    for i, u in enumerate(ulps):
        for _ in range(abs(u)):
            near[i] = np.nextafter(near[i], np.inf if u > 0 else -np.inf)
    e_a, e_b = rng.integers(-60, 61, n), rng.integers(-60, 61, n)
    e_b = np.where(rng.random(n) < 0.5, e_a, e_b)  # half of them under the same factor
    # the same caller cost written under two factors, then nudged by a few ulps
    # an Objective's cost may be negative: a third of the pairs, and a few of mixed sign
    sign_a = np.where(rng.random(n) < 0.33, -1.0, 1.0).astype(dtype)
    sign_b = np.where(rng.random(n) < 0.05, -sign_a, sign_a)
    cost_a = sign_a * base * dtype(2.0) ** (2 * e_a).astype(dtype)
    cost_b = sign_b * near * dtype(2.0) ** (2 * e_b).astype(dtype)
    cost_a[:5], cost_b[:5] = [0.0, 1.0, np.nan, 0.0, -1.0], [1.0, np.inf, np.inf, -1.0, -np.inf]

    def state(cost, e):
        units = _units.Units(jnp.asarray(2.0**e, dtype), jnp.ones((n, 1), dtype), jnp.ones((n, 1), dtype))
        return jaxlm.LMState(*([None] * 11))._replace(cost=jnp.asarray(cost), units=units)

    got = np.asarray(_restart.lower_caller_cost(state(cost_a, e_a), state(cost_b, e_b)))

    def caller(c, e):
        return Fraction(float(c)) / Fraction(2) ** int(2 * e) if np.isfinite(c) else None

    for i in range(n):
        a, b = caller(cost_a[i], e_a[i]), caller(cost_b[i], e_b[i])
        want = a is not None and (b is None or a < b)
        assert got[i] == want, (i, cost_a[i], e_a[i], cost_b[i], e_b[i])


@pytest.mark.parametrize("start", [1e-30, 1.948363991282851e-45, 1.8320291212855806e-102])
def test_a_start_far_below_its_scale_is_an_honest_failure(start):
    """Known limitation (hypothesis found it): an offset started between ~1e-24 and the
    underflow threshold takes that magnitude as its unit, its normalised column lies far
    below the damping's floor, and the fit cannot move it to ~0.01.  It must *fail*
    (never claim success); a start small enough for its column to underflow (4e-277) is
    treated as 0 and solved (tests/test_traps.py); 1e-23 and above are solved."""
    x0, y = _problem((1.0, 1.0, start, 1.0, 1.0, 0.0, 0))
    sol = jaxlm.least_squares(decay, x0, (T, y))
    assert not bool(sol.success)
    assert int(sol.status) == Status.NO_PROGRESS
