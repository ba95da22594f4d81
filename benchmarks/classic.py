"""Classic problems (Moré, Garbow & Hillstrom 1981) from 1·x0, 10·x0 and 100·x0:
jaxlm with default options against MINPACK (scipy ``least_squares(method="lm")``, exact
JAX Jacobian, scipy's default tolerances), run for run.

A run is solved when ‖r‖² reaches the paper's global minimum f* (relative 1e-6,
absolute 1e-10).  Writes benchmarks/results/classic.json.

    python benchmarks/classic.py [--damping levenberg|more|marquardt|relative] [--restart D|none]
                                 [--no-geodesic]

The peers optimistix and jaxopt, and every damping, run on the same problems in
``benchmarks/damping_study.py`` (its ``mgh`` set).
"""

from __future__ import annotations

import argparse
import json
import pathlib
import time
import warnings

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import scipy.optimize  # noqa: E402

import jaxlm  # noqa: E402
from jaxlm.problems import mgh  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    dampings = ("levenberg", "more", "marquardt", "relative")
    parser.add_argument("--damping", default=None, choices=dampings)
    parser.add_argument("--restart", default=None, choices=(*dampings, "none"))
    parser.add_argument("--no-geodesic", action="store_true")
    parser.add_argument("--out", default="benchmarks/results/classic.json")
    args = parser.parse_args(argv)
    options = {}
    if args.damping:
        options["damping"] = args.damping
    if args.no_geodesic:
        options["geodesic"] = False
    if args.restart:
        options["restart"] = None if args.restart == "none" else args.restart

    rows = []
    t0 = time.perf_counter()
    for problem in mgh.PROBLEMS:
        fun = jax.jit(problem.fun)
        jac = jax.jit(jax.jacfwd(problem.fun))
        for factor, x0 in zip((1, 10, 100), mgh.starts(problem), strict=True):
            sol = jaxlm.least_squares(problem.fun, jnp.asarray(x0), **options)
            ours = 2 * float(sol.cost)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                try:
                    ref = scipy.optimize.least_squares(
                        lambda x: np.asarray(fun(jnp.asarray(x))),  # noqa: B023
                        x0,
                        jac=lambda x: np.asarray(jac(jnp.asarray(x))),  # noqa: B023
                        method="lm",
                    )
                    theirs, their_nfev = 2 * float(ref.cost), int(ref.nfev)
                except Exception as err:  # MINPACK can fail on non-finite values
                    theirs, their_nfev = float("nan"), -1
                    print(f"  scipy raised on {problem.name} x{factor}: {err}")
            rows.append(
                {
                    "problem": problem.name,
                    "n": problem.n,
                    "factor": factor,
                    "jaxlm_f": ours,
                    "jaxlm_steps": int(sol.n_steps),
                    "jaxlm_status": jaxlm.Status(int(sol.status)).name,
                    "jaxlm_solved": mgh.solved(problem, ours),
                    "minpack_f": theirs,
                    "minpack_nfev": their_nfev,
                    "minpack_solved": mgh.solved(problem, theirs),
                }
            )
    elapsed = time.perf_counter() - t0

    print(f"options: {options or 'defaults'}   f = ‖r‖² at the end; * = reaches f*")
    print(
        f"{'problem':22s} {'n':>2s} {'x0':>4s} {'jaxlm f':>13s} {'steps':>5s} {'status':>15s}"
        f" {'MINPACK f':>13s} {'nfev':>5s}"
    )
    for r in rows:
        a = "*" if r["jaxlm_solved"] else " "
        b = "*" if r["minpack_solved"] else " "
        print(
            f"{r['problem']:22s} {r['n']:2d} {r['factor']:4d} {r['jaxlm_f']:12.6g}{a} {r['jaxlm_steps']:5d}"
            f" {r['jaxlm_status']:>15s} {r['minpack_f']:12.6g}{b} {r['minpack_nfev']:5d}"
        )
    ours = sum(r["jaxlm_solved"] for r in rows)
    theirs = sum(r["minpack_solved"] for r in rows)
    only_ours = [
        f"{r['problem']}x{r['factor']}" for r in rows if r["jaxlm_solved"] and not r["minpack_solved"]
    ]
    only_theirs = [
        f"{r['problem']}x{r['factor']}" for r in rows if r["minpack_solved"] and not r["jaxlm_solved"]
    ]
    print(f"\nsolved (global f*): jaxlm {ours}/{len(rows)}, MINPACK {theirs}/{len(rows)}")
    print(f"  only jaxlm:   {', '.join(only_ours) or 'none'}")
    print(f"  only MINPACK: {', '.join(only_theirs) or 'none'}")
    print(f"elapsed {elapsed:.1f} s")
    out = pathlib.Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps({"options": options, "rows": rows, "solved": {"jaxlm": ours, "minpack": theirs}}, indent=1)
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
