"""Default-option throughput of two (or more) versions of jaxlm, side by side, in one run.

What a change costs users: ``least_squares_batch`` and ``jaxlm.fit`` called with no option
(as in ``benchmarks/suite.py``'s "defaults" columns) on the suite's problems, timed for the
library in each given source tree (``git worktree add /tmp/old <commit>``).  Every
(tree, dtype) runs in its own process with that tree first on ``sys.path``; the trees take
turns for each problem, so a slow phase of the machine hits all of them alike, and each
row is the best of ``--rounds`` such turns.

    git worktree add /tmp/jaxlm-before <commit>
    python benchmarks/compare_versions.py /tmp/jaxlm-before .      # ~10 min on 2 cores

Results: ``benchmarks/results/compare_versions.{json,md}`` (ratios to the first tree).
"""

from __future__ import annotations

import argparse
import json
import pathlib
import subprocess
import sys

RESULTS = pathlib.Path(__file__).parent / "results"
HERE = pathlib.Path(__file__).resolve().parent

WORKER = r"""
import json, sys, time, warnings
tree, dtype, problem, n, repeats = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
sys.path.insert(0, tree)
sys.path.insert(1, HERE)
import jax
if dtype == "float64":
    jax.config.update("jax_enable_x64", True)
import numpy as np
import jaxlm
assert jaxlm.__file__.startswith(tree), (jaxlm.__file__, tree)
import suite
from _timing import timed
fun, x, y, p0 = suite.make(problem, n)
x, y, p0 = (a.astype(dtype) for a in (x, y, p0))
out = {}
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    for key, call in (("least_squares_batch", lambda: suite.run_jaxlm_defaults(fun, x, y, p0, None)),
                      ("fit", lambda: suite.run_fit(fun, x, y, p0, None))):
        (_, status), first, best = timed(call, repeats)
        out[key] = {"fits_per_s": n / best, "first_call_s": first,
                    "converged": float(np.mean((status >= 1) & (status <= 3)))}
print(json.dumps(out))
""".replace("HERE", repr(str(HERE)))


def measure(tree, dtype, problem, n, repeats):
    proc = subprocess.run(
        [sys.executable, "-c", WORKER, str(tree), dtype, problem, str(n), str(repeats)],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{tree} {dtype} {problem}: {proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_trees(parser)
    parser.add_argument("--problems", nargs="+", default=["gauss1d", "gpufit5", "decay"])
    parser.add_argument("--dtypes", nargs="+", default=["float32", "float64"])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--out", default=str(RESULTS / "compare_versions.json"))
    args = parser.parse_args()
    trees, labels = read_trees(parser, args.trees)
    rows = []
    for problem in args.problems:
        for dtype in args.dtypes:
            best = {}
            for _ in range(args.rounds):
                for t in trees:
                    m = measure(t, dtype, problem, args.n, args.repeats)
                    for key, v in m.items():
                        old = best.setdefault((t, key), v)
                        if v["fits_per_s"] > old["fits_per_s"]:
                            best[t, key] = v
            row = {"problem": problem, "dtype": dtype, "n": args.n, "trees": {}}
            for t, lab in zip(trees, labels, strict=True):
                row["trees"][lab] = {key: best[t, key] for key in ("least_squares_batch", "fit")}
            rows.append(row)
            print(_markdown([row], labels).splitlines()[-1], flush=True)
    out = pathlib.Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"trees": dict(zip(labels, trees, strict=True)), "rows": rows}, indent=1))
    table = _markdown(rows, labels)
    out.with_suffix(".md").write_text(table + "\n")
    print(table)


def add_trees(parser):
    """The positional ``trees`` argument of the scripts that compare source trees."""
    parser.add_argument(
        "trees", nargs="+", help="source trees holding a jaxlm/ package; the first is the base"
    )


def read_trees(parser, given):
    """``(trees, labels)``: the given trees as absolute paths, each checked to hold a
    jaxlm/ package, and their labels (short commit, "+changes" when jaxlm/ is edited)."""
    trees = [str(pathlib.Path(t).resolve()) for t in given]
    for t in trees:
        if not (pathlib.Path(t) / "jaxlm" / "__init__.py").exists():
            parser.error(f"{t} holds no jaxlm/ package")
    return trees, [_label(t) for t in trees]


def _label(tree):
    try:
        rev = subprocess.run(
            ["git", "-C", tree, "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", tree, "status", "--porcelain", "jaxlm"], capture_output=True, text=True
        )
        return rev + ("+changes" if dirty.stdout.strip() else "")
    except (OSError, subprocess.CalledProcessError):
        return pathlib.Path(tree).name


def _markdown(rows, labels):
    base = labels[0]
    head = "| problem | dtype | fits | " + " | ".join(
        f"{lab}: least_squares_batch | {lab}: fit" for lab in labels
    )
    lines = [head + " |", "|---|---|---:|" + "---:|" * (2 * len(labels))]
    for r in rows:
        cells = [r["problem"], r["dtype"], f"{r['n']:,}"]
        for lab in labels:
            for key in ("least_squares_batch", "fit"):
                v = r["trees"][lab][key]["fits_per_s"]
                ratio = v / r["trees"][base][key]["fits_per_s"]
                cells.append(f"{v / 1e3:.1f} k" + ("" if lab == base else f" ({ratio:.2f}×)"))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
