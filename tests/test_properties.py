"""Property-based tests on random well-posed problems (hypothesis)."""

import jax
import jax.numpy as jnp
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

import jaxlm
from jaxlm import Status

T = jnp.linspace(0.0, 3.0, 25)


def decay(p, t, y):
    return p[0] * jnp.exp(-p[1] * t) + p[2] - y


params = st.tuples(
    st.floats(0.5, 3.0),
    st.floats(0.3, 3.0),
    st.floats(-1.0, 1.0),  # truth
    st.floats(0.5, 1.5),
    st.floats(0.5, 1.5),
    st.floats(-0.5, 0.5),  # start = truth * f (+ off)
    st.integers(0, 2**31 - 1),
)
configs = st.sampled_from(
    [
        dict(damping=d, update=u, geodesic=g)
        for d in ("levenberg", "marquardt", "more")
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
