"""The fit layer's covariance under a batch: jaxlm's LAPACK-free Jacobi SVD against the
same formula on ``jnp.linalg.svd`` (LAPACK's gesdd, what jaxlm used before).

For n = 2, 4, 8, 12 parameters, m = 64 points and a batch of ``--batch`` Jacobians with
columns in different units, times ``vmap(covariance)`` both ways (best of 3, compiled)
and reports the largest difference between the two, relative to √(Σᵢᵢ Σⱼⱼ).

    python benchmarks/covariance.py [--batch 100000]

Writes ``benchmarks/results/covariance.{json,txt}``.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import platform

import jax
import jax.numpy as jnp
import numpy as np
from _timing import timed

from jaxlm._fitting import _covariance

RESULTS = pathlib.Path(__file__).parent / "results"


def lapack_covariance(jac, fixed):
    """The previous implementation: the same equilibration and rank rule, gesdd's SVD."""
    m, n = jac.shape
    eps = jnp.finfo(jac.dtype).eps
    norms = jnp.sqrt(jnp.sum(jac * jac, axis=0))
    zero = norms == 0
    scale = jnp.where(fixed | zero, 1, 1 / jnp.where(zero, 1, norms))
    j_eq = jnp.concatenate(
        [jnp.where(fixed[None, :], 0, jac * scale[None, :]), jnp.diag(fixed.astype(jac.dtype))], axis=0
    )
    _, s, vt = jnp.linalg.svd(j_eq, full_matrices=False)
    singular = s[-1] <= eps * max(m, n) * s[0]
    s_safe = jnp.where(singular, 1, s)
    cov = (vt.T / s_safe[None, :] ** 2) @ vt * scale[:, None] * scale[None, :]
    cov = jnp.where(singular | ~jnp.all(jnp.isfinite(cov)), jnp.inf, cov)
    return jnp.where(fixed[:, None] | fixed[None, :], 0, cov)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=100_000)
    args = parser.parse_args()
    jax.config.update("jax_enable_x64", True)
    rng = np.random.default_rng(0)
    rows = []
    for dtype in (np.float32, np.float64):
        for n in (2, 4, 8, 12):
            units = np.logspace(-3, 3, n)
            jac = jnp.asarray((rng.standard_normal((args.batch, 64, n)) * units).astype(dtype))
            fixed = jnp.zeros(n, bool)
            outs, times = {}, {}
            for name, fn in (("jacobi", _covariance.covariance), ("lapack", lapack_covariance)):
                batched = jax.jit(jax.vmap(fn, in_axes=(0, None)))
                call = lambda batched=batched, jac=jac, fixed=fixed: batched(jac, fixed)  # noqa: E731
                outs[name], _, times[name] = timed(call)
            ref = np.asarray(outs["lapack"], np.float64)
            sd = np.sqrt(np.diagonal(ref, axis1=1, axis2=2))
            diff = np.max(
                np.abs(np.asarray(outs["jacobi"], np.float64) - ref) / (sd[:, :, None] * sd[:, None, :])
            )
            rows.append(
                {
                    "dtype": np.dtype(dtype).name,
                    "n": n,
                    "jacobi_s": times["jacobi"],
                    "lapack_s": times["lapack"],
                    "speedup": times["lapack"] / times["jacobi"],
                    "max_diff": float(diff),
                }
            )
    header = (
        f"{platform.machine()}, {jax.devices()[0].platform}, jax {jax.__version__}, batch {args.batch}, m 64"
    )
    lines = [
        f"covariance of {args.batch:,} Jacobians (64 points): jaxlm (Jacobi) vs jnp.linalg.svd — {header}",
        "",
        "| dtype | n | jaxlm Jacobi | LAPACK gesdd | LAPACK / jaxlm | max difference (in σᵢσⱼ) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['dtype']} | {r['n']} | {r['jacobi_s']:.3f} s | {r['lapack_s']:.3f} s | "
            f"{r['speedup']:.2f}× | {r['max_diff']:.1e} |"
        )
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "covariance.json").write_text(json.dumps({"machine": header, "rows": rows}, indent=1))
    (RESULTS / "covariance.txt").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
