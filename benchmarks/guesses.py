"""What a built-in model's start costs: ``jaxlm.fit(name, x, y)`` (guess, solve, pcov)
and the model's guess alone, on 10⁴ curves of 100 points (float32, or ``--dtype
float64``), for one or more source trees side by side (each in its own process, taking
turns; best of ``--rounds``).

Curves: a decay (``exponential``), a sigmoid (``logistic``), a dose response
(``hill``), a saturating rate (``michaelis_menten``), a peak (``gaussian``) and an edge
(``step``), each with random true parameters and Gaussian noise.

    git worktree add /tmp/jaxlm-before <commit>
    python benchmarks/guesses.py /tmp/jaxlm-before .
    python benchmarks/guesses.py /tmp/jaxlm-before . --dtype float64 --out benchmarks/results/guesses_f64.json

Results: ``benchmarks/results/guesses.{json,md}`` (or ``--out``).
"""

from __future__ import annotations

import argparse
import json
import pathlib
import subprocess
import sys

from compare_versions import add_trees, read_trees

RESULTS = pathlib.Path(__file__).parent / "results"
MODELS = ["exponential", "logistic", "hill", "michaelis_menten", "gaussian", "step"]

WORKER = r"""
import json, sys, warnings
tree, n, repeats, dtype = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
sys.path.insert(0, tree)
sys.path.insert(1, HERE)
import jax
jax.config.update("jax_enable_x64", dtype == "float64")  # the guess alone, called by jit
import numpy as np
from scipy.special import erf
import jaxlm
from jaxlm.models import get
from _timing import timed
assert jaxlm.__file__.startswith(tree), (jaxlm.__file__, tree)
rng = np.random.default_rng(0)
x = np.linspace(0, 5, 100)
u = lambda lo, hi: rng.uniform(lo, hi, (n, 1))
clean = {
    "exponential": 2 * np.exp(-x / u(0.5, 2)) + 0.1,
    "logistic": 1 / (1 + np.exp(-3 * (x - u(2, 3)))) + 0.1,
    "hill": 0.1 + x**2 / (u(1, 2) ** 2 + x**2),
    "michaelis_menten": 2 * x / (u(0.5, 2) + x),
    "gaussian": 2 * np.exp(-0.5 * ((x - u(2, 3)) / 0.5) ** 2) + 0.1,
    "step": 0.5 * (1 + erf((x - u(2, 3)) / 0.4)) + 0.1,
}
xs = x.astype(dtype)
out = {}
for name in sys.argv[5:]:
    y = (clean[name] + 0.03 * rng.standard_normal((n, x.size))).astype(dtype)
    guess = jax.jit(get(name).guess)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res, fit_first, fit_best = timed(lambda: jaxlm.fit(name, xs, y), repeats)
    _, _, guess_best = timed(lambda: guess(xs, y), repeats)
    out[name] = {"fit_s": fit_best, "fit_first_s": fit_first, "guess_s": guess_best,
                 "success": float(np.mean(np.asarray(res.success)))}
print(json.dumps(out))
""".replace("HERE", repr(str(pathlib.Path(__file__).resolve().parent)))


def measure(tree, n, repeats, dtype, models):
    cmd = [sys.executable, "-c", WORKER, str(tree), str(n), str(repeats), dtype, *models]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{tree}: {proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def markdown(rows, labels):
    head = "| model | " + " | ".join(f"{lab}: guess | {lab}: fit" for lab in labels) + " | fits succeeded |"
    lines = [head, "|---|" + "---:|---:|" * len(labels) + "---:|"]
    for name, per_tree in rows.items():
        base = per_tree[labels[0]]
        cells = []
        for lab in labels:
            r = per_tree[lab]
            cells.append(f"{1e3 * r['guess_s']:.1f} ms{_ratio(base, r, 'guess_s', lab == labels[0])}")
            cells.append(f"{1e3 * r['fit_s']:.0f} ms{_ratio(base, r, 'fit_s', lab == labels[0])}")
        success = " / ".join(f"{100 * per_tree[lab]['success']:.1f} %" for lab in labels)
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {success} |")
    return "\n".join(lines)


def _ratio(base, r, key, is_base):
    return "" if is_base else f" ({base[key] / r[key]:.1f}×)"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_trees(parser)
    parser.add_argument("--models", nargs="+", default=MODELS, choices=MODELS)
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--out", default=str(RESULTS / "guesses.json"))
    args = parser.parse_args()
    trees, labels = read_trees(parser, args.trees)
    best: dict = {}
    for _ in range(args.rounds):
        for t, lab in zip(trees, labels, strict=True):
            for name, r in measure(t, args.n, args.repeats, args.dtype, args.models).items():
                old = best.setdefault(name, {}).setdefault(lab, r)
                for key in ("fit_s", "guess_s"):
                    old[key] = min(old[key], r[key])
    table = markdown(best, labels)
    out = pathlib.Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {"trees": dict(zip(labels, trees, strict=True)), "n": args.n, "dtype": args.dtype, "rows": best},
            indent=1,
        )
    )
    best_of = f"best of {args.rounds} rounds × {args.repeats} calls"
    header = f"{args.n:,} {args.dtype} curves of 100 points, {best_of}"
    out.with_suffix(".md").write_text(f"{header}\n\n{table}\n")
    print(table)


if __name__ == "__main__":
    main()
