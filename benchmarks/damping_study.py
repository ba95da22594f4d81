"""The damping study: ``(A + μI)``, ``(A + μ·diag A)`` or Moré's running max, on data.

Every configuration — damping ``levenberg`` (D = I), ``marquardt`` (D = diag JᵀJ) or
``more`` (D = running max of diag JᵀJ) × μ update ``nielsen`` or ``marquardt`` (÷10/×10)
× geodesic acceleration off/on, twelve in all, other options at their defaults — runs
on the same five sets, float64:

``nist``         the 27 NIST StRD problems from both certified starts (54 runs); solved
                 when the LRE is ≥ 4 on every parameter and the RSS (``nist.passes``).
``mgh``          all 35 Moré–Garbow–Hillstrom problems (ACM TOMS 7:17–41, 1981; Watson
                 at n = 6, 9, 12 and Chebyquad at n = 8, 9, 10: 39 in all) from 1·, 10·,
                 100·x0, as MINPACK's test driver (117 runs); solved when ‖r‖² reaches
                 the paper's f* (``mgh.solved``).
``rescaled``     NIST (both starts) and MGH (x0) with the parameters rescaled:
                 p = s ⊙ q, s_i = F^(i/(n−1)) (first parameter unchanged, last scaled
                 by F), F ∈ 10^{−6, −3, 3, 6}; the solver sees q, the judge p.  A
                 scale-invariant method takes the same path for every F.
``evaporation``  the sum of two exponentials y = e^(−θ₁t) + e^(−θ₂t) fitted in log-rates
                 log θ (exact data from θ* = (1, 3), 16 times in [0.25, 4]), the model
                 Transtrum, Machta & Sethna use for parameter evaporation (Phys. Rev. E
                 83:036701, 2011; Transtrum & Sethna 2012, arXiv:1201.5885), from the 36
                 starts θ₁ < θ₂ on a 9-point log grid over [0.01, 100]; solved when
                 ‖r‖² ≤ 1e-12·‖y‖², *evaporated* when not solved and a rate ended above
                 10³ (its term decayed to nothing, and its gradient with it).  NIST MGH10
                 (Meyer) from start 1 evaporates too (b₁ → 0, b₂, b₃ → ∞); it is in ``nist``.
``singular``     zero Jacobian columns, where diag A is singular and only the zero
                 column's stand-in D_i = 1 (normalised units, ``jaxlm._damping``)
                 keeps ``A + μD`` positive definite: an exponential
                 decay started at amplitude 0 (the rate's column is zero at the start),
                 the same model with a fourth parameter it ignores (a column that is zero
                 everywhere; it must end exactly where it started), and a Gaussian peak
                 started 3, 4, 5, 6 widths from the data (its columns are e^(−k²/2)
                 smaller than at the solution: nearly zero, so diag A nearly singular).

The peers run on the same runs as further configurations (``minpack``, ``optimistix``,
``jaxopt``; see ``PEERS``), judged the same way: ‖r‖² recomputed at the returned point, and
a false success is a run its solver calls converged at a point that is not stationary.

Per configuration: runs solved per set, *false successes* (runs that ended with a
``CONVERGED_*`` status at a point that is not stationary, judged independently by
:func:`stationarity`; the goal is zero everywhere), successes *on a plateau* (stationary
only because a parameter's column of J vanished: evaporation, saturation), median steps
and residual evaluations, total solve time (each run timed on its second call, compilation
excluded), and the failures by name.  Writes ``benchmarks/results/damping_study.json`` (every run) and
``damping_study.md`` (the tables of the README's "Which damping?").

    python benchmarks/damping_study.py               # the whole study, one process per core
    python benchmarks/damping_study.py --quick       # a few problems per set, 4 configurations
    python benchmarks/damping_study.py --jobs 1      # serially (times then never share a core)
    python benchmarks/damping_study.py --configs more/nielsen+geo,minpack --out results/x.json
"""

from __future__ import annotations

import argparse
import collections
import concurrent.futures
import functools
import itertools
import json
import multiprocessing
import os
import pathlib
import platform
import sys
import time
import warnings
from dataclasses import dataclass

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import scipy.optimize  # noqa: E402

import jaxlm  # noqa: E402
from jaxlm.problems import mgh, nist  # noqa: E402

try:  # the peers are optional: ``pip install optimistix jaxopt``
    import optimistix as optx
except ImportError:  # pragma: no cover
    optx = None
try:
    import jaxopt
except ImportError:  # pragma: no cover
    jaxopt = None

RESULTS = pathlib.Path(__file__).resolve().parent / "results"
DAMPINGS = ("levenberg", "marquardt", "more", "relative")
UPDATES = ("nielsen", "marquardt")
# every damping × update × geodesic; then the restart candidates (a member that stops
# with MAX_STEPS or NO_PROGRESS runs again from its start with the damping after the
# arrow, the better of the two kept); then the peers
CONFIGS = [
    *({"damping": d, "update": u, "geodesic": g} for d in DAMPINGS for u in UPDATES for g in (False, True)),
    *({"damping": d, "update": "nielsen", "geodesic": True, "restart": r}
      for d, r in (("relative", "more"), ("more", "relative"))),
    *({"peer": p} for p in ("minpack", "optimistix", "jaxopt")),
]  # fmt: skip
QUICK_CONFIGS = [
    {"damping": d, "update": "nielsen", "geodesic": g}
    for d, g in (("levenberg", True), ("marquardt", False), ("more", False), ("more", True))
]
# The peers, run for run on the same runs, at jaxlm's default tolerance (eps^¾) and step limit:
# MINPACK (scipy ``least_squares(method="lm")``, the exact JAX Jacobian, max_nfev 1000),
# optimistix ``LevenbergMarquardt(rtol=atol=eps^¾)`` and jaxopt ``LevenbergMarquardt``
# (tol = xtol = gtol = eps^¾, Cholesky), both under ``jit`` with max_steps 1000.
PEERS = ("minpack", "optimistix", "jaxopt")
PEER_TOL = float(np.finfo(np.float64).eps ** 0.75)
PEER_MAX_STEPS = 1000
SPREADS = (1e-6, 1e-3, 1e3, 1e6)
SETS = ("nist", "mgh", "rescaled", "evaporation", "singular")


def label(config: dict) -> str:
    """``levenberg/nielsen+geo`` style name of a configuration (a peer's own name)."""
    if "peer" in config:
        return config["peer"]
    if not config:
        return "default"
    name = f"{config['damping']}/{config['update']}{'+geo' if config['geodesic'] else ''}"
    return name + (f"→{config['restart']}" if config.get("restart") else "")


def spread_scale(n: int, spread: float) -> np.ndarray:
    """s_i = spread^(i/(n−1)): parameter scales from 1 to ``spread`` (``spread`` for n = 1)."""
    if n == 1:
        return np.array([spread])
    return spread ** (np.arange(n) / (n - 1))


@dataclass
class Run:
    """One problem from one start: the solver sees ``q`` with ``p = scale ⊙ q``."""

    set: str
    problem: str
    start: str
    fun: callable  # fun(q, scale, *data) -> residuals; one object per problem (one compilation)
    p0: np.ndarray
    data: tuple
    judge: callable  # judge(p, rss) -> dict with at least {"solved": bool}
    spread: float = 1.0

    @property
    def scale(self) -> np.ndarray:
        return spread_scale(len(self.p0), self.spread)  # exactly 1 for spread 1


def _rescaled(residual):
    """``fun(q, s, *data) = residual(s ⊙ q, *data)``: the same function object for every
    scale, so the unscaled run (s = 1, an exact multiplication) and every rescaled run
    of a problem share one compilation."""
    return lambda q, s, *data: residual(q * s, *data)


@functools.cache
def _nist_fun(name):
    return _rescaled(nist.load(name).residual)


@functools.cache
def _mgh_fun(name):
    problem = next(p for p in mgh.PROBLEMS if p.name == name)
    return _rescaled(problem.fun)


def nist_runs(names, spreads=(1.0,), set_name="nist"):
    out = []
    for name in names:
        problem = nist.load(name)

        def judge(p, rss, problem=problem):
            p_lre, rss_lre = nist.score(problem, p)
            return {"solved": nist.passes(problem, p_lre, rss_lre), "lre": round(min(p_lre, rss_lre), 2)}

        for spread in spreads:
            for start in (1, 2):
                out.append(
                    Run(set_name, name, f"S{start}", _nist_fun(name), problem.start(start),
                        (jnp.asarray(problem.x), jnp.asarray(problem.y)), judge, spread)
                )  # fmt: skip
    return out


def mgh_runs(problems, factors=(1.0, 10.0, 100.0), spreads=(1.0,), set_name="mgh"):
    out = []
    for problem in problems:

        def judge(p, rss, problem=problem):
            return {"solved": mgh.solved(problem, rss)}

        for spread in spreads:
            for factor, x0 in zip(factors, mgh.starts(problem, factors), strict=True):
                fun = _mgh_fun(problem.name)
                out.append(Run(set_name, problem.name, f"{factor:g}x0", fun, x0, (), judge, spread))
    return out


# --- parameter evaporation: a sum of two exponentials, log rates -----------------------
EVAP_T = np.linspace(0.25, 4.0, 16)
EVAP_TRUE = np.array([1.0, 3.0])
EVAP_GRID = np.geomspace(0.01, 100.0, 9)
EVAP_LIMIT = 1e3  # a rate above this (10× the largest start) has evaporated


def _two_exponentials(q, s, t, y):
    rate = jnp.exp(q * s)  # the parameters are log-rates, as in Transtrum et al.
    return jnp.exp(-rate[0] * t) + jnp.exp(-rate[1] * t) - y


def evaporation_runs(grid=EVAP_GRID):
    t = jnp.asarray(EVAP_T)
    y = np.exp(-EVAP_TRUE[0] * EVAP_T) + np.exp(-EVAP_TRUE[1] * EVAP_T)
    tol = 1e-12 * float(np.sum(y * y))

    def judge(p, rss):
        solved = bool(np.isfinite(rss) and rss <= tol)
        with np.errstate(over="ignore"):
            rate = np.exp(p)
        evaporated = not solved and not (np.all(np.isfinite(rate)) and np.max(rate) <= EVAP_LIMIT)
        return {"solved": solved, "evaporated": evaporated}

    return [
        Run("evaporation", "two-exponentials", f"({a:g},{b:g})", _two_exponentials, np.log([a, b]),
            (t, jnp.asarray(y)), judge)
        for a, b in itertools.combinations(grid, 2)
    ]  # fmt: skip


# --- zero Jacobian columns ----------------------------------------------------------
SING_T = np.linspace(0.0, 5.0, 40)


def _decay(q, s, t, y):
    p = q * s
    return p[0] * jnp.exp(-p[1] * t) + p[2] - y


def _decay_ignored(q, s, t, y):
    p = q * s
    return p[0] * jnp.exp(-p[1] * t) + p[2] + 0.0 * jnp.sin(p[3]) * t - y  # ∂r/∂p₃ ≡ 0


def _peak(q, s, t, y):
    p = q * s
    return p[0] * jnp.exp(-0.5 * ((t - p[1]) / p[2]) ** 2) - y


def singular_runs():
    t = SING_T
    decay = 2.0 * np.exp(-1.5 * t) + 0.3
    peak = 3.0 * np.exp(-0.5 * ((t - 1.5) / 0.2) ** 2)

    def zero_residual(y):
        tol = 1e-12 * float(np.sum(y * y))
        return lambda p, rss: {"solved": bool(np.isfinite(rss) and rss <= tol)}

    def ignored_kept(p, rss):
        tol = 1e-12 * float(np.sum(decay * decay))
        kept = bool(p[3] == 0.7)
        return {"solved": bool(np.isfinite(rss) and rss <= tol and kept), "ignored_kept": kept}

    tj = jnp.asarray(t)
    return [
        Run("singular", "decay, amplitude 0 at start", "a=0", _decay, np.array([0.0, 0.5, 0.0]),
            (tj, jnp.asarray(decay)), zero_residual(decay)),
        Run("singular", "decay + ignored parameter", "d=0.7", _decay_ignored, np.array([1.0, 0.5, 0.0, 0.7]),
            (tj, jnp.asarray(decay)), ignored_kept),
        *[Run("singular", "peak started k widths away", f"k={k}", _peak, np.array([1.0, 1.5 + 0.2 * k, 0.2]),
              (tj, jnp.asarray(peak)), zero_residual(peak)) for k in (3, 4, 5, 6)],
    ]  # fmt: skip


def build_runs(quick: bool = False) -> list[Run]:
    """All runs of the study (``quick``: a handful per set, for the notebook's CI mode)."""
    nist_names = ["Misra1a", "Thurber", "MGH09", "MGH10", "BoxBOD", "Eckerle4"] if quick else nist.names()
    problems = [p for p in mgh.PROBLEMS if not quick or p.name in ("Rosenbrock", "Meyer", "Bard", "Box3D")]
    spreads = (1e-6, 1e6) if quick else SPREADS
    grid = EVAP_GRID[::2] if quick else EVAP_GRID
    return [
        *nist_runs(nist_names),
        *mgh_runs(problems),
        *nist_runs(nist_names, spreads, "rescaled"),
        *mgh_runs(problems, (1.0,), spreads, "rescaled"),
        *evaporation_runs(grid),
        *singular_runs(),
    ]


@dataclass
class Outcome:
    """What a solver returned for one run, in the solver's variables q."""

    q: np.ndarray
    success: bool
    status: str
    steps: int
    nfev: int


def _jaxlm(run: Run, config: dict, q0, args) -> Outcome:
    options = {"restart": None, **config}  # a configuration without a restart has none
    sol = jax.block_until_ready(jaxlm.least_squares(run.fun, q0, args=args, **options))
    status = jaxlm.Status(int(sol.status))
    return Outcome(np.asarray(sol.params), bool(sol.success), status.name, int(sol.n_steps), int(sol.n_fev))


@functools.cache
def _minpack_funs(fun):
    return jax.jit(fun), jax.jit(jax.jacfwd(fun))


def _minpack(run: Run, q0, args) -> Outcome:
    fun, jac = _minpack_funs(run.fun)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            ref = scipy.optimize.least_squares(
                lambda q: np.asarray(fun(jnp.asarray(q), *args)),
                np.asarray(q0),
                jac=lambda q: np.asarray(jac(jnp.asarray(q), *args)),
                method="lm",
                ftol=PEER_TOL,
                xtol=PEER_TOL,
                gtol=PEER_TOL,
                max_nfev=PEER_MAX_STEPS,
            )
        except Exception as err:  # MINPACK raises on non-finite residuals
            return Outcome(np.asarray(q0), False, f"raised {type(err).__name__}", 0, 0)
    return Outcome(ref.x, bool(ref.success), f"info {ref.status}", int(ref.nfev), int(ref.nfev))


@functools.cache
def _optimistix_solver(fun):
    solver = optx.LevenbergMarquardt(rtol=PEER_TOL, atol=PEER_TOL)

    def one(q0, args):
        sol = optx.least_squares(
            lambda q, a: fun(q, *a), solver, q0, args=args, max_steps=PEER_MAX_STEPS, throw=False
        )
        return sol.value, sol.result == optx.RESULTS.successful, sol.stats["num_steps"]

    return jax.jit(one)


@functools.cache
def _jaxopt_solver(fun):
    lm = jaxopt.LevenbergMarquardt(
        lambda q, *a: fun(q, *a), maxiter=PEER_MAX_STEPS, tol=PEER_TOL, xtol=PEER_TOL, gtol=PEER_TOL,
        solver="cholesky",
    )  # fmt: skip

    def one(q0, args):
        q, state = lm.run(q0, *args)
        return q, state.iter_num < PEER_MAX_STEPS, state.iter_num

    return jax.jit(one)


def _jitted_peer(solver, q0, args) -> Outcome:
    q, ok, steps = jax.block_until_ready(solver(q0, args))
    ok = bool(ok)
    return Outcome(np.asarray(q), ok, "converged" if ok else "not converged", int(steps), int(steps))


def available(config: dict) -> bool:
    """Whether this configuration can run here (optimistix and jaxopt are optional)."""
    return {"optimistix": optx, "jaxopt": jaxopt}.get(config.get("peer"), True) is not None


def _solve_once(run: Run, config: dict, q0, args) -> Outcome:
    peer = config.get("peer")
    if peer is None:
        return _jaxlm(run, config, q0, args)
    if peer == "minpack":
        return _minpack(run, q0, args)
    if peer == "optimistix":
        return _jitted_peer(_optimistix_solver(run.fun), q0, args)
    if peer == "jaxopt":
        return _jitted_peer(_jaxopt_solver(run.fun), q0, args)
    raise ValueError(f"unknown peer {peer!r}")


def solve(run: Run, config: dict) -> dict:
    """Solve one run (compiling on first use), time a second identical call, judge it."""
    q0 = jnp.asarray(run.p0 / run.scale)
    args = (jnp.asarray(run.scale), *run.data)
    _solve_once(run, config, q0, args)
    t0 = time.perf_counter()
    out = _solve_once(run, config, q0, args)
    elapsed = time.perf_counter() - t0
    p = out.q * run.scale
    with np.errstate(over="ignore", invalid="ignore"):
        r = np.asarray(run.fun(jnp.asarray(out.q), *args))
        rss = float(r @ r)
    row = {
        "set": run.set,
        "problem": run.problem,
        "start": run.start,
        "spread": run.spread,
        "config": label(config),
        "status": out.status,
        "steps": out.steps,
        "nfev": out.nfev,
        "time_s": elapsed,
        "rss": rss,
    }
    row.update(run.judge(p, rss))
    stationary, plateau = stationarity(run, out.q)
    row["false_success"] = out.success and not stationary
    row["plateau_success"] = out.success and plateau
    return row


def stationarity(run: Run, q) -> tuple[bool, bool]:
    """``(stationary, plateau)`` of the point ``q``, judged from scratch in float64.

    Stationary: the gradient ``g = Jᵀr`` is small on the scale of each parameter,
    ``|g_j| ≤ 1e-4·s_j·‖r‖`` with ``s_j`` the larger of the column norms of J at the start
    and at q (the solver's own test uses the largest norm along its path, which the judge
    cannot see), or the cost fell below 1e-12 of the start's, or ‖r‖ ≤ 1e3·eps·‖J‖·‖q‖
    (a zero-residual problem, where r is rounding noise whose direction means nothing).
    A point reached by ftol passes with a wide margin (there cos² ≲ ftol).

    Plateau: stationary only because a column of J has all but vanished (the cosine with
    the column at q is still > 1e-4): an evaporated rate, a saturated exponential, a
    parameter held at a bound by a transform.  The gradient is zero there, but the point
    need not be a minimum.
    """
    args = (jnp.asarray(run.scale), *run.data)
    fun = lambda z: run.fun(z, *args)  # noqa: E731
    q0 = jnp.asarray(run.p0 / run.scale)
    r, r0 = np.asarray(fun(jnp.asarray(q))), np.asarray(fun(q0))
    jac, jac0 = np.asarray(jax.jacfwd(fun)(jnp.asarray(q))), np.asarray(jax.jacfwd(fun)(q0))
    if not (np.all(np.isfinite(r)) and np.all(np.isfinite(jac))):
        return False, False
    # a residual at the rounding level of the model's own terms (‖r‖ ≲ eps·‖J‖·‖q‖, the
    # size of J·q) has no direction to judge: a zero-residual problem at its solution,
    # such as MGH Gulf, whose start 10·x0 is the solution itself
    if np.linalg.norm(r) <= 1e3 * np.finfo(np.float64).eps * np.linalg.norm(jac) * np.linalg.norm(q):
        return True, False
    unit = np.max(np.abs(r0)) or 1.0
    r, r0, jac, jac0 = r / unit, r0 / unit, jac / unit, jac0 / unit
    rnorm = np.linalg.norm(r)
    if rnorm**2 <= 1e-12 * (r0 @ r0):
        return True, False
    g = np.abs(jac.T @ r)
    norms = np.linalg.norm(jac, axis=0)
    scale = np.maximum(norms, np.where(np.isfinite(jac0).all(axis=0), np.linalg.norm(jac0, axis=0), 0))
    seen = scale > 0
    stationary = bool(np.all(g[seen] <= 1e-4 * scale[seen] * rnorm))
    cosine = np.where(norms > 0, g / np.where(norms > 0, norms, 1), 0) / rnorm
    return stationary, stationary and bool(np.max(cosine, initial=0.0) > 1e-4)


def summarise(rows: list[dict], configs: list[dict]) -> list[dict]:
    """Per configuration: solved per set, medians, total time, failures by name."""
    out = []
    for config in configs:
        name = label(config)
        mine = [r for r in rows if r["config"] == name]
        entry = {"config": name, **config}
        for s in SETS:
            part = [r for r in mine if r["set"] == s]
            entry[s] = [sum(r["solved"] for r in part), len(part)]
        entry["total"] = [sum(r["solved"] for r in mine), len(mine)]
        entry["median_steps"] = float(np.median([r["steps"] for r in mine]))
        entry["median_nfev"] = float(np.median([r["nfev"] for r in mine]))
        entry["total_nfev"] = int(sum(r["nfev"] for r in mine))
        entry["time_s"] = float(sum(r["time_s"] for r in mine))
        entry["evaporated"] = sum(bool(r.get("evaporated")) for r in mine)
        entry["false_success"] = sum(bool(r.get("false_success")) for r in mine)
        entry["plateau_success"] = sum(bool(r.get("plateau_success")) for r in mine)
        entry["by_spread"] = {
            f"{f:g}": [
                sum(r["solved"] for r in mine if r["set"] == "rescaled" and r["spread"] == f),
                sum(1 for r in mine if r["set"] == "rescaled" and r["spread"] == f),
            ]
            for f in sorted({r["spread"] for r in mine if r["set"] == "rescaled"})
        }
        entry["failed"] = {
            s: [f"{r['problem']}/{r['start']}" + (f"/F={r['spread']:g}" if s == "rescaled" else "")
                for r in mine if r["set"] == s and not r["solved"]]
            for s in SETS
        }  # fmt: skip
        out.append(entry)
    return out


def markdown(summary: list[dict], header: str) -> str:
    """The headline table, the per-spread table and the failures by name, as markdown."""
    sets = " | ".join(SETS)
    lines = [
        header,
        "",
        f"| configuration | {sets} | all | false successes | on a plateau | evaporated | median steps | "
        "median fev | time |",
        "|---|" + "---:|" * (len(SETS) + 7),
    ]
    for e in summary:
        cells = " | ".join(f"{e[s][0]}/{e[s][1]}" for s in SETS)
        lines.append(
            f"| {e['config']} | {cells} | **{e['total'][0]}/{e['total'][1]}** | {e['false_success']} | "
            f"{e['plateau_success']} | "
            f"{e['evaporated']} | "
            f"{e['median_steps']:.0f} | {e['median_nfev']:.0f} | {e['time_s']:.1f} s |"
        )
    spreads = list(summary[0]["by_spread"])
    lines += [
        "",
        "Rescaled runs solved by spread F (parameter scales from 1 to F):",
        "",
        "| configuration | " + " | ".join(f"F = {f}" for f in spreads) + " |",
        "|---|" + "---:|" * len(spreads),
    ]
    for e in summary:
        cells = " | ".join(f"{a}/{b}" for a, b in e["by_spread"].values())
        lines.append(f"| {e['config']} | {cells} |")
    lines += ["", "Failures by name (rescaled: problem/start × how many of its spreads failed):", ""]
    for e in summary:
        parts = [f"{s}: {', '.join(v)}" for s, v in e["failed"].items() if v and s != "rescaled"]
        rescaled = collections.Counter(name.rsplit("/F=", 1)[0] for name in e["failed"]["rescaled"])
        if rescaled:
            parts.append("rescaled: " + ", ".join(f"{k} ×{v}" for k, v in sorted(rescaled.items())))
        lines.append(f"- **{e['config']}** — " + ("; ".join(parts) or "none"))
    return "\n".join(lines) + "\n"


def run_study(configs, runs, progress=True) -> list[dict]:
    rows = []
    for i, config in enumerate(configs):
        t0 = time.perf_counter()
        for run in runs:
            rows.append(solve(run, config))
        # No later configuration reuses these programs; releasing them keeps the process
        # under the kernel's memory-map limit (each XLA CPU executable holds mappings).
        jax.clear_caches()
        if progress:
            solved = sum(r["solved"] for r in rows[-len(runs) :])
            print(f"[{i + 1}/{len(configs)}] {label(config):28s} {solved:4d}/{len(runs)} solved "
                  f"({time.perf_counter() - t0:.0f} s with compilation)", flush=True)  # fmt: skip
    return rows


def _config_rows(config: dict, quick: bool) -> list[dict]:
    """One configuration's rows, in a worker process (runs hold closures, so every
    worker builds its own)."""
    return run_study([config], build_runs(quick), progress=False)


def run_parallel(configs, quick: bool, jobs: int) -> list[dict]:
    """``run_study`` over all runs with the configurations spread over ``jobs`` processes
    (each compiles its own programs; compilation is most of the study's time).  Rows come
    back in configuration order, as from one process."""
    context = multiprocessing.get_context("spawn")  # JAX's runtime does not survive fork
    with concurrent.futures.ProcessPoolExecutor(jobs, mp_context=context) as pool:
        futures = [pool.submit(_config_rows, config, quick) for config in configs]
        rows = []
        for i, future in enumerate(futures):
            part = future.result()
            rows += part
            solved = sum(r["solved"] for r in part)
            print(
                f"[{i + 1}/{len(configs)}] {label(configs[i]):28s} {solved:4d}/{len(part)} solved", flush=True
            )
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a few problems per set, 4 configurations")
    parser.add_argument("--out", default=None, help="JSON path (default results/damping_study[_quick].json)")
    parser.add_argument(
        "--jobs", type=int, default=os.cpu_count() or 1, help="worker processes (default: one per core)"
    )
    parser.add_argument(
        "--configs",
        default=None,
        help="comma-separated labels to run, e.g. 'more/nielsen+geo,minpack' (default: all of the set)",
    )
    args = parser.parse_args(argv)
    if args.jobs < 1:
        parser.error(f"--jobs must be at least 1, got {args.jobs}")
    configs = QUICK_CONFIGS if args.quick else CONFIGS
    if args.configs:
        known = {label(c): c for c in CONFIGS}
        wanted = [w.strip() for w in args.configs.split(",") if w.strip()]
        unknown = [w for w in wanted if w not in known]
        if unknown:
            parser.error(f"--configs: unknown {unknown}; known: {sorted(known)}")
        configs = [known[w] for w in wanted]
    runs = build_runs(args.quick)
    jobs = min(args.jobs, len(configs))
    t0 = time.perf_counter()
    rows = run_study(configs, runs) if jobs == 1 else run_parallel(configs, args.quick, jobs)
    elapsed = time.perf_counter() - t0
    summary = summarise(rows, configs)
    header = (
        f"jaxlm {jaxlm.__version__}, jax {jax.__version__}, {jax.default_backend()}, "
        f"{platform.machine()}, float64; {len(runs)} runs × {len(configs)} configurations, "
        f"{elapsed / 60:.1f} min in {jobs} process{'es' if jobs > 1 else ''}"
    )
    table = markdown(summary, header)
    print()
    print(table)
    for e in summary:
        failed = "; ".join(f"{s}: {', '.join(v)}" for s, v in e["failed"].items() if v and s != "rescaled")
        n_rescaled = len(e["failed"]["rescaled"])
        print(f"{e['config']:28s} failed {failed or 'none'}; rescaled: {n_rescaled} runs")
    stem = "damping_study_quick" if args.quick else "damping_study"
    out = pathlib.Path(args.out) if args.out else RESULTS / f"{stem}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"header": header, "argv": sys.argv[1:], "spreads": list(SPREADS)}
    out.write_text(json.dumps({"meta": meta, "summary": summary, "rows": rows}, indent=1))
    out.with_suffix(".md").write_text(table)
    print(f"wrote {out} and {out.with_suffix('.md')}")


if __name__ == "__main__":
    main()
