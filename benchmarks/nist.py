"""NIST StRD accuracy: jaxlm (each damping) next to scipy's MINPACK on the same 54 runs.

Per problem × start: min LRE over the parameters / LRE of the RSS, steps and status for
jaxlm with damping = levenberg, marquardt, more, each without and with geodesic
acceleration (all other options at their defaults),
and for ``scipy.optimize.least_squares(method="lm")`` with the exact JAX Jacobian and
ftol = xtol = gtol = 1e-15 (the reference setting of the data's README).  A run passes
when both LREs are ≥ 4 (Lanczos1 on its parameters only: float64 cannot evaluate its
certified RSS of 1.4e-25 to 4 digits, see ``jaxlm.problems.nist.passes``).

    python benchmarks/nist.py [--linear-solver cholesky|qr] [--update nielsen|marquardt]
                              [--out benchmarks/results/nist.json]
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
import scipy.optimize  # noqa: E402

import jaxlm  # noqa: E402
from jaxlm.problems import nist  # noqa: E402

DAMPINGS = ("levenberg", "marquardt", "more")


def run_jaxlm(problem, start, **options):
    x, y = jnp.asarray(problem.x), jnp.asarray(problem.y)
    sol = jaxlm.least_squares(problem.residual, jnp.asarray(problem.start(start)), args=(x, y), **options)
    p_lre, rss_lre = nist.score(problem, sol.params)
    return {
        "lre_params": p_lre,
        "lre_rss": rss_lre,
        "steps": int(sol.n_steps),
        "nfev": int(sol.n_fev),
        "status": jaxlm.Status(int(sol.status)).name,
        "pass": nist.passes(problem, p_lre, rss_lre),
    }


def run_scipy(problem, start):
    x, y = jnp.asarray(problem.x), jnp.asarray(problem.y)
    fun = jax.jit(lambda b: problem.residual(b, x, y))
    jac = jax.jit(jax.jacfwd(lambda b: problem.residual(b, x, y)))
    res = scipy.optimize.least_squares(
        lambda b: np.asarray(fun(b)),
        problem.start(start),
        jac=lambda b: np.asarray(jac(b)),
        method="lm",
        ftol=1e-15,
        xtol=1e-15,
        gtol=1e-15,
        max_nfev=100000,
    )
    p_lre, rss_lre = nist.score(problem, res.x)
    return {
        "lre_params": p_lre,
        "lre_rss": rss_lre,
        "steps": int(res.nfev),
        "status": int(res.status),
        "pass": nist.passes(problem, p_lre, rss_lre),
    }


CONFIGS = [(d, g) for g in (False, True) for d in DAMPINGS]


def label(config):
    damping, geodesic = config
    return f"{damping}{'+geo' if geodesic else ''}"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--linear-solver", default="cholesky", choices=("qr", "cholesky"))
    parser.add_argument("--update", default="nielsen", choices=("nielsen", "marquardt"))
    parser.add_argument("--out", default="benchmarks/results/nist.json")
    args = parser.parse_args(argv)
    options = {"linear_solver": args.linear_solver, "update": args.update}
    labels = [label(c) for c in CONFIGS]

    rows = []
    t0 = time.perf_counter()
    for name in nist.names():
        problem = nist.load(name)
        for start in (1, 2):
            row = {"problem": name, "start": start, "scipy": run_scipy(problem, start)}
            for config in CONFIGS:
                row[label(config)] = run_jaxlm(
                    problem, start, damping=config[0], geodesic=config[1], **options
                )
            rows.append(row)
            print(".", end="", flush=True)
    elapsed = time.perf_counter() - t0
    print()

    def cell(r):
        mark = "" if r["pass"] else "!"
        return f"{r['lre_params']:4.1f}/{r['lre_rss']:4.1f} {r['steps']:4d}{mark}"

    columns = [*labels, "scipy"]
    print(f"options: {options}; cell = minLRE(params)/LRE(RSS) steps, '!' = fails LRE >= 4")
    print(f"{'problem':9s} S " + "".join(f"{c:>17s}" for c in columns))
    for row in rows:
        cells = "".join(f"{cell(row[c]):>17s}" for c in columns)
        print(f"{row['problem']:9s} {row['start']} {cells}")
    totals = {c: sum(r[c]["pass"] for r in rows) for c in columns}
    print(f"\npasses out of {len(rows)} (LRE >= 4 on every parameter and the RSS; Lanczos1 on params):")
    for c in columns:
        failed = [f"{r['problem']}/S{r['start']}" for r in rows if not r[c]["pass"]]
        steps = [r[c]["steps"] for r in rows]
        what = "fev" if c == "scipy" else "steps"
        print(
            f"  {c:15s} {totals[c]:2d}/{len(rows)}  median {what} {np.median(steps):5.0f}   "
            f"failed: {', '.join(failed) or 'none'}"
        )
    default = label((jaxlm.LevenbergMarquardt().damping, jaxlm.LevenbergMarquardt().geodesic))
    best = max(labels, key=lambda c: (totals[c], -np.median([r[c]["steps"] for r in rows])))
    print(
        f"\ndefault: {default} ({totals[default]}/{len(rows)}). Best on this run: {best} "
        f"({totals[best]}/{len(rows)}). The default is chosen on the broader damping study "
        "(benchmarks/damping_study.py), where scale invariance outweighs NIST's MGH10/S1."
    )
    print(f"elapsed {elapsed:.1f} s")
    out = pathlib.Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"options": options, "rows": rows, "passes": totals}, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
