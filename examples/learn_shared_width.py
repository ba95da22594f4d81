"""A fit as a layer: learn an instrument width shared by many curves, with optax.

Every curve is a peak ``a·exp(−(x−c)²/2s²) + b`` with its own amplitude, centre and
offset, but one width ``s`` set by the instrument and unknown.  The inner problem fits
``(a, c, b)`` of every curve by Levenberg–Marquardt on the even-numbered points, for
the current ``s``; the outer problem learns ``s`` by gradient descent (Adam) on the
error of those fits at the held-out odd-numbered points.  The outer gradient passes
through the inner fits by implicit differentiation (``jaxlm.least_squares`` under
``jax.vmap``), so it costs one 3×3 solve per curve, however many LM steps each fit took.

    python examples/learn_shared_width.py [--curves 256] [--iters 150]
"""

from __future__ import annotations

import argparse
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

import jaxlm


def peak(p, x, s):
    return p[0] * jnp.exp(-0.5 * ((x - p[1]) / s) ** 2) + p[2]


def train_residual(p, x, y, weight, s):
    """Residual of one curve on its training points (weight 0 hides held-out points)."""
    return weight * (peak(p, x, s) - y)


class Result(NamedTuple):
    width: float
    true_width: float
    history: np.ndarray  # (iters, 2): width and held-out loss per iteration
    fits_converged: float  # fraction of inner fits converged at the end


def simulate(n_curves, true_width, noise, seed):
    rng = np.random.default_rng(seed)
    x = np.linspace(-5.0, 5.0, 80)
    amp = rng.uniform(1.0, 3.0, (n_curves, 1))
    centre = rng.uniform(-1.5, 1.5, (n_curves, 1))
    offset = rng.uniform(-0.3, 0.3, (n_curves, 1))
    y = amp * np.exp(-0.5 * ((x - centre) / true_width) ** 2) + offset
    y = y + noise * rng.standard_normal(y.shape)
    # start: the highest point and its position, the median as the offset
    start = np.stack([y.max(1), x[y.argmax(1)], np.median(y, 1)], 1)
    return jnp.asarray(x), jnp.asarray(y), jnp.asarray(start)


def make_outer_loss(x, y, start):
    train = jnp.asarray(np.arange(x.shape[0]) % 2 == 0, x.dtype)
    test = 1 - train

    def outer_loss(log_s):
        s = jnp.exp(log_s)
        # failed_grad="zero": a fit that fails drops out of the shared gradient (not NaN)
        fit = jax.vmap(
            lambda yi, pi: jaxlm.least_squares(train_residual, pi, args=(x, yi, train, s), failed_grad="zero")
        )
        sols = fit(y, start)
        pred = jax.vmap(lambda p: peak(p, x, s))(sols.params)
        held_out = jnp.sum(test[None, :] * (pred - y) ** 2) / jnp.sum(test) / y.shape[0]
        return held_out, jnp.mean(sols.success.astype(x.dtype))

    return outer_loss


def main(n_curves=256, iters=150, true_width=0.9, start_width=2.0, noise=0.05, seed=0, verbose=True):
    x, y, start = simulate(n_curves, true_width, noise, seed)
    outer_loss = make_outer_loss(x, y, start)
    optimiser = optax.adam(0.05)
    log_s = jnp.log(jnp.asarray(start_width, x.dtype))
    opt_state = optimiser.init(log_s)

    @jax.jit
    def update(log_s, opt_state):
        (loss, converged), grad = jax.value_and_grad(outer_loss, has_aux=True)(log_s)
        updates, opt_state = optimiser.update(grad, opt_state)
        return optax.apply_updates(log_s, updates), opt_state, loss, converged

    history = []
    converged = jnp.asarray(0.0)
    for i in range(iters):
        log_s, opt_state, loss, converged = update(log_s, opt_state)
        history.append((float(jnp.exp(log_s)), float(loss)))
        if verbose and (i % 25 == 0 or i == iters - 1):
            print(f"iter {i:4d}  width {history[-1][0]:.4f}  held-out MSE {history[-1][1]:.3e}")
    result = Result(float(jnp.exp(log_s)), true_width, np.asarray(history), float(converged))
    if verbose:
        print(
            f"learned width {result.width:.4f} (true {true_width}); "
            f"{100 * result.fits_converged:.0f}% of the {n_curves} inner fits converged"
        )
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--curves", type=int, default=256)
    parser.add_argument("--iters", type=int, default=150)
    args = parser.parse_args()
    jax.config.update("jax_enable_x64", True)
    main(args.curves, args.iters)
