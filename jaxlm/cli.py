"""``jaxlm`` command line.  Uses only the public API.

jaxlm demo [--n 100000] [--scipy 300] [--png jaxlm-demo.png] [--float64]
jaxlm fit CURVES --model NAME [--x FILE] [--sigma FILE] [--columns] [--x-column NAME] --out RESULTS.npz|.csv
jaxlm models
jaxlm --version
"""

from __future__ import annotations

import argparse
import os
import sys


def compile_cache_dir() -> str:
    """Where ``jaxlm fit`` keeps XLA compilations: ``$XDG_CACHE_HOME/jaxlm/xla``
    (``~/.cache/jaxlm/xla`` without it)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "jaxlm", "xla")


def _use_compile_cache() -> None:
    """Turn on JAX's persistent compilation cache for this process (the command's own
    process: the library never changes JAX's configuration).  Each ``jaxlm fit`` is a new
    process; without the cache every run would compile its ≈ 20 programs again (≈ 5 s
    for 10⁴ Gaussians; ≈ 1.4 s in all with the cache warm, ``benchmarks/first_call.py``).
    A cache the caller configured (``JAX_COMPILATION_CACHE_DIR``, which JAX reads into
    this same setting) is left as it is."""
    import jax

    if jax.config.jax_compilation_cache_dir:
        return
    jax.config.update("jax_compilation_cache_dir", compile_cache_dir())
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)  # phases take 0.1–1 s


_LAYOUTS = """\
layouts read:
  .npy              one array
  .npz              the array named as FILE.npz:KEY; else the only array in the file; else the
                    one named for its role (y/ydata/curves, x/xdata, sigma); else an error
  .csv, .txt        numbers separated by commas (.csv) or whitespace (.txt); a first row that
                    is not numbers is a header (its names serve --x-column)
  rows (default)    one curve per row: CURVES (N, m), --sigma (m,) or (N, m)
  --columns         one curve per column: CURVES (m, N), --sigma (m,) or (m, N)
  --x-column NAME   x is this column of CURVES, every other column a curve, e.g. the CSV
                    t,cell1,cell2,...  with  --x-column t

exit status: 0 done; 2 bad input (one line on stderr); 130 interrupted by Ctrl-C (the
curves finished so far are written, the others with NaN and status 0, RUNNING)
"""


def models_table() -> str:
    """The built-in models, one per paragraph: name, parameters in order, formula."""
    from jaxlm import models

    lines = []
    for name in models.names():
        model = models.get(name)
        x = "points (2, m)" if model.x_dims == 2 else "x (m,)"
        lines.append(f"{name}({x.split()[0]}, {', '.join(model.param_names)})  on {x}")
        lines.append(f"    {model.formula}")
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    from jaxlm import __version__

    parser = argparse.ArgumentParser(prog="jaxlm", description="Batched Levenberg–Marquardt in JAX.")
    parser.add_argument("--version", action="version", version=f"jaxlm {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("models", help="list the built-in models: names, parameters, formulas")
    demo = sub.add_parser("demo", help="fit many noisy 1-D Gaussians in one call, compare with scipy")
    demo.add_argument("--n", type=int, default=100_000, help="number of curves (default 100000)")
    demo.add_argument("--scipy", type=int, default=300, help="fits to repeat with scipy (default 300)")
    demo.add_argument("--png", default="jaxlm-demo.png", help="figure path ('' for none)")
    demo.add_argument("--float64", action="store_true", help="run in float64 (enables jax_enable_x64)")
    _fit_parser(sub)
    return parser


def _fit_parser(sub) -> None:
    fit = sub.add_parser(
        "fit",
        help="fit every row of a .npy/.npz/.csv file with a built-in model",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Fit every curve of CURVES with a built-in model (`jaxlm models` lists them); write "
        "params, perr, chi2, dof,\nstatus (code and name) and success per curve, and pcov in an .npz.\n"
        "Non-finite points are ignored (nan_policy='omit').",
        epilog=_LAYOUTS,
    )
    fit.add_argument("curves", metavar="CURVES", help="the curves: .npy, .npz[:KEY] or .csv (see layouts)")
    fit.add_argument("--model", required=True, help="built-in model name (see jaxlm.models.names())")
    fit.add_argument(
        "--x", help="x: (m,), (k, m), or one per curve (N, m); default 0..m-1 (a square grid for 2-D)"
    )
    fit.add_argument("--sigma", help="standard deviations: (m,) shared or one per curve (N, m)")
    fit.add_argument("--columns", action="store_true", help="CURVES holds one curve per column, not per row")
    fit.add_argument(
        "--x-column",
        dest="x_column",
        metavar="NAME",
        help="take x from this column of CURVES (a header name or 0-based index); implies --columns",
    )
    fit.add_argument("--out", required=True, help="results file, .npz or .csv (written whole or not at all)")
    fit.add_argument("--estimator", default="lse", choices=("lse", "poisson"))
    fit.add_argument("--loss", default="linear", choices=("linear", "soft_l1", "huber", "cauchy", "arctan"))
    fit.add_argument("--max-steps", type=int, default=None, dest="max_steps")
    fit.add_argument("--chunk", type=int, default=10_000, help="curves per call (default 10000)")
    fit.add_argument("--precision", type=int, choices=(32, 64), default=64, help="float bits (default 64)")
    fit.add_argument(
        "--no-compile-cache",
        action="store_false",
        dest="compile_cache",
        help="do not keep compiled programs in ~/.cache/jaxlm/xla for the next run",
    )
    bar = fit.add_mutually_exclusive_group()
    bar.add_argument("--progress", action="store_true", default=None, help="always show a progress bar")
    bar.add_argument("--no-progress", action="store_false", dest="progress", help="never show one")


def main(argv=None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)

    if args.command == "fit":
        if args.compile_cache:
            _use_compile_cache()
        from jaxlm import _cli_fit

        try:
            return _cli_fit.run(args)
        except _cli_fit.InputError as err:
            print(f"jaxlm fit: error: {err}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:  # before any curve was fitted (reading, compiling)
            print("jaxlm fit: interrupted before any curve was fitted; nothing written", file=sys.stderr)
            return 130

    if args.command == "models":
        print(models_table())
        return 0

    if args.command == "demo":
        if args.n < 1 or args.scipy < 1:
            parser.error("--n and --scipy must be positive")
        if args.float64:
            import jax

            jax.config.update("jax_enable_x64", True)  # the user's explicit choice
        from jaxlm import _demo

        _demo.run(n=args.n, n_scipy=min(args.scipy, args.n), png=args.png or None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
