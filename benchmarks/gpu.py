"""The accelerator benchmark: Gpufit's 5×5 problem at GPU scale, 10⁸ fits in one chunked
call, and the scaling across devices — in one command.

Run from a checkout on a machine whose JAX sees the GPUs (no install needed: the script
puts the checkout first on ``sys.path`` and uses the JAX already installed)::

    python benchmarks/gpu.py                # ~5 min on one H100/H200
    python benchmarks/gpu.py --tiny         # the same steps at toy sizes (any machine, CPU too)

What it measures (float32 throughout, as Gpufit; problems, data and solver settings are
those of ``benchmarks/suite.py``: ``damping="more"``, no geodesic acceleration, starts
±10 % off the truth, Poisson noise):

1. **Throughput**: ``gpufit5`` (jaxlm's default eps^¾ tolerances) and ``gpufit5-10it``
   (Gpufit's settings: tolerance 1e-4, at most 10 iterations) at ``--sizes`` fits per
   call on one device: fits/s (best of ``--repeats`` after a compiling call), first-call
   time, converged share, executed/needed member-steps.  optimistix LM under
   ``jit(vmap)`` on the same problems and device when it is installed (``--peer-max``
   fits), with the share of fits where jaxlm's cost is at least as good.
2. **One chunked call** of ``--big`` fits (default 10⁸: 10 GB of pixels in host memory,
   made by tiling 10⁶ distinct problems) with ``chunk_size=--chunk``: wall time including
   every host↔device transfer, fits/s, converged share.
3. **Scaling across devices**: ``--scale-n`` fits with ``devices=jax.devices()[:k]``
   for k = 1, 2, 4, … up to the device count: fits/s and speed-up over one device.

Gpufit's published figures (3.0–4.0 M fits/s on the same 5×5 problem, consumer GPUs of
2016–2020; its README and issue #138) are printed beside the rows.  Results:
``benchmarks/results/gpu.json`` and ``gpu.md`` (``--out`` to change).
"""

from __future__ import annotations

import argparse
import json
import pathlib
import platform
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # this checkout's jaxlm, without installing it

import jax  # noqa: E402
import numpy as np  # noqa: E402
from _timing import timed  # noqa: E402
from suite import as_good, fmt_rate, jaxlm_options, jaxlm_stats, make, optx, optx_solver, settings  # noqa: E402

import jaxlm  # noqa: E402

GPUFIT_PUBLISHED = "Gpufit (published, consumer GPUs): 3.0–4.0 M fits/s on this 5×5 problem"


def problem_data(problem, n, unique=None):
    """float32 ``(fun, x, y, p0)``; with ``unique`` the first ``unique`` problems are
    tiled up to ``n`` (host memory for 10⁸ fits without 10⁸ Poisson draws)."""
    fun, x, y, p0 = make(problem, unique or n)
    y, p0 = y.astype(np.float32), p0.astype(np.float32)
    if unique is not None and unique < n:
        reps = -(-n // unique)
        y, p0 = np.tile(y, (reps, 1))[:n], np.tile(p0, (reps, 1))[:n]
    return fun, x.astype(np.float32), y, p0


def options(problem):
    tol, max_steps, optx_tol, _ = settings(problem, np.float32)
    return jaxlm_options(tol, max_steps), optx_tol


def converged(status):
    status = np.asarray(status)
    return float(np.mean((status >= jaxlm.Status.CONVERGED_FTOL) & (status <= jaxlm.Status.CONVERGED_GTOL)))


def throughput(problem, n, args, device):
    fun, x, y, p0 = problem_data(problem, n)
    opts, optx_tol = options(problem)
    xd, yd, pd = (jax.device_put(a, device) for a in (x, y, p0))
    solve = lambda: jaxlm.least_squares_batch(fun, pd, (xd, yd), in_axes=(None, 0), **opts)  # noqa: E731
    sol, first, best = timed(solve, args.repeats)
    stats, memory = jaxlm_stats(fun, xd, yd, pd, opts["ftol"], opts["max_steps"])
    out = {
        "problem": problem,
        "n": n,
        "fits_per_s": n / best,
        "first_call_s": first,
        "converged": converged(sol.status),
        "executed_over_needed": stats.ratio,
        "memory_bytes": memory,
    }
    if optx is not None:
        k = min(n, args.peer_max)
        peer = optx_solver(fun, optx_tol, opts["max_steps"])
        peer_cost, _, pbest = timed(lambda: peer(pd[:k], xd, yd[:k]), args.repeats)
        out["optimistix"] = {
            "fits_per_s": k / pbest,
            "fits_timed": k,
            "jaxlm_as_good": as_good(np.asarray(sol.cost)[:k], np.asarray(peer_cost), np.float32),
        }
        out["optimistix"]["jaxlm_speedup"] = out["fits_per_s"] / out["optimistix"]["fits_per_s"]
    return out


def chunked(args):
    t0 = time.perf_counter()
    fun, x, y, p0 = problem_data("gpufit5", args.big, unique=min(args.big, 1_000_000))
    made = time.perf_counter() - t0
    opts, _ = options("gpufit5")
    solve = (
        lambda n: jaxlm.least_squares_batch(  # noqa: E731
            fun, p0[:n], (x, y[:n]), in_axes=(None, 0), chunk_size=args.chunk, **opts
        )
    )
    solve(min(args.big, args.chunk))  # compile the chunk's programs outside the timing
    t0 = time.perf_counter()
    sol = solve(args.big)
    wall = time.perf_counter() - t0
    return {
        "problem": "gpufit5",
        "n": args.big,
        "chunk_size": args.chunk,
        "wall_s": wall,
        "fits_per_s": args.big / wall,
        "converged": converged(sol.status),
        "host_data_gb": (y.nbytes + p0.nbytes) / 1e9,
        "data_made_s": made,
        "results_are": type(sol.params).__name__,
    }


def scaling(args):
    fun, x, y, p0 = problem_data("gpufit5", args.scale_n)
    opts, _ = options("gpufit5")
    rows, k = [], 1
    while k <= jax.device_count():
        devices = jax.devices()[:k]
        solve = lambda d=devices: jaxlm.least_squares_batch(  # noqa: E731
            fun, p0, (x, y), in_axes=(None, 0), devices=d, **opts
        )
        _, first, best = timed(solve, args.repeats)
        rows.append(
            {"devices": k, "n": args.scale_n, "fits_per_s": args.scale_n / best, "first_call_s": first}
        )
        k *= 2
    for r in rows:
        r["speedup"] = r["fits_per_s"] / rows[0]["fits_per_s"]
    return rows


def markdown(data):
    lines = [data["machine"], "", GPUFIT_PUBLISHED, "", "**Throughput, one device, float32**", ""]
    lines += [
        "| problem | fits | jaxlm fits/s | first call | converged | exec/needed | vs optimistix (as good) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in data["throughput"]:
        p = r.get("optimistix")
        peer = f"{p['jaxlm_speedup']:.0f}× ({100 * p['jaxlm_as_good']:.0f} %)" if p else "–"
        lines.append(
            f"| {r['problem']} | {r['n']:,} | {fmt_rate(r['fits_per_s'])} | {r['first_call_s']:.1f} s "
            f"| {100 * r['converged']:.2f} % | {r['executed_over_needed']:.2f} | {peer} |"
        )
    c = data["chunked"]
    lines += [
        "",
        f"**One chunked call**: {c['n']:,} gpufit5 fits in chunks of {c['chunk_size']:,} "
        f"({c['host_data_gb']:.1f} GB of host data): {c['wall_s']:.1f} s, {fmt_rate(c['fits_per_s'])} fits/s "
        f"including transfers, {100 * c['converged']:.2f} % converged.",
        "",
        "**Scaling across devices** (gpufit5, float32)",
        "",
        "| devices | fits | fits/s | speed-up |",
        "|---:|---:|---:|---:|",
    ]
    for r in data["scaling"]:
        lines.append(f"| {r['devices']} | {r['n']:,} | {fmt_rate(r['fits_per_s'])} | {r['speedup']:.2f}× |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tiny", action="store_true", help="toy sizes: check the script anywhere")
    parser.add_argument("--sizes", nargs="+", type=int, default=[1_000_000, 10_000_000])
    parser.add_argument("--big", type=int, default=100_000_000)
    parser.add_argument("--chunk", type=int, default=10_000_000)
    parser.add_argument("--scale-n", type=int, default=10_000_000)
    parser.add_argument("--peer-max", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "gpu.json"))
    args = parser.parse_args(argv)
    if args.tiny:
        args.sizes, args.big, args.chunk, args.scale_n, args.peer_max, args.repeats = (
            [2_000],
            6_000,
            2_500,
            4_000,
            500,
            1,
        )
    device = jax.devices()[0]
    machine = (
        f"jaxlm {jaxlm.__version__}, jax {jax.__version__}, {device.platform} ({device.device_kind}) "
        f"× {jax.device_count()}, host {platform.machine()}"
    )
    print(machine, flush=True)
    out = pathlib.Path(args.out)
    data = {"machine": machine, "gpufit_published": GPUFIT_PUBLISHED, "throughput": []}
    for problem in ("gpufit5", "gpufit5-10it"):
        for n in args.sizes:
            data["throughput"].append(throughput(problem, n, args, device))
            print(data["throughput"][-1], flush=True)
    data["chunked"] = chunked(args)
    print(data["chunked"], flush=True)
    data["scaling"] = scaling(args)
    print(data["scaling"], flush=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(data, indent=1))
    out.with_suffix(".md").write_text(markdown(data))
    print(markdown(data))
    return data


if __name__ == "__main__":
    main()
