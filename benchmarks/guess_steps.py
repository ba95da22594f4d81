"""How far each built-in model's guess starts from the answer: the steps of
``jaxlm.fit(name, x, y)`` (float64, no p0) on 200 noisy curves of each model's test case
(``tests/test_models.py``'s ``CASES``: its x, true parameters and noise), for one or more
source trees side by side, each in its own process.  A step costs the same from any
start, so fewer steps is a proportionally shorter fit; the final χ² sums show whether a
start reaches the same minima.

    git worktree add /tmp/jaxlm-before <commit>
    python benchmarks/guess_steps.py /tmp/jaxlm-before .

Results: ``benchmarks/results/guess_steps.{json,md}`` (or ``--out``).
"""

from __future__ import annotations

import argparse
import json
import pathlib
import subprocess
import sys

from compare_versions import add_trees, read_trees

RESULTS = pathlib.Path(__file__).parent / "results"
TESTS = pathlib.Path(__file__).resolve().parents[1] / "tests"

WORKER = r"""
import json, sys, warnings
tree, n = sys.argv[1], int(sys.argv[2])
sys.path.insert(0, tree)
sys.path.insert(1, TESTS)
import jax
jax.config.update("jax_enable_x64", True)
import jax.numpy as jnp
import numpy as np
import jaxlm
from jaxlm import models
from test_models import CASES
assert jaxlm.__file__.startswith(tree), (jaxlm.__file__, tree)
rng = np.random.default_rng(0)
out = {}
for name in sorted(CASES):
    x, true, noise = CASES[name]
    model = models.get(name)
    clean = np.asarray(model(jnp.asarray(x), *[jnp.asarray(v) for v in true]))
    ys = clean + noise * rng.standard_normal((n, clean.size))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = jaxlm.fit(model, x, ys)
    steps = np.asarray(res.n_steps)
    out[name] = {"median": float(np.median(steps)), "mean": float(steps.mean()), "max": int(steps.max()),
                 "success": float(np.mean(np.asarray(res.success))),
                 "chi2": float(np.sum(np.asarray(res.chi2)))}
print(json.dumps(out))
""".replace("TESTS", repr(str(TESTS)))


def measure(tree, n):
    proc = subprocess.run([sys.executable, "-c", WORKER, tree, str(n)], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{tree}: {proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def markdown(runs, labels):
    head = "| model | " + " | ".join(f"{lab}: steps (median / mean / max)" for lab in labels)
    lines = [head + " | final χ² sums | fits succeeded |", "|---|" + "---:|" * len(labels) + "---:|---:|"]
    for name in runs[labels[0]]:
        rows = [runs[lab][name] for lab in labels]
        cells = [f"{r['median']:.0f} / {r['mean']:.1f} / {r['max']}" for r in rows]
        chi2 = " / ".join(f"{r['chi2']:.6g}" for r in rows)
        success = " / ".join(f"{100 * r['success']:.1f} %" for r in rows)
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {chi2} | {success} |")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_trees(parser)
    parser.add_argument("--n", type=int, default=200, help="curves per model")
    parser.add_argument("--out", default=str(RESULTS / "guess_steps.json"))
    args = parser.parse_args()
    trees, labels = read_trees(parser, args.trees)
    runs = {lab: measure(t, args.n) for t, lab in zip(trees, labels, strict=True)}
    table = markdown(runs, labels)
    out = pathlib.Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    record = {"trees": dict(zip(labels, trees, strict=True)), "n": args.n, "runs": runs}
    out.write_text(json.dumps(record, indent=1))
    header = f"{args.n} noisy float64 curves per model, `jaxlm.fit(name, x, y)`"
    out.with_suffix(".md").write_text(f"{header}\n\n{table}\n")
    print(table)


if __name__ == "__main__":
    main()
