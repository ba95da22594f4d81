"""Small dense solves under a batch: LAPACK (``jnp.linalg``) vs jaxlm's unrolled code.

For n = 2…16 parameters and a batch of ``--batch`` members, times

* the damped solve ``(A + μD) h = −g``: ``jnp.linalg.cholesky`` + ``cho_solve`` under
  ``vmap`` (batch-major, what ``vmap`` produces), the same on a batch-minor copy
  (``(n, n, B)``, solved by the unrolled code with the batch as the vector axis), and
  jaxlm's unrolled Cholesky (``jaxlm._linalg._cholesky._unrolled_cholesky_solve``) under ``vmap``;
* the normal-equation products ``JᵀJ, Jᵀr`` for m = 64 points: a batched matmul of J
  (m, n) vs jaxlm's unrolled column products on Jᵀ (n, m) (``Cholesky.compress``).

    python benchmarks/small_solve.py [--batch 100000] [--dtype float32]

Writes ``benchmarks/results/small_solve.{json,txt}``.
"""

from __future__ import annotations

import argparse
import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
from _timing import timed

from jaxlm._linalg import _cholesky

RESULTS = pathlib.Path(__file__).parent / "results"


def best(fn, *args):
    jitted = jax.jit(fn)
    return timed(lambda: jitted(*args), repeats=5)[2]


def lapack(a, b):
    chol = jnp.linalg.cholesky(a)
    return jax.scipy.linalg.cho_solve((chol, True), b)


def unrolled(a, b):
    return _cholesky._unrolled_cholesky_solve(a, b)[0]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=100_000)
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    parser.add_argument("--m", type=int, default=64)
    args = parser.parse_args()
    if args.dtype == "float64":
        jax.config.update("jax_enable_x64", True)
    rng = np.random.default_rng(0)
    rows = []
    for n in (2, 3, 4, 5, 6, 8, 10, 12, 16):
        jac = rng.standard_normal((args.batch, args.m, n)).astype(args.dtype)
        res = rng.standard_normal((args.batch, args.m)).astype(args.dtype)
        a = np.einsum("bmi,bmj->bij", jac, jac) + np.eye(n, dtype=args.dtype)
        b = rng.standard_normal((args.batch, n)).astype(args.dtype)
        a_j, b_j = jnp.asarray(a), jnp.asarray(b)
        a_minor, b_minor = jnp.asarray(np.moveaxis(a, 0, -1).copy()), jnp.asarray(b.T.copy())
        t_lapack = best(jax.vmap(lapack), a_j, b_j)
        t_unrolled = best(jax.vmap(unrolled), a_j, b_j)
        t_minor = best(unrolled, a_minor, b_minor)  # scalars become (B,) vectors directly
        ref = np.linalg.solve(a.astype(float), b.astype(float)[..., None])[..., 0]
        err = float(np.max(np.abs(np.asarray(jax.vmap(unrolled)(a_j, b_j)) - ref)) / np.max(np.abs(ref)))
        jac_j, res_j = jnp.asarray(jac), jnp.asarray(res)
        jac_t = jnp.asarray(np.swapaxes(jac, 1, 2).copy())
        t_matmul = best(jax.vmap(lambda j, r: (j.T @ j, j.T @ r)), jac_j, res_j)
        t_products = best(
            jax.vmap(lambda jt, r: (_cholesky._unrolled_gram(jt), _cholesky._unrolled_products(jt, r))),
            jac_t,
            res_j,
        )
        row = dict(
            n=n,
            solve_lapack_ms=1e3 * t_lapack,
            solve_unrolled_ms=1e3 * t_unrolled,
            solve_unrolled_batch_minor_ms=1e3 * t_minor,
            unrolled_rel_error=err,
            gram_matmul_ms=1e3 * t_matmul,
            gram_unrolled_ms=1e3 * t_products,
        )
        rows.append(row)
        print(
            f"n={n:2d}  solve: LAPACK {row['solve_lapack_ms']:8.2f} ms"
            f"  unrolled {row['solve_unrolled_ms']:7.2f} ms"
            f"  (batch-minor {row['solve_unrolled_batch_minor_ms']:7.2f} ms, rel. error {err:.1e})"
            f"  |  JᵀJ, Jᵀr (m={args.m}): matmul {row['gram_matmul_ms']:7.2f} ms  unrolled "
            f"{row['gram_unrolled_ms']:7.2f} ms",
            flush=True,
        )
    header = f"jax {jax.__version__}, {jax.devices()[0].platform}, batch {args.batch:,}, {args.dtype}"
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "small_solve.json").write_text(json.dumps({"machine": header, "rows": rows}, indent=1))
    lines = [header, "| n | LAPACK solve | unrolled | unrolled, batch-minor | JᵀJ matmul | JᵀJ unrolled |"]
    lines.append("|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        lines.append(
            f"| {r['n']} | {r['solve_lapack_ms']:.1f} ms | {r['solve_unrolled_ms']:.1f} ms | "
            f"{r['solve_unrolled_batch_minor_ms']:.1f} ms | {r['gram_matmul_ms']:.1f} ms | "
            f"{r['gram_unrolled_ms']:.1f} ms |"
        )
    (RESULTS / "small_solve.txt").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
