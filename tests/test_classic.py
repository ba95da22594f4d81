"""Moré–Garbow–Hillstrom problems from 1, 10 and 100 times the standard start, judged
against MINPACK run for run: wherever MINPACK reaches the global minimum, so does jaxlm."""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.optimize

import jaxlm
from jaxlm.problems import mgh


@pytest.mark.parametrize("problem", mgh.PROBLEMS, ids=lambda p: p.name)
def test_solves_every_run_minpack_solves(problem):
    fun = jax.jit(problem.fun)
    jac = jax.jit(jax.jacfwd(problem.fun))
    for x0 in mgh.starts(problem):
        sol = jaxlm.least_squares(problem.fun, jnp.asarray(x0))
        ours = 2 * float(sol.cost)
        if int(sol.status) == jaxlm.Status.NONFINITE:
            # Jennrich–Sampson from 100·x0: residuals up to 5e173, so ½‖r‖² overflows
            r0 = np.asarray(problem.fun(jnp.asarray(x0)))
            with np.errstate(over="ignore"):
                assert not np.isfinite(0.5 * np.sum(r0 * r0))
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ref = scipy.optimize.least_squares(
                lambda x: np.asarray(fun(jnp.asarray(x))),  # noqa: B023
                x0,
                jac=lambda x: np.asarray(jac(jnp.asarray(x))),  # noqa: B023
                method="lm",
            )
        if mgh.solved(problem, 2 * ref.cost):
            assert mgh.solved(problem, ours), (problem.name, x0, ours, 2 * ref.cost)
        # never a worse local minimum than MINPACK's by more than rounding
        assert ours <= 2 * ref.cost * (1 + 1e-6) + 1e-10, (problem.name, x0, ours, 2 * ref.cost)
