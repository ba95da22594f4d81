"""One huge fit: a single curve_fit of m = 10⁶, 10⁷, 10⁸ points, time and peak memory.

    python benchmarks/huge_fit.py                     # results/huge_fit.{json,txt}
    python benchmarks/huge_fit.py --sizes 1e6 1e7     # smaller sizes only
    python benchmarks/huge_fit.py --nlsq-python /path/to/py312-venv/bin/python

A float64 decay ``a·exp(−b·t) + c`` with noise, 3 parameters, the same data (same seed)
for every library, each library and size in a process of its own, so that each peak
resident memory (``ru_maxrss``) is that fit's alone — it includes the data themselves
(t and y: 16 bytes a point, 1.6 GB at 10⁸).  jaxlm runs ``curve_fit`` with default
options (a fit of ≥ 2²¹ points is evaluated in blocks of 2¹⁶ points: memory O(block·n)
beyond the data); scipy runs its ``curve_fit`` (MINPACK lmdif, a difference Jacobian of
m×n); NLSQ's ``curve_fit`` runs in the interpreter given by ``--nlsq-python`` (or the
``NLSQ_PYTHON`` environment variable; this one by default), which must have the ``nlsq``
package: it needs Python ≥ 3.12, brings its own JAX, and switches on x64 and its own
compilation cache on import, hence a process of its own too.  The table's header names
that interpreter's Python and JAX.  Times include compilation (a first call) and the
second call is timed too.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import subprocess
import sys

RESULTS = pathlib.Path(__file__).parent / "results"
TRUE = (2.0, 1.3, 0.1)
P0 = (1.0, 1.0, 0.0)

WORKER = r"""
import json, platform, resource, sys, time
lib, m = sys.argv[1], int(float(sys.argv[2]))
import numpy as np
rng = np.random.default_rng(0)
t = np.linspace(0.0, 5.0, m)
y = 2.0 * np.exp(-1.3 * t) + 0.1 + 0.01 * rng.standard_normal(m)
p0 = [1.0, 1.0, 0.0]
if lib == "jaxlm":
    import jax.numpy as jnp
    import jaxlm
    f = lambda t, a, b, c: a * jnp.exp(-b * t) + c
    fit = lambda: jaxlm.curve_fit(f, t, y, p0=p0)
elif lib == "nlsq":
    import jax.numpy as jnp
    import nlsq
    f = lambda t, a, b, c: a * jnp.exp(-b * t) + c
    fit = lambda: nlsq.curve_fit(f, t, y, p0=p0)
else:
    import scipy.optimize
    f = lambda t, a, b, c: a * np.exp(-b * t) + c
    fit = lambda: scipy.optimize.curve_fit(f, t, y, p0=p0)
t0 = time.perf_counter()
out = fit()
popt, pcov = (out.x, out.pcov) if lib == "nlsq" else out[:2]  # NLSQ: a result object
popt = np.asarray(popt)
first = time.perf_counter() - t0
t0 = time.perf_counter()
out = fit()
popt2 = np.asarray(out.x if lib == "nlsq" else out[0])
second = time.perf_counter() - t0
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
versions = {"python": platform.python_version()}
if lib != "scipy":
    import jax
    versions["jax"] = jax.__version__
print(json.dumps({"lib": lib, "m": m, "first_s": first, "second_s": second, "peak_bytes": peak,
                  "popt": popt.tolist(), "perr": np.sqrt(np.diag(np.asarray(pcov))).tolist(),
                  "versions": versions}))
"""


def measure(lib: str, m: int, timeout: float, python: str = sys.executable) -> dict:
    try:
        proc = subprocess.run(
            [python, "-c", WORKER, lib, str(m)], capture_output=True, text=True, timeout=timeout
        )
    except subprocess.TimeoutExpired:
        return {"lib": lib, "m": m, "error": f"over {timeout:.0f} s"}
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["?"])[-1]
        if lib == "nlsq" and "No module named 'nlsq'" in last:
            last = f"not installed in {python} (nlsq needs Python >= 3.12: see --nlsq-python)"
        return {"lib": lib, "m": m, "error": last[:200]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _cell(r):
    if "error" in r:
        return r["error"], "–"
    return f"{r['first_s']:.1f} s / {r['second_s']:.1f} s", f"{r['peak_bytes'] / 1e9:.2f} GB"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", nargs="+", type=float, default=[1e6, 1e7, 1e8])
    parser.add_argument("--libs", nargs="+", default=["jaxlm", "scipy", "nlsq"])
    parser.add_argument("--timeout", type=float, default=1800.0)
    parser.add_argument(
        "--nlsq-python",
        default=os.environ.get("NLSQ_PYTHON", sys.executable),
        help="the Python (≥ 3.12) with the nlsq package that runs NLSQ's curve_fit",
    )
    parser.add_argument("--out", default=str(RESULTS / "huge_fit.json"))
    args = parser.parse_args()
    rows = []
    for m in (int(s) for s in args.sizes):
        for lib in args.libs:
            r = measure(lib, m, args.timeout, args.nlsq_python if lib == "nlsq" else sys.executable)
            rows.append(r)
            print(lib, m, *_cell(r), r.get("popt", ""), flush=True)
    header = f"{platform.machine()}, {platform.python_version()}, float64 decay, 3 parameters, one fit"
    seen = {r["lib"]: r["versions"] for r in rows if "versions" in r}
    if seen:
        header += "; " + ", ".join(
            f"{lib}: Python {v['python']}" + (f", jax {v['jax']}" if "jax" in v else "")
            for lib, v in seen.items()
        )
    out = pathlib.Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"machine": header, "rows": rows}, indent=1))
    cols = "m | library | first / second call | peak memory (data included) | vs jaxlm (second call)"
    lines = [header, "", f"| {cols} | max rel. diff of popt vs jaxlm |"]
    lines.append("|---:|---|---:|---:|---:|---:|")
    for m in sorted({r["m"] for r in rows}):
        ref = next((r for r in rows if r["m"] == m and r["lib"] == "jaxlm" and "error" not in r), None)
        for r in (r for r in rows if r["m"] == m):
            ratio = diff = "–"
            if ref is not None and "error" not in r and r is not ref:
                ratio = f"{r['second_s'] / ref['second_s']:.1f}× the time"
                diff = f"{max(abs(a - b) / abs(b) for a, b in zip(r['popt'], ref['popt'], strict=True)):.1e}"
            lines.append(f"| {m:.0e} | {r['lib']} | " + " | ".join(_cell(r)) + f" | {ratio} | {diff} |")
    out.with_suffix(".txt").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
