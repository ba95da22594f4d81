"""The runnable examples run, small, and reach what they claim."""

from __future__ import annotations

import importlib.util
import pathlib

import jax
import jax.numpy as jnp
import numpy as np

EXAMPLES = pathlib.Path(__file__).resolve().parents[1] / "examples"


def load(name):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_learn_shared_width_with_optax_recovers_the_instrument_width():
    example = load("learn_shared_width")
    with jax.numpy_dtype_promotion("standard"):  # optax's Adam mixes int32 counts and floats
        result = example.main(n_curves=64, iters=120, verbose=False)
    assert result.fits_converged == 1.0
    assert abs(result.width - result.true_width) < 0.03
    # The learned width is where the held-out loss is smallest (checked without gradients)
    x, y, start = example.simulate(64, result.true_width, 0.05, 0)
    outer = jax.jit(example.make_outer_loss(x, y, start))
    at = float(outer(jnp.log(result.width))[0])
    for factor in (0.97, 1.03):
        assert at < float(outer(jnp.log(result.width * factor))[0])
    # and the outer gradient it followed is the finite difference of the re-solved fits
    log_s, h = np.log(1.3), 1e-4
    grad = jax.grad(lambda v: outer(v)[0])(log_s)
    fd = (outer(log_s + h)[0] - outer(log_s - h)[0]) / (2 * h)
    np.testing.assert_allclose(grad, fd, rtol=1e-5)
