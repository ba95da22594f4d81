"""The throughput suite: jaxlm vs a scipy loop, optimistix and jaxopt, in one run.

Problems (``--problems``):

* ``gauss1d``       1-D Gaussian + offset, 64 points, 4 parameters;
* ``gpufit5``       Gpufit's benchmark: 2-D Gaussian + offset on 5×5 pixels, 5 parameters;
* ``gpufit5-10it``  the same with Gpufit's settings: tolerance 1e-4, at most 10 iterations;
* ``gauss2d15``     2-D Gaussian on 15×15 pixels, 5 parameters;
* ``decay``         exponential decay + offset, 100 points, 3 parameters.

Each in float32 and float64, at 10³–10⁶ fits.  Data: random true parameters, Poisson
noise on the images and Gaussian noise on the curves; every method starts from the true
parameters perturbed by ±10 % (as Gpufit's benchmark).  Each row gives fits/s (best of
``--repeats`` calls after a compiling one), the ratio of jaxlm to each peer measured in
this run, the share of fits whose final cost is at least as good as the peer's (relative
slack √eps of the dtype), the first-call time (with compilation), XLA's planned memory of
the largest program (arguments + outputs + temporaries), and for jaxlm the ratio of
executed to needed member-steps (1 = no straggler waste).

jaxlm runs ``least_squares_batch`` with ``damping="more"``, no geodesic acceleration and
its default tolerances (eps^¾ of the dtype); 10⁶ fits stream in chunks of 2·10⁵.  Two more
jaxlm columns time what a user calls with no option at all: ``least_squares_batch`` with
its defaults (geodesic acceleration on) and ``jaxlm.fit`` with its defaults (the same
model as ``f(x, *p)``, the same starts, pcov and χ² included), the latter as a ratio to
optimistix with the share of fits whose final cost is at least as good.  The
peers run under ``jit(vmap(...))``: optimistix ``LevenbergMarquardt(rtol, atol)`` and
jaxopt ``LevenbergMarquardt(tol, xtol, gtol)`` with the same eps^¾ tolerances (1e-4 and
10 steps for ``gpufit5-10it``), scipy ``least_squares(method="lm")`` in a loop in float64.
Peers that are slow run on the first ``--peer-max`` (optimistix, jaxopt) or
``--scipy-max`` (scipy) fits of the row and their rate is per fit.

    python benchmarks/suite.py                       # the full table (~30 min on 2 cores)
    python benchmarks/suite.py --quick               # 10³ and 10⁴ fits only
    python benchmarks/suite.py --sizes 1000000 --problems gpufit5 --dtypes float32

Results: ``benchmarks/results/suite.json`` and ``suite.md`` (the README's table).
"""

from __future__ import annotations

import argparse
import json
import pathlib
import platform
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from _timing import timed

import jaxlm
from jaxlm import _batch

try:
    import optimistix as optx
except ImportError:  # pragma: no cover
    optx = None
try:
    import jaxopt
except ImportError:  # pragma: no cover
    jaxopt = None
try:
    import scipy.optimize
except ImportError:  # pragma: no cover
    scipy = None

RESULTS = pathlib.Path(__file__).parent / "results"


# --------------------------------------------------------------------------- problems
def _grid(side):
    yy, xx = np.mgrid[0:side, 0:side]
    return np.stack([xx.ravel(), yy.ravel()]).astype(float)


def gauss2d(p, x, y):
    a, cx, cy, w, b = p[0], p[1], p[2], p[3], p[4]
    return a * jnp.exp(-0.5 * ((x[0] - cx) ** 2 + (x[1] - cy) ** 2) / (w * w)) + b - y


def gauss1d(p, x, y):
    return p[0] * jnp.exp(-0.5 * ((x - p[1]) / p[2]) ** 2) + p[3] - y


def decay(p, x, y):
    return p[0] * jnp.exp(-p[1] * x) + p[2] - y


def _truth(rng, n, ranges):
    return np.stack([rng.uniform(lo, hi, n) for lo, hi in ranges], 1)


def make(problem, n, seed=0):
    """(residual, x, y (n, m), p0 (n, k)) in float64."""
    rng = np.random.default_rng(seed)
    if problem.startswith("gpufit5") or problem == "gauss2d15":
        side = 5 if problem.startswith("gpufit5") else 15
        c = (side - 1) / 2
        true = _truth(rng, n, [(400, 600), (c - 0.4, c + 0.4), (c - 0.4, c + 0.4), (0.9, 1.1), (8, 12)])
        if side == 15:
            true[:, 3] *= 2
        x = _grid(side)
        clean = np.asarray(jax.jit(jax.vmap(lambda p: gauss2d(p, jnp.asarray(x), 0.0)))(true))
        y = rng.poisson(clean).astype(float)
        fun = gauss2d
    elif problem == "gauss1d":
        true = _truth(rng, n, [(1, 3), (-1, 1), (0.5, 1.5), (0, 0.5)])
        x = np.linspace(-5, 5, 64)
        y = np.asarray(jax.vmap(lambda p: gauss1d(p, jnp.asarray(x), 0.0))(true))
        y = y + 0.05 * rng.standard_normal(y.shape)
        fun = gauss1d
    elif problem == "decay":
        true = _truth(rng, n, [(1, 3), (0.5, 2), (0, 0.5)])
        x = np.linspace(0, 5, 100)
        y = np.asarray(jax.vmap(lambda p: decay(p, jnp.asarray(x), 0.0))(true))
        y = y + 0.02 * rng.standard_normal(y.shape)
        fun = decay
    else:
        raise ValueError(problem)
    p0 = true * (1 + 0.1 * rng.uniform(-1, 1, true.shape))
    return fun, x, y, p0


def settings(problem, dtype):
    """(ftol/xtol/gtol for jaxlm, max_steps, optimistix rtol=atol, jaxopt tol)."""
    if problem == "gpufit5-10it":
        return 1e-4, 10, 1e-4, 1e-4
    tol = jaxlm.default_tolerance(dtype)
    return tol, 200, tol, tol


# --------------------------------------------------------------------------- methods
def jaxlm_options(tol, max_steps):
    """jaxlm's solver options in every benchmark row (also ``benchmarks/gpu.py``)."""
    return dict(damping="more", geodesic=False, ftol=tol, xtol=tol, gtol=tol, max_steps=max_steps)


def run_jaxlm(fun, x, y, p0, tol, max_steps, chunk):
    solver = jaxlm_options(tol, max_steps)
    sol = jaxlm.least_squares_batch(fun, p0, (x, y), in_axes=(None, 0), chunk_size=chunk, **solver)
    return np.asarray(sol.cost), np.asarray(sol.status)


def run_jaxlm_defaults(fun, x, y, p0, chunk):
    """``least_squares_batch`` as a user calls it: no solver option."""
    sol = jaxlm.least_squares_batch(fun, p0, (x, y), in_axes=(None, 0), chunk_size=chunk)
    return np.asarray(sol.cost), np.asarray(sol.status)


# each residual as a model f(x, *p) for jaxlm.fit (module-level: one compilation per shape)
MODELS = {
    gauss1d: lambda x, *p: gauss1d(jnp.stack(p), x, 0.0),
    gauss2d: lambda x, *p: gauss2d(jnp.stack(p), x, 0.0),
    decay: lambda x, *p: decay(jnp.stack(p), x, 0.0),
}


def run_fit(fun, x, y, p0, chunk):
    """``jaxlm.fit`` as a user calls it: the model, the data, the starts, nothing else."""
    res = jaxlm.fit(MODELS[fun], x, y, p0, chunk_size=chunk)
    return np.asarray(res.cost), np.asarray(res.status)


def jaxlm_stats(fun, x, y, p0, tol, max_steps):
    lm = jaxlm.LevenbergMarquardt(**jaxlm_options(tol, max_steps))
    state, stats = _batch.run(lm, fun, jnp.asarray(p0), (jnp.asarray(x), jnp.asarray(y)), (None, 0))
    args = (jnp.asarray(x), jnp.asarray(y))
    init_state, _ = _batch._init(lm, fun, (None, 0), None, jnp.asarray(p0), args)
    loop = (np.int32(2**31 - 1), np.float32(_batch.PATIENCE), np.zeros((1, 2), np.float32))
    block = _batch._block_size(len(p0))
    compiled = _batch._blocked.lower(lm, fun, (None, 0), None, block, init_state, args, *loop).compile()
    return stats, _memory(compiled)


def _memory(compiled):
    try:
        m = compiled.memory_analysis()
        return int(m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes)
    except Exception:  # noqa: BLE001 - not every backend reports it
        return None


def optx_solver(fun, tol, max_steps):
    solver = optx.LevenbergMarquardt(rtol=tol, atol=tol)

    def one(p, x, y):
        sol = optx.least_squares(
            lambda q, a: fun(q, *a), solver, p, args=(x, y), max_steps=max_steps, throw=False
        )
        r = fun(sol.value, x, y)
        return 0.5 * jnp.sum(r * r)

    return jax.jit(jax.vmap(one, in_axes=(0, None, 0)))


def jaxopt_solver(fun, tol, max_steps):
    lm = jaxopt.LevenbergMarquardt(fun, maxiter=max_steps, tol=tol, xtol=tol, gtol=tol, solver="cholesky")

    def one(p, x, y):
        params, _ = lm.run(p, x, y)
        r = fun(params, x, y)
        return 0.5 * jnp.sum(r * r)

    return jax.jit(jax.vmap(one, in_axes=(0, None, 0)))


def run_scipy(fun, x, y, p0, tol, max_steps):
    f = jax.jit(lambda p, yy: fun(p, x, yy))
    jac = jax.jit(jax.jacfwd(lambda p, yy: fun(p, x, yy)))
    costs = []
    for p, yy in zip(p0, y, strict=True):
        res = scipy.optimize.least_squares(
            lambda q, yy=yy: np.asarray(f(q, yy)),
            p,
            jac=lambda q, yy=yy: np.asarray(jac(q, yy)),
            method="lm",
            ftol=max(tol, 1e-15),
            xtol=max(tol, 1e-15),
            gtol=max(tol, 1e-15),
            max_nfev=max_steps * 10,
        )
        costs.append(res.cost)
    return np.asarray(costs)


def as_good(mine, theirs, dtype):
    slack = float(np.sqrt(np.finfo(dtype).eps))
    return float(np.mean(mine <= theirs * (1 + slack) + np.finfo(dtype).tiny))


# --------------------------------------------------------------------------- driver
def row(problem, dtype_name, n, args):
    dtype = np.dtype(dtype_name)
    fun, x, y, p0 = make(problem, n)
    x, y, p0 = x.astype(dtype), y.astype(dtype), p0.astype(dtype)
    tol, max_steps, optx_tol, jaxopt_tol = settings(problem, dtype)
    chunk = 200_000 if n > 200_000 else None
    costs = {}  # the default-option runs' final costs, compared with each peer's below
    (cost, status), first, best = timed(lambda: run_jaxlm(fun, x, y, p0, tol, max_steps, chunk), args.repeats)
    out = {
        "problem": problem,
        "dtype": dtype_name,
        "n": n,
        "jaxlm": {
            "fits_per_s": n / best,
            "first_call_s": first,
            "converged": float(np.mean((status >= 1) & (status <= 3))),
        },
    }
    for key, call in (
        ("jaxlm_defaults", lambda: run_jaxlm_defaults(fun, x, y, p0, chunk)),
        ("fit_defaults", lambda: run_fit(fun, x, y, p0, chunk)),
    ):
        (dcost, dstatus), dfirst, dbest = timed(call, args.repeats)
        out[key] = {
            "fits_per_s": n / dbest,
            "first_call_s": dfirst,
            "converged": float(np.mean((dstatus >= 1) & (dstatus <= 3))),
        }
        costs[key] = dcost
    if n <= 100_000:
        stats, mem = jaxlm_stats(fun, x, y, p0, tol, max_steps)
        out["jaxlm"].update(executed_over_needed=stats.ratio, phases=stats.phases, memory_bytes=mem)
    k = min(n, args.peer_max)
    for name, make_solver, ptol in (
        ("optimistix", optx and optx_solver, optx_tol),
        ("jaxopt", jaxopt and jaxopt_solver, jaxopt_tol),
    ):
        if make_solver is None:
            continue
        solve = make_solver(fun, ptol, max_steps)
        xs, ys, ps = jnp.asarray(x), jnp.asarray(y[:k]), jnp.asarray(p0[:k])
        peer_cost, pfirst, pbest = timed(lambda s=solve, a=(ps, xs, ys): s(*a), args.repeats)
        out[name] = {
            "fits_per_s": k / pbest,
            "first_call_s": pfirst,
            "fits_timed": k,
            "memory_bytes": _memory(solve.lower(ps, xs, ys).compile()),
            "jaxlm_as_good": as_good(cost[:k], np.asarray(peer_cost), dtype),
            "fit_defaults_as_good": as_good(costs["fit_defaults"][:k], np.asarray(peer_cost), dtype),
        }
    if scipy is not None:
        ks = min(n, args.scipy_max)
        t0 = time.perf_counter()
        sc = run_scipy(fun, x.astype(float), y[:ks].astype(float), p0[:ks].astype(float), tol, max_steps)
        dt = time.perf_counter() - t0
        out["scipy"] = {
            "fits_per_s": ks / dt,
            "fits_timed": ks,
            "jaxlm_as_good": as_good(cost[:ks], sc, dtype),
        }
    for peer in ("optimistix", "jaxopt", "scipy"):
        if peer in out:
            out[peer]["jaxlm_speedup"] = out["jaxlm"]["fits_per_s"] / out[peer]["fits_per_s"]
            out[peer]["fit_defaults_speedup"] = out["fit_defaults"]["fits_per_s"] / out[peer]["fits_per_s"]
    return out


def fmt_rate(v):
    return f"{v / 1e6:.2f} M" if v >= 1e6 else f"{v / 1e3:.1f} k" if v >= 1e3 else f"{v:.0f}"


def markdown(rows):
    lines = [
        "| problem | dtype | fits | jaxlm fits/s | first call | exec/needed | vs optimistix (as good) "
        "| vs jaxopt (as good) | vs scipy loop (as good) | jaxlm / optimistix memory "
        "| defaults: least_squares_batch | defaults: fit (first call) | fit vs optimistix (as good) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        j = r["jaxlm"]
        cells = [
            r["problem"],
            r["dtype"],
            f"{r['n']:,}",
            fmt_rate(j["fits_per_s"]),
            f"{j['first_call_s']:.1f} s",
            f"{j['executed_over_needed']:.2f}" if "executed_over_needed" in j else "–",
        ]
        for peer in ("optimistix", "jaxopt", "scipy"):
            p = r.get(peer)
            cells.append(f"{p['jaxlm_speedup']:.0f}× ({100 * p['jaxlm_as_good']:.0f} %)" if p else "–")
        mo = r.get("optimistix", {}).get("memory_bytes")
        mj = j.get("memory_bytes")
        cells.append(f"{mj / 2**20:.0f} / {mo / 2**20:.0f} MB" if mo and mj and r["n"] <= 10_000 else "–")
        d, f = r.get("jaxlm_defaults"), r.get("fit_defaults")
        cells.append(fmt_rate(d["fits_per_s"]) if d else "–")
        cells.append(f"{fmt_rate(f['fits_per_s'])} ({f['first_call_s']:.1f} s)" if f else "–")
        o = r.get("optimistix", {})
        good = o.get("fit_defaults_as_good")
        speed = o.get("fit_defaults_speedup")
        share = f" ({100 * good:.0f} %)" if good is not None else ""
        cells.append(f"{speed:.1f}×{share}" if speed else "–")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--problems", nargs="+", default=["gauss1d", "gpufit5", "gpufit5-10it", "gauss2d15", "decay"]
    )
    parser.add_argument("--dtypes", nargs="+", default=["float32", "float64"])
    parser.add_argument("--sizes", nargs="+", type=int, default=[1_000, 10_000, 100_000, 1_000_000])
    parser.add_argument("--quick", action="store_true", help="sizes 10³ and 10⁴ only")
    parser.add_argument("--peer-max", type=int, default=10_000)
    parser.add_argument("--scipy-max", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", default=str(RESULTS / "suite.json"))
    args = parser.parse_args()
    sizes = [1_000, 10_000] if args.quick else args.sizes
    if len(args.dtypes) > 1:  # one process per dtype: float32 runs without x64, as users run it
        rows = []
        for dtype in args.dtypes:
            part = pathlib.Path(args.out).with_suffix(f".{dtype}.json")
            cmd = [
                sys.executable,
                __file__,
                "--dtypes",
                dtype,
                "--out",
                str(part),
                "--problems",
                *args.problems,
            ]
            cmd += ["--sizes", *map(str, sizes), "--peer-max", str(args.peer_max)]
            cmd += ["--scipy-max", str(args.scipy_max), "--repeats", str(args.repeats)]
            subprocess.run(cmd, check=True)
            data = json.loads(part.read_text())
            rows += data["rows"]
            part.unlink()
            part.with_suffix(".md").unlink()
        rows.sort(key=lambda r: (args.problems.index(r["problem"]), r["dtype"], r["n"]))
        return _write(args.out, data["machine"], rows)
    if args.dtypes == ["float64"]:
        jax.config.update("jax_enable_x64", True)
    device = jax.devices()[0]
    header = (
        f"jaxlm {jaxlm.__version__}, jax {jax.__version__}, {device.platform} ({device.device_kind}), "
        f"{platform.machine()}, {jax.local_device_count()} device(s)"
    )
    print(header)
    rows = []
    for problem in args.problems:
        for dtype in args.dtypes:
            for n in sizes:
                r = row(problem, dtype, n, args)
                rows.append(r)
                print(markdown([r]).splitlines()[-1], flush=True)
                _write(args.out, header, rows, quiet=True)  # keep what is done if interrupted
    _write(args.out, header, rows)


def _write(path, header, rows, quiet=False):
    out = pathlib.Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"machine": header, "rows": rows}, indent=1))
    table = markdown(rows)
    out.with_suffix(".md").write_text(f"{header}\n\n{table}\n")
    if not quiet:
        print(table)


if __name__ == "__main__":
    main()
