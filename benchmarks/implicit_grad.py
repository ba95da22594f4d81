"""Cost of a gradient through a batch of fits: implicit differentiation vs unrolling.

A batch of 1-D Gaussian peaks (64 points; amplitude, centre and offset fitted per curve)
shares one width ``s``, passed in ``args``.  The outer loss is a function of the fitted
parameters, and we take ``d loss / d s``:

* ``implicit``: ``jaxlm.least_squares`` under ``vmap`` (``lax.while_loop``, stops at
  convergence) with the implicit-function-theorem derivative: one 3×3 solve per fit.
* ``unrolled``: the same solver's ``init``/``step`` in a ``lax.scan`` of ``max_steps``
  steps, differentiated by reverse-mode autodiff through every step (what one gets
  without implicit differentiation: a while loop cannot be reverse-differentiated).

For each ``max_steps`` it prints the time of one jitted gradient call (best of 5, after
compilation), the peak memory XLA plans for it (``compiled.memory_analysis()``:
temporaries + arguments + outputs) and the relative difference of the two gradients.

    python benchmarks/implicit_grad.py [--batch 256] [--out benchmarks/results/implicit_grad.json]
"""

from __future__ import annotations

import argparse
import json
import pathlib
import time

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import jaxlm  # noqa: E402

SOLVER = jaxlm.LevenbergMarquardt()


def peak(p, x, y, s):
    return p[0] * jnp.exp(-0.5 * ((x - p[1]) / s) ** 2) + p[2] - y


def make_data(batch, seed=0):
    rng = np.random.default_rng(seed)
    x = np.linspace(-4.0, 4.0, 64)
    true = np.stack([rng.uniform(1, 3, batch), rng.uniform(-1, 1, batch), rng.uniform(-0.2, 0.2, batch)], 1)
    y = true[:, :1] * np.exp(-0.5 * ((x - true[:, 1:2]) / 0.9) ** 2) + true[:, 2:]
    y = y + 0.02 * rng.standard_normal(y.shape)
    x0 = np.tile([1.0, 0.0, 0.0], (batch, 1))
    return jnp.asarray(x), jnp.asarray(y), jnp.asarray(x0)


def loss_implicit(s, x, y, x0, max_steps):
    def one(yi, x0i):
        return jaxlm.least_squares(peak, x0i, args=(x, yi, s), max_steps=max_steps, failed_grad="ift").params

    return jnp.sum(jax.vmap(one)(y, x0) ** 2)


def loss_unrolled(s, x, y, x0, max_steps):
    def one(yi, x0i):
        state = SOLVER.init(peak, x0i, x, yi, s)
        state, _ = jax.lax.scan(lambda st, _: (SOLVER.step(peak, st, x, yi, s), None), state, None, max_steps)
        return state.params

    return jnp.sum(jax.vmap(one)(y, x0) ** 2)


def measure(loss, s, x, y, x0, max_steps, repeats=5):
    grad = jax.jit(jax.grad(loss), static_argnums=4)
    compiled = grad.lower(s, x, y, x0, max_steps).compile()
    mem = compiled.memory_analysis()
    peak_bytes = mem.temp_size_in_bytes + mem.argument_size_in_bytes + mem.output_size_in_bytes
    t0 = time.perf_counter()
    g = compiled(s, x, y, x0).block_until_ready()
    first = time.perf_counter() - t0
    best = first
    for _ in range(repeats - 1):
        t0 = time.perf_counter()
        compiled(s, x, y, x0).block_until_ready()
        best = min(best, time.perf_counter() - t0)
    return float(g), best, peak_bytes


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--steps", type=int, nargs="+", default=[10, 30, 100, 300, 1000])
    parser.add_argument("--out", default="benchmarks/results/implicit_grad.json")
    opts = parser.parse_args(argv)
    x, y, x0 = make_data(opts.batch)
    s = jnp.asarray(0.8)
    rows = []
    header = (
        f"{'max_steps':>9} | {'implicit ms':>11} {'implicit MB':>11} | {'unrolled ms':>11} "
        f"{'unrolled MB':>11} | {'time ratio':>10} {'mem ratio':>9} | {'rel diff':>8}"
    )
    lines = [f"d loss / d shared width through {opts.batch} Gaussian fits (float64, 2-core CPU)", header]
    print(lines[0])
    print(header)
    for n in opts.steps:
        gi, ti, mi = measure(loss_implicit, s, x, y, x0, n)
        gu, tu, mu = measure(loss_unrolled, s, x, y, x0, n)
        rel = abs(gi - gu) / abs(gu)
        row = dict(
            max_steps=n,
            implicit_s=ti,
            implicit_bytes=mi,
            unrolled_s=tu,
            unrolled_bytes=mu,
            grad_implicit=gi,
            grad_unrolled=gu,
            rel_diff=rel,
        )
        rows.append(row)
        line = (
            f"{n:>9} | {1e3 * ti:>11.1f} {mi / 2**20:>11.2f} | {1e3 * tu:>11.1f} {mu / 2**20:>11.2f} | "
            f"{tu / ti:>10.1f} {mu / mi:>9.1f} | {rel:>8.1e}"
        )
        lines.append(line)
        print(line, flush=True)
    sols = jax.vmap(lambda yi, x0i: jaxlm.least_squares(peak, x0i, args=(x, yi, s)))(y, x0)
    note = f"steps to converge: median {int(np.median(sols.n_steps))}, max {int(np.max(sols.n_steps))}"
    print(note)
    lines.append(note)
    out = pathlib.Path(opts.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"batch": opts.batch, "rows": rows, "note": note}, indent=1))
    out.with_suffix(".txt").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
