"""Many distinct models fitted in one process (issue 16, item 4).

    python benchmarks/many_models.py                    # 500 models, results/many_models.{json,txt}
    python benchmarks/many_models.py --models 50 --api least_squares

Each model is a new Python function (a notebook redefining its model, a service fitting
what its users send), so each needs its own compiled programs.  Every XLA CPU executable
holds its own memory mappings; before jaxlm kept its programs in a bounded cache
(``jaxlm._programs``) every model's programs stayed for the life of the process, and at
the kernel's limit (``vm.max_map_count``, 65 530 by default) compilation failed with
"LLVM compilation error: Cannot allocate memory": about 445 mappings per ``curve_fit``
model, so a process died after about 145 models.  This script fits ``--models`` distinct
exponential decays through ``curve_fit`` (or ``fit`` on a batch, or ``least_squares``),
checks each answer, and records the mapping count, the cache's size and the time as it
goes.  It is Linux-only (it reads ``/proc/self/maps``).
"""

from __future__ import annotations

import argparse
import json
import pathlib
import platform
import time

import jax
import jax.numpy as jnp
import numpy as np

import jaxlm
from jaxlm import _programs

RESULTS = pathlib.Path(__file__).parent / "results"


def _maps() -> int:
    with open("/proc/self/maps") as f:
        return sum(1 for _ in f)


def _model(k: int):
    # a new function object per k: nothing compiled for one model serves another
    return lambda x, a, b: a * jnp.exp(-b * x) + 0.001 * k


def _fit_one(api: str, k: int, x: np.ndarray) -> np.ndarray:
    f = _model(k)
    y = np.asarray(f(x, 2.0, 0.7))
    if api == "curve_fit":
        return np.asarray(jaxlm.curve_fit(f, x, y, p0=[1.0, 1.0])[0])
    if api == "fit":
        return np.asarray(jaxlm.fit(f, x, np.stack([y, 0.5 * y]), p0=[1.0, 1.0]).params[0])
    residual = lambda p, x, y: f(x, *p) - y  # noqa: E731
    return np.asarray(jaxlm.least_squares(residual, jnp.array([1.0, 1.0]), (x, y)).params)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", type=int, default=500)
    parser.add_argument("--api", choices=("curve_fit", "fit", "least_squares"), default="curve_fit")
    parser.add_argument("--every", type=int, default=25, help="record a row every this many models")
    args = parser.parse_args()

    x = np.linspace(0.0, 4.0, 24)
    limit = pathlib.Path("/proc/sys/vm/max_map_count").read_text().strip()
    header = (
        f"{platform.node()} · {platform.processor() or platform.machine()} · jax {jax.__version__} · "
        f"jaxlm {jaxlm.__version__} · api {args.api} · MAX_PROGRAMS {_programs.MAX_PROGRAMS} · "
        f"vm.max_map_count {limit}"
    )
    print(header, flush=True)
    rows, start, worst = [], time.perf_counter(), 0.0
    first_maps = _maps()
    for k in range(args.models):
        p = _fit_one(args.api, k, x)
        worst = max(worst, float(np.max(np.abs(p / np.array([2.0, 0.7]) - 1))))
        if (k + 1) % args.every == 0 or k + 1 == args.models:
            row = {
                "models": k + 1,
                "maps": _maps(),
                "programs": _programs.size(),
                "seconds": round(time.perf_counter() - start, 1),
                "worst_rel_error": worst,
            }
            rows.append(row)
            print(row, flush=True)
    peak = max(r["maps"] for r in rows)
    lines = [
        header,
        "",
        f"{args.models} distinct models fitted in one process through {args.api}; "
        f"memory mappings {first_maps} before the first, at most {peak} after any, "
        f"worst relative parameter error {worst:.1e}.",
        "",
        "| models | mappings | programs held | seconds |",
        "|---:|---:|---:|---:|",
        *(f"| {r['models']} | {r['maps']} | {r['programs']} | {r['seconds']} |" for r in rows),
    ]
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "many_models.txt").write_text("\n".join(lines) + "\n")
    (RESULTS / "many_models.json").write_text(json.dumps({"machine": header, "rows": rows}, indent=1))
    print("\n".join(lines[2:]))


if __name__ == "__main__":
    main()
